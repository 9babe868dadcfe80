"""irssi, a real IRC client, in a tmux pane against a real relay.

The test types into irssi with `tmux send-keys` and reads its screen with
`tmux capture-pane`, next to a native client in the same room. `make test`
installs both with tests/ensure_apt.sh; where it cannot, the test skips and
says why.
tmux runs on a private socket, so the test only ever stops its own server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.relayproc import RelayProcess
from tests.tmuxpane import IRSSI, TMUX, Pane, irssi_pane, why_missing
from tests.wire import NativePeer

pytestmark = pytest.mark.skipif(
    IRSSI is None or TMUX is None,
    reason=f"irssi test {why_missing('irssi', IRSSI)}; apt-get install -y irssi tmux",
)


@pytest.fixture
def pane(relay: RelayProcess, tmp_path: Path) -> Iterator[Pane]:
    p = irssi_pane(tmp_path / "irssi", relay.port, "irssi_user")
    yield p
    p.close()


def test_irssi_chats_with_a_native_client(relay: RelayProcess, pane: Pane) -> None:
    nat = NativePeer.joined(relay.port, "nat", ["lobby"])
    try:
        # Registration done when irssi shows the relay's welcome numeric.
        pane.wait_for(lambda s: "Welcome to the chat-relay IRC gateway" in s, "the welcome")
        pane.type("/join #lobby")
        nat.expect(lambda b: b.get("t") == "presence" and b["nick"] == "irssi_user"
                   and b["event"] == "join", timeout=10)
        pane.wait_for(lambda s: "nat" in s and "irssi_user" in s and "#lobby" in s,
                      "the channel with its members")

        nat.send({"t": "say", "room": "lobby", "text": "hello, irssi"})
        pane.wait_for(lambda s: "nat" in s and "hello, irssi" in s, "nat's message")

        pane.type("hi from a real IRC client")
        got = nat.expect(lambda b: b.get("t") == "msg" and b["from"] == "irssi_user")
        assert got["text"] == "hi from a real IRC client"

        pane.type("/msg nat psst")
        whisper = nat.expect(lambda b: b.get("t") == "whisper" and b["from"] == "irssi_user")
        assert (whisper["to"], whisper["text"]) == ("nat", "psst")
        nat.send({"t": "whisper", "to": "irssi_user", "text": "psst back"})
        pane.type("/window goto nat")  # irssi opens a query window for it
        pane.wait_for(lambda s: "psst back" in s, "the whisper in its query window")

        pane.type("/quit leaving")
        nat.expect(lambda b: b.get("t") == "presence" and b["nick"] == "irssi_user"
                   and b["event"] == "part", timeout=10)
    finally:
        nat.close()
