"""The Redis engine across "hosts" in network namespaces, over a switch.

    ns r (10.231.0.1): redis-server
    ns a (10.231.0.2), b (.3), c (.4): `chat-relay start --engine redis://10.231.0.1:PORT`
    ns s: a bridge; each host's eth0 is a veth whose other end sits on it

Clients live on their relay's host (their sockets made in a thread that
joined that namespace). Three relay hosts share rooms in one order per room
with nicks unique across hosts, and history and resume work wherever a
client comes back; a relay host killed with SIGKILL: its users leave
everyone else's presence within 30 s (its lease lapses, another host cleans
up) while the other hosts keep chatting. Real processes, stopped by PID.

Needs root and `ip netns` (skipped, loudly, where a namespace cannot be made)
and redis-server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.hubproc import Proc
from tests.netlab import Lab, lab_of, stopped_after
from tests.redisproc import REDIS
from tests.relayproc import UNIT
from tests.wire import NativePeer

redis = pytest.importorskip("redis", reason="the redis client (pip install redis) is missing")
pytestmark = [pytest.mark.timeout(180), pytest.mark.skipif(
    REDIS is None, reason="redis-server missing: sh tests/ensure_apt.sh redis redis-server "
    "redis-server (make test does it)")]

REDIS_PORT = 6390
PRESENCE_DEADLINE = 30.0  # the bound on a dead host's users leaving presence
HOSTS = ("a", "b", "c")


@pytest.fixture
def lab() -> Iterator[Lab]:
    with lab_of(["r", *HOSTS]) as lab:
        yield lab


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    with stopped_after() as started:
        yield started


class NsRedis:
    """redis-server inside namespace `r` (`ip netns exec` execs it: our PID is its PID)."""

    def __init__(self, lab: Lab) -> None:
        assert REDIS is not None
        self.lab = lab
        self.url = f"redis://{lab.addr(1)}:{REDIS_PORT}/0"
        self.proc = subprocess.Popen(
            [*lab.exec_prefix("r"), REDIS, "--port", str(REDIS_PORT), "--bind", lab.addr(1),
             "--protected-mode", "no", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL)

    def ready(self, timeout: float = 10.0) -> None:
        """PING from host a's namespace until it answers (over the switch)."""
        def ping() -> None:
            client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
            deadline = time.monotonic() + timeout * UNIT
            try:
                while True:
                    try:
                        client.ping()
                        return
                    except (redis.ConnectionError, redis.TimeoutError):
                        if self.proc.poll() is not None or time.monotonic() > deadline:
                            raise AssertionError("redis-server in its namespace did not "
                                                 "answer") from None
                        time.sleep(0.05)
            finally:
                client.close()

        self.lab.inside("a", ping)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def store(lab: Lab) -> Iterator[NsRedis]:
    srv = NsRedis(lab)
    try:
        srv.ready()
        yield srv
    finally:
        srv.stop()


def _relays(lab: Lab, url: str, procs: list[Proc]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for host in HOSTS:
        relay = Proc(["start", "--host", "127.0.0.1", "--port", "0", "--workers", "1",
                      "--engine", url, "--no-mdns", "--rate-limit", "0",
                      "--log-level", "WARNING"], prefix=lab.exec_prefix(host))
        procs.append(relay)
        ports[host] = relay.port(30)
    return ports


def _peer(lab: Lab, host: str, port: int, nick: str, **hello: Any) -> NativePeer:
    return lab.inside(host, lambda: NativePeer.joined(port, nick, **hello))


def _say(peer: NativePeer, text: str, label: int) -> dict[str, Any]:
    peer.send({"t": "say", "room": "lobby", "text": text, "id": label})
    return peer.expect(lambda b: b.get("id") == label and b.get("t") in ("msg", "error"),
                       timeout=10)


def _stream(peer: NativePeer, count: int) -> list[tuple[int, str]]:
    return [(m["seq"], m["text"]) for m in peer.msgs("lobby", count, timeout=15)]


def test_three_hosts_one_order_unique_nicks_history_and_resume(
        lab: Lab, store: NsRedis, procs: list[Proc]) -> None:
    ports = _relays(lab, store.url, procs)
    peers = {h: _peer(lab, h, ports[h], f"user_{h}") for h in HOSTS}
    for h in HOSTS:  # every host lists every host's users
        peers[h].send({"t": "who", "room": "lobby"})
        listed = peers[h].expect(lambda b: b.get("t") == "members", timeout=10)
        assert sorted(listed["members"]) == [f"user_{x}" for x in HOSTS]

    # One order per room: every host's users say things at once; all see one stream.
    for i in range(5):
        for h in HOSTS:
            peers[h].send({"t": "say", "room": "lobby", "text": f"{h}{i}"})
    streams = [_stream(peers[h], 15) for h in HOSTS]
    assert streams[0] == streams[1] == streams[2]
    assert [s for s, _ in streams[0]] == list(range(1, 16))
    for h in HOSTS:  # each sender's own msgs in the order it sent them
        assert [t for _, t in streams[0] if t[0] == h] == [f"{h}{i}" for i in range(5)]

    # Nicks are unique across hosts (case-insensitively): host c refuses host a's.
    def taken() -> dict[str, Any]:
        peer = NativePeer(ports["c"])
        peer.send({"t": "hello", "v": 1, "nick": "USER_A", "rooms": ["lobby"]})
        reply = peer.expect(lambda b: b.get("t") in ("welcome", "error"), timeout=10)
        peer.close()
        return reply
    reply = lab.inside("c", taken)
    assert reply["t"] == "error" and reply["code"] == "nick_taken", reply

    # History and resume across hosts: user_a leaves after seq 15; two more msgs;
    # she comes back on host b resuming from 15 and gets exactly what she missed.
    peers["a"].close()
    assert _say(peers["c"], "missed1", 1)["seq"] == 16
    assert _say(peers["b"], "missed2", 2)["seq"] == 17
    back = _peer(lab, "b", ports["b"], "user_a2", rooms=[], resume={"lobby": 15})
    assert _stream(back, 2) == [(16, "missed1"), (17, "missed2")]
    back.send({"t": "history", "room": "lobby", "after": 0, "limit": 3})
    page = back.expect(lambda b: b.get("t") == "history" and not b.get("replay"), timeout=10)
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3] and page["more"]
    late = _peer(lab, "c", ports["c"], "late")  # a fresh join replays the newest msgs
    replay = late.expect(lambda b: b.get("t") == "history" and b.get("replay"), timeout=10)
    assert replay["messages"][-1]["text"] == "missed2"
    for peer in (back, late, peers["b"], peers["c"]):
        peer.close()


def _kill9_host(proc: Proc) -> None:
    """SIGKILL a relay host's supervisor, hub and workers by PID, all at once (no
    clean stop of any of them: the other hosts find out from its lease alone)."""
    pids = [proc.proc.pid, *(c.pid for c in psutil.Process(proc.proc.pid).children(
        recursive=True))]
    assert len(pids) > 2, "the relay host has no hub and workers to lose"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5 * UNIT
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in pids if psutil.pid_exists(pid)
                 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"{alive} survived SIGKILL"


def test_kill9_of_a_relay_host_parts_its_users_others_keep_chatting(
        lab: Lab, store: NsRedis, procs: list[Proc]) -> None:
    ports = _relays(lab, store.url, procs)
    ann = _peer(lab, "a", ports["a"], "ann", rooms=["lobby", "side"])
    bob = _peer(lab, "b", ports["b"], "bob", rooms=["lobby", "side"])
    cat = _peer(lab, "c", ports["c"], "cat")
    cat.send({"t": "who", "room": "lobby"})
    assert sorted(cat.expect(lambda b: b.get("t") == "members")["members"]) == \
        ["ann", "bob", "cat"]
    # Each host's subscription to lobby is live once its user saw the others' msgs.
    said = {peer: f"hi {peer.nick}" for peer in (ann, bob, cat)}
    for label, (peer, text) in enumerate(said.items(), start=1):
        assert _say(peer, text, label)["t"] == "msg"
    for peer, text in said.items():
        got = {m["text"] for m in peer.msgs("lobby", 2, timeout=15)}
        assert got == set(said.values()) - {text}
    _kill9_host(procs[0])  # host a: every process at once, as when the machine dies
    killed = time.monotonic()
    ann.wait_closed(10)

    def ann_left(peer: NativePeer, room: str) -> bool:
        return any(isinstance(b, dict) and b.get("t") == "presence" and b.get("nick") == "ann"
                   and b.get("event") == "part" and b.get("room") == room
                   for b in peer.inbox)

    # Bob and Cat keep chatting meanwhile, in one order, until both saw ann go.
    label = 0
    seqs: dict[int, list[int]] = {id(bob): [], id(cat): []}
    while not (ann_left(bob, "lobby") and ann_left(bob, "side") and ann_left(cat, "lobby")):
        assert time.monotonic() - killed < PRESENCE_DEADLINE, (
            "ann never left their presence", [b for p in (bob, cat) for b in p.inbox
                                              if isinstance(b, dict) and b.get("t") != "msg"],
            procs[1].text()[-3000:], procs[2].text()[-3000:])
        label += 1
        sender = (bob, cat)[label % 2]
        got = _say(sender, f"t{label}", label)
        assert got["t"] == "msg", got
        other = cat if sender is bob else bob
        seen = other.expect(lambda b, x=f"t{label}": b.get("t") == "msg"
                            and b.get("text") == x, timeout=10)
        seqs[id(sender)].append(int(got["seq"]))
        seqs[id(other)].append(int(seen["seq"]))
        time.sleep(0.1)  # ~10 msgs a second: traffic, not a flood
        for peer in (bob, cat):
            peer._pump(0.01)  # presence frames in between
    left = time.monotonic() - killed
    assert left < PRESENCE_DEADLINE
    assert label >= 10  # they chatted throughout (the lease alone takes ~10 s)
    assert seqs[id(bob)] == seqs[id(cat)] == sorted(seqs[id(bob)])
    for peer in (bob, cat):
        assert not peer.closed
        assert not [b for b in peer.inbox if isinstance(b, dict) and b.get("t") == "error"]
    again = _peer(lab, "b", ports["b"], "ann")  # the dead host's nick came free
    cat.expect(lambda b: b.get("event") == "join" and b.get("nick") == "ann", timeout=10)
    for peer in (again, bob, cat):
        peer.close()
