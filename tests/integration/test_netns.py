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

import ctypes
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.hubproc import Proc, make_keys, start_hub
from tests.relayproc import UNIT
from tests.wire import NativePeer

pytestmark = pytest.mark.timeout(120)

CLONE_NEWNET = 0x40000000
SUBNET = "10.231.0"
BUS_PORT = 7070
T = TypeVar("T")


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def netns_unavailable() -> str:
    """Why namespaces cannot be made here, or "" (tries a real `ip netns add`)."""
    probe = f"crprobe{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return f"cannot create network namespaces here ({exc}); run as root on Linux"
    ip("netns", "del", probe)
    return ""


class Lab:
    """The namespaces, veths and bridge of one test; `close()` deletes all of them."""

    def __init__(self) -> None:
        self.tag = f"cr{os.getpid()}"
        self.made: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.tag}{host}"

    def _add(self, host: str) -> str:
        name = self.ns(host)
        if Path(f"/run/netns/{name}").exists():  # left by a crashed run with our pid
            ip("netns", "del", name)
        ip("netns", "add", name)
        self.made.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def build(self, hosts: list[str]) -> None:
        switch = self._add("s")
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        for i, host in enumerate(hosts, start=1):
            name = self._add(host)
            port = f"p{host}"
            ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", name)
            ip("-n", switch, "link", "set", port, "master", "br0", "up")
            ip("-n", name, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")

    @staticmethod
    def addr(i: int) -> str:
        return f"{SUBNET}.{i}"

    def cable(self, host: str, up: bool) -> None:
        """Plug or pull `host`'s cable at the switch."""
        ip("-n", self.ns("s"), "link", "set", f"p{host}", "up" if up else "down")

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host)]

    def inside(self, host: str, fn: Callable[[], T]) -> T:
        """Run `fn` in a thread that joined `host`'s namespace (sockets stay there)."""
        result: list[T] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/run/netns/{self.ns(host)}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                finally:
                    os.close(fd)
                result.append(fn())
            except BaseException as exc:  # handed to the caller below
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(30)
        if errors:
            raise errors[0]
        return result[0]

    def close(self) -> None:
        for name in reversed(self.made):
            try:
                ip("netns", "del", name)
            except (OSError, RuntimeError):
                pass
        self.made.clear()


@pytest.fixture
def lab() -> Iterator[Lab]:
    why = netns_unavailable()
    if why:
        pytest.skip(f"NETWORK NAMESPACE TEST SKIPPED: {why}")
    lab = Lab()
    try:
        lab.build(["h", "a", "b"])
    except BaseException:
        lab.close()
        raise
    yield lab
    lab.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in reversed(started):
        proc.stop()


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
