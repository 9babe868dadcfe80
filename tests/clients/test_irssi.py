"""irssi, a real IRC client, in a tmux pane against a real relay.

The test types into irssi with `tmux send-keys` and reads its screen with
`tmux capture-pane`, next to a native client in the same room. `make test`
installs both with tests/ensure_apt.sh; where it cannot, the test skips and
says why.
tmux runs on a private socket, so the test only ever stops its own server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.relayproc import UNIT, RelayProcess
from tests.wire import NativePeer

IRSSI = shutil.which("irssi")
TMUX = shutil.which("tmux")
SKIP_FILE = Path(__file__).resolve().parents[2] / ".venv" / "irssi-unavailable"
pytestmark = pytest.mark.skipif(
    IRSSI is None or TMUX is None,
    reason=f"irssi test needs irssi and tmux (missing: "
    f"{', '.join(n for n, p in (('irssi', IRSSI), ('tmux', TMUX)) if p is None)}"
    f"{'; ' + SKIP_FILE.read_text().strip() if SKIP_FILE.exists() else ''}); "
    "apt-get install -y irssi tmux",
)


class Pane:
    """One irssi in a detached tmux session on a private server socket."""

    def __init__(self, home: Path, port: int, nick: str) -> None:
        assert IRSSI is not None and TMUX is not None
        self.socket = f"chat-relay-test-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "TERM": "xterm-256color", "LANG": "C.UTF-8",
                    "LC_ALL": "C.UTF-8", "HOME": str(home)}
        home.mkdir(parents=True, exist_ok=True)
        # No servers, networks or scripts of the user's: only the relay. irssi's
        # flood control (a command per 2.2 s after a burst) would pace the test.
        (home / "config").write_text(
            'settings = { core = { real_name = "test"; };\n'
            '  "irc/core" = { cmd_queue_speed = "0msec"; cmds_max_at_once = "100"; }; };\n'
        )
        command = (f"{IRSSI} --home={home} --connect=127.0.0.1 --port={port} "
                   f"--nick={nick}")
        self.tmux("new-session", "-d", "-s", "chat", "-x", "132", "-y", "40", command)

    def tmux(self, *args: str) -> str:
        assert TMUX is not None
        done = subprocess.run([TMUX, "-L", self.socket, "-f", "/dev/null", *args],
                              env=self.env, capture_output=True, text=True,
                              timeout=10 * UNIT)
        if done.returncode != 0:
            raise AssertionError(f"tmux {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-t", "chat", "-l", line)
        self.tmux("send-keys", "-t", "chat", "Enter")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "chat")

    def wait_for(self, pred: Callable[[str], bool], what: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout * UNIT
        while True:
            text = self.screen()
            if pred(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"irssi never showed {what}; screen:\n{text}")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self.tmux("kill-server")  # our private server only (-L)
        except (AssertionError, subprocess.TimeoutExpired):
            pass


@pytest.fixture
def pane(relay: RelayProcess, tmp_path: Path) -> Iterator[Pane]:
    p = Pane(tmp_path / "irssi", relay.port, "irssi_user")
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
