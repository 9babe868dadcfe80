"""Three "hosts" in network namespaces: a hub, and relays that reach it over a switch.

    ns h (10.231.0.1): chat-relay hub  + relay C (its bus goes over eth0 too)
    ns a (10.231.0.2): relay A         ns b (10.231.0.3): relay B
    ns s: a bridge; each host's eth0 is a veth whose other end sits on it

Pulling A's cable (its port on the switch goes down) must cost the others
nothing but the presence of A's users; when the cable is back, A's users chat
again. Clients live on their relay's host: the test creates their sockets in
a thread that joined that namespace (setns is per thread).

Needs root and `ip netns`; skipped, loudly, where a namespace cannot be made.
Every namespace made here carries the test process's pid in its name and is
deleted by the fixture's finalizer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubproc import Proc, make_keys, start_hub
from tests.netlab import Lab, lab_of, stopped_after
from tests.relayproc import UNIT
from tests.wire import NativePeer

pytestmark = pytest.mark.timeout(120)

BUS_PORT = 7070


@pytest.fixture
def lab() -> Iterator[Lab]:
    with lab_of(["h", "a", "b"]) as lab:
        yield lab


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    with stopped_after() as started:
        yield started


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def test_relay_host_cut_off_and_back(lab: Lab, procs: list[Proc], tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    bus = f"tcp://{lab.addr(1)}:{BUS_PORT}"
    procs.append(start_hub(bus, keys, prefix=lab.exec_prefix("h")))
    ports: dict[str, int] = {}
    for host in ("h", "a", "b"):
        relay = Proc(["start", "--host", "127.0.0.1", "--port", "0", "--workers", "1",
                      "--hub", bus, "--keys", str(keys), "--rate-limit", "0",
                      "--log-level", "WARNING"], prefix=lab.exec_prefix(host))
        procs.append(relay)
        ports[host] = relay.port(30)
    ann = lab.inside("a", lambda: NativePeer.joined(ports["a"], "ann"))
    bob = lab.inside("b", lambda: NativePeer.joined(ports["b"], "bob"))
    cat = lab.inside("h", lambda: NativePeer.joined(ports["h"], "cat"))
    everyone = [ann, bob, cat]
    for peer in everyone:  # all three hosts in one room, one order
        peer.send({"t": "say", "room": "lobby", "text": f"hi from {peer.local_port}"})
    streams = [[(m["seq"], m["text"]) for m in p.msgs("lobby", 3, timeout=10)]
               for p in everyone]
    assert streams[0] == streams[1] == streams[2]
    assert [s for s, _ in streams[0]] == [1, 2, 3]

    # Bob (host b) and Cat (host h) keep talking, and time each message, while
    # ann's host loses its cable and gets it back.
    latencies: dict[str, list[float]] = {"before": [], "cut": [], "after": []}
    seqs: dict[int, list[int]] = {id(bob): [], id(cat): []}
    counter = iter(range(1_000_000))

    def exchange(phase: str) -> None:
        i = next(counter)
        sender = (bob, cat)[i % 2]
        text = f"t{i}"
        sent = time.monotonic()
        sender.send({"t": "say", "room": "lobby", "text": text})
        for peer in (bob, cat):
            msg = peer.expect(lambda m, x=text: m.get("t") == "msg" and m["text"] == x,
                              timeout=5)
            seqs[id(peer)].append(msg["seq"])
        latencies[phase].append(time.monotonic() - sent)

    for _ in range(50):
        exchange("before")
    lab.cable("a", up=False)
    cut_at = time.monotonic()

    def ann_left(peer: NativePeer) -> bool:
        return any(isinstance(b, dict) and b.get("t") == "presence" and b["nick"] == "ann"
                   and b["event"] == "part" for b in peer.inbox)

    # Stay cut until both others saw ann leave and the bus heartbeats timed out.
    deadline = cut_at + 30 * UNIT
    while not (ann_left(bob) and ann_left(cat) and time.monotonic() > cut_at + 7):
        assert time.monotonic() < deadline, "ann's departure never reached bob and cat"
        exchange("cut")
        time.sleep(0.01)  # ~100 messages a second: traffic, not a flood
    lab.cable("a", up=True)

    # Ann's host comes back: her messages reach the others again (bounded retries:
    # the relay reconnects, the hub asks it to resync, then her says go through).
    deadline = time.monotonic() + 30 * UNIT
    back = False
    k = 0
    while not back:
        assert time.monotonic() < deadline, "ann's host never came back"
        ann.send({"t": "say", "room": "lobby", "text": f"back{k}"})
        k += 1
        exchange("after")
        try:
            bob.expect(lambda m: m.get("t") == "msg" and m["text"].startswith("back"),
                       timeout=0.3)
            back = True
        except AssertionError:
            pass
    bob.send({"t": "say", "room": "lobby", "text": "welcome back"})
    ann.expect(lambda m: m.get("t") == "msg" and m["text"] == "welcome back", timeout=10)
    for _ in range(30):
        exchange("after")

    # Bob and Cat saw the same messages in the same seq order, and never an error.
    for peer in (bob, cat):
        got = seqs[id(peer)]
        assert got == sorted(got)
        rest = [b for b in peer.drain() if isinstance(b, dict)]
        assert not [b for b in rest if b.get("t") == "error"], rest
    assert seqs[id(bob)] == seqs[id(cat)]
    assert len(latencies["cut"]) >= 50
    for phase, samples in latencies.items():
        assert p99(samples) < 0.25 * UNIT, (phase, p99(samples), max(samples))
