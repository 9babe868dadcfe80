"""One hub, two relays, a CURVE bus on loopback TCP: the promises of one relay hold.

The relays run exactly as they would on two hosts (`chat-relay start --hub
tcp://... --keys DIR`); only the addresses are loopback. Keys are generated
per test into tmp_path.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.hubproc import Proc, free_port, make_keys, start_hub
from tests.relayproc import ROOT, RelayProcess
from tests.wire import NativePeer, assert_one_order

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return make_keys(tmp_path / "keys")


@pytest.fixture
def hub(keys: Path) -> Iterator[str]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = start_hub(endpoint, keys)
    yield endpoint
    assert proc.stop() == 0, proc.text()


RelayOn = Callable[..., RelayProcess]


@pytest.fixture
def relay_on(keys: Path) -> Iterator[RelayOn]:
    """Start a relay (1 worker) that uses the given hub, as on another host."""
    started: list[RelayProcess] = []

    def make(hub: str, key_dir: Path | None = None, *extra: str) -> RelayProcess:
        relay = RelayProcess(workers=1, args=["--hub", hub, "--keys", str(key_dir or keys),
                                              "--rate-limit", "0", *extra])
        started.append(relay)
        return relay.start()

    yield make
    for relay in started:
        relay.stop()


def test_one_room_one_order_across_relays(hub: str, relay_on: RelayOn) -> None:
    a, b = relay_on(hub), relay_on(hub)
    peers = [NativePeer.joined(r.port, f"{name}{i}")
             for r, name in ((a, "a"), (b, "b")) for i in range(3)]
    senders = [peers[0], peers[3]]  # one on each relay
    per_sender = 50

    assert_one_order(peers, senders, per_sender)


def test_nick_unique_and_presence_across_relays(hub: str, relay_on: RelayOn) -> None:
    a, b = relay_on(hub), relay_on(hub)
    carol = NativePeer.joined(a.port, "Carol")
    other = NativePeer(b.port)
    other.send({"t": "hello", "v": 1, "nick": "cAROL"})
    assert other.expect_error("nick_taken")["ref"] == "hello"
    other.send({"t": "hello", "v": 1, "nick": "dave", "rooms": ["lobby"]})
    other.expect(lambda m: m.get("t") == "welcome")
    joined = other.expect(lambda m: m.get("t") == "joined" and m["room"] == "lobby")
    assert sorted(joined["members"]) == ["Carol", "dave"]
    carol.expect(lambda m: m.get("t") == "presence" and m["nick"] == "dave"
                 and m["event"] == "join")
    # A whisper crosses relays too.
    carol.send({"t": "whisper", "to": "DAVE", "text": "psst"})
    got = other.expect(lambda m: m.get("t") == "whisper")
    assert got["from"] == "Carol" and got["text"] == "psst"
    # Once Carol leaves (on relay a) her nick is free on relay b.
    carol.send({"t": "bye"})
    carol.wait_closed()
    other.expect(lambda m: m.get("t") == "presence" and m["nick"] == "Carol"
                 and m["event"] == "part")
    NativePeer.joined(b.port, "carol").close()


def test_history_and_resume_across_relays(hub: str, relay_on: RelayOn) -> None:
    a, b = relay_on(hub), relay_on(hub)
    writer = NativePeer.joined(a.port, "writer", ["dev"])
    for i in range(10):
        writer.send({"t": "say", "room": "dev", "text": f"m{i}"})
    assert [m["seq"] for m in writer.msgs("dev", 10)] == list(range(1, 11))
    # A client on the other relay resumes after seq 3: it gets 4..10, then live traffic.
    late = NativePeer.joined(b.port, "late", [], resume={"dev": 3})
    replay = late.msgs("dev", 7)
    assert [(m["seq"], m["text"]) for m in replay] == [(i + 1, f"m{i}") for i in range(3, 10)]
    writer.send({"t": "say", "room": "dev", "text": "live"})
    assert late.msgs("dev", 1)[0]["seq"] == 11
    late.send({"t": "history", "room": "dev", "after": 8})
    hist = late.expect(lambda m: m.get("t") == "history")
    assert [m["seq"] for m in hist["messages"]] == [9, 10, 11] and not hist["more"]


def test_relay_with_wrong_keys_gets_nothing_and_says_why(hub: str, keys: Path,
                                                         tmp_path: Path,
                                                         relay_on: RelayOn) -> None:
    good = relay_on(hub)
    alice = NativePeer.joined(good.port, "alice")
    # Another key set entirely: its hub.key is not our hub's key.
    foreign = make_keys(tmp_path / "foreign")
    # The right hub.key but a node pair the hub does not know.
    stranger = tmp_path / "stranger"
    stranger.mkdir(mode=0o700)
    shutil.copy(keys / "hub.key", stranger / "hub.key")
    for name in ("node.key", "node.key_secret"):
        shutil.copy(foreign / name, stranger / name)
    cases = [(foreign, r"hub.key is not that hub's public key"),
             (stranger, r"refused this node's key")]
    for key_dir, why in cases:
        bad = Proc(["start", "--port", "0", "--workers", "1", "--hub", hub,
                    "--keys", str(key_dir), "--log-level", "INFO"])
        try:
            bad.wait_line(why)
            bad.wait_line(r"waiting for the hub")
            assert "listening on" not in bad.text()  # never took a client
        finally:
            bad.stop()
    # The good relay never noticed.
    alice.send({"t": "say", "room": "lobby", "text": "still here"})
    assert alice.msgs("lobby", 1)[0]["text"] == "still here"


def run_relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=30)


def test_tcp_bus_without_keys_refuses_to_start(tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    for args in (["hub", "--bind", endpoint], ["start", "--port", "0", "--hub", endpoint]):
        done = run_relay(*args)
        assert done.returncode == 2, done
        assert "--keys" in done.stderr and "encrypted" in done.stderr
    done = run_relay("hub", "--bind", endpoint, "--keys", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_keys_generate_modes_and_no_overwrite(tmp_path: Path) -> None:
    key_dir = make_keys(tmp_path / "k")
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    for name in ("hub", "node"):
        assert stat.S_IMODE((key_dir / f"{name}.key_secret").stat().st_mode) == 0o600
        assert (key_dir / f"{name}.key").read_text().count("public-key") == 1
    before = (key_dir / "hub.key_secret").read_bytes()
    done = run_relay("keys", "generate", str(key_dir))
    assert done.returncode != 0 and "already exists" in done.stderr
    assert (key_dir / "hub.key_secret").read_bytes() == before


def test_hub_and_relay_log_json(keys: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    hub = start_hub(endpoint, keys, "--log-format", "json")
    try:
        line = hub.wait_line(r'^\{.*"logger": "chat_relay.hub"').string
        assert json.loads(line)["level"] == "info"
        relay = Proc(["start", "--port", "0", "--workers", "1", "--hub", endpoint,
                      "--keys", str(keys), "--log-format", "json", "--log-level", "INFO"])
        try:
            relay.port()
            line = relay.wait_line(r'^\{.*"logger": "chat_relay.curve"').string
            assert "succeeded" in json.loads(line)["msg"]
        finally:
            relay.stop()
    finally:
        hub.stop()


def test_ipc_bus_unchanged_needs_no_keys() -> None:
    with RelayProcess(workers=1) as relay:
        NativePeer.joined(relay.port, "solo").close()
