"""The Redis engine on a Redis Cluster: 3 primaries + 3 replicas we start (and kill) by PID.

Three relay hosts (separate `chat-relay start --engine redis+cluster://...`
process trees) share rooms whose keys land on different shards: one order
per room, nicks unique across hosts, history and resume across hosts. Then,
with two hosts, the primary that owns a busy room's slot is killed with
SIGKILL (or failed over by hand) while a sender keeps saying: its replica is
promoted, traffic resumes by itself, every receiver sees each acknowledged
msg in seq order (or a new epoch's jump over it), no seq is handed out
twice, and a `say` meanwhile is answered (`unavailable`, or delivered),
never left hanging.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.redisproc import REDIS, RedisCluster
from tests.relayproc import UNIT, RelayProcess
from tests.wire import NativePeer

redis = pytest.importorskip("redis", reason="the redis client (pip install redis) is missing")
pytestmark = pytest.mark.skipif(
    REDIS is None, reason="redis-server missing: sh tests/ensure_apt.sh redis redis-server "
    "redis-server (make test does it)")

RESUME_DEADLINE = 20.0  # seconds from the kill until an acknowledged msg again


PASSWORD = "s3cret-engine-pass"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path).start() as c:
        yield c


@pytest.fixture
def fast_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A cluster that fails a silent primary over after 1 s (the failover tests)."""
    with RedisCluster(tmp_path, node_timeout_ms=1000).start() as c:
        yield c


@pytest.fixture
def locked_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisCluster]:
    """A cluster with a password, which relay hosts started meanwhile get from
    $CHAT_RELAY_ENGINE_PASSWORD (inherited), never from argv."""
    monkeypatch.setenv("CHAT_RELAY_ENGINE_PASSWORD", PASSWORD)
    with RedisCluster(tmp_path, password=PASSWORD).start() as c:
        yield c


def _host(url: str) -> RelayProcess:
    return RelayProcess(workers=1, args=["--engine", url, "--no-mdns", "--rate-limit", "0"])


def _rooms_on_every_shard(cluster: RedisCluster) -> list[str]:
    """One room per primary (their keys' slots are served by different nodes)."""
    from relay.hub import redis_scripts as lua

    by_node: dict[int, str] = {}
    for i in range(64):
        name = f"room{i}"
        by_node.setdefault(cluster.primary_of(lua.room_key(name, "seq")), name)
        if len(by_node) == 3:
            return sorted(by_node.values())
    raise AssertionError(f"rooms landed on {len(by_node)} shards only")


def test_cluster_url_is_checked_in_words() -> None:
    from relay.hub.redis_link import check_url

    assert check_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001") == ""
    assert check_url("rediss+cluster://:pw@a:1,[::1]:2/0") == ""
    assert "bad port" in check_url("redis+cluster://a:1,b:x")
    assert "HOST:PORT" in check_url("redis+cluster://a:1,b")
    assert "database 0" in check_url("redis+cluster://a:1/3")
    assert "***" in check_url("redis+cluster://:secret@a:1,b:0") and \
        "secret" not in check_url("redis+cluster://:secret@a:1,b:0")


def test_lua_sequence_starts_a_new_epoch_after_a_failover(cluster: RedisCluster) -> None:
    """The promoted replica's seq key may be stale: the room's next batch jumps."""
    from redis.cluster import ClusterNode
    from redis.cluster import RedisCluster as Client

    from relay.bus.wire import pack
    from relay.hub import redis_cluster
    from relay.hub import redis_scripts as lua

    client = Client(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster.ports[:3]])
    seq = redis_cluster.ClusterScript(client, lua.SEQUENCE_CLUSTER, [])

    def say(floor: int = 0) -> list[int]:
        keys = [lua.room_key("r", part) for part in ("seq", "epoch", "log", "rid")]
        res = seq(keys, [lua.room_key("r", "ch"), 100, floor, 1, b"x", pack({"t": "msg"})])
        return [int(v) for v in res]

    assert say() == [1, 1, 0]
    assert say() == [2, 1, 0]
    cluster.failover(cluster.primary_of(lua.room_key("r", "seq")))
    client.nodes_manager.initialize()
    first, epoch, fresh = say(floor=5)  # a host had seen seq 5 (lost in the failover)
    assert (fresh, epoch) == (1, 2) and first == 5 + lua.STALE_MARGIN + 1
    assert say()[:2] == [first + 1, 2]  # then on as usual
    client.close()


def test_pipelined_scripts_survive_an_empty_script_cache(cluster: RedisCluster) -> None:
    """A promoted replica knows no script: the pipeline's NOSCRIPT calls go again
    as EVAL, and only those (a script that got NOSCRIPT never ran)."""
    from relay.bus.wire import pack
    from relay.hub import redis_scripts as lua
    from relay.hub.redis_link import Link, connect

    link = Link(connect(cluster.url), cluster.url)
    rooms = _rooms_on_every_shard(cluster)

    def fill(p: Any) -> None:
        for room in rooms:
            link.sequence(keys=link.sequence_keys(room),
                          args=[lua.room_key(room, "ch"), 100, 0, 1, b"x", pack({"t": "msg"})],
                          client=p)
            p.incr("cr:counter")  # a plain command between them runs once

    for round_ in (1, 2):
        link.r.script_flush()  # every primary forgets every script
        results = link.pipe(fill)
        assert [r[0] for r in results[0::2]] == [round_] * 3  # seq 1, then 2, per room
        assert results[1::2] == [3 * round_ - 2, 3 * round_ - 1, 3 * round_]
    link.r.close()


def test_every_script_touches_one_slot() -> None:
    """A cluster refuses a script whose keys span slots: the global pairs share a tag."""
    from redis.cluster import key_slot

    from relay.hub import redis_scripts as lua

    assert key_slot(lua.af_rkey("10.0.0.1").encode()) == key_slot(lua.BLOCKS.encode())
    host = "relay-1.example-42-7"
    assert key_slot(lua.cleanup_rkey(host).encode()) == key_slot(lua.lease_rkey(host).encode())
    keys = [lua.room_key("x#y", part) for part in ("seq", "epoch", "log", "rid", "mem", "ch")]
    assert len({key_slot(k.encode()) for k in keys}) == 1


def test_three_hosts_share_rooms_across_shards(locked_cluster: RedisCluster) -> None:
    cluster = locked_cluster
    rooms = _rooms_on_every_shard(cluster)
    with _host(cluster.url).start() as one, _host(cluster.url).start() as two, \
            _host(cluster.url).start() as three:
        for relay in (one, two, three):  # the password reached the hub, not any argv
            for proc in [psutil.Process(relay.pid), *relay.children()]:
                assert PASSWORD not in " ".join(proc.cmdline())
        alice = NativePeer.joined(one.port, "alice", rooms=rooms)
        bob = NativePeer.joined(two.port, "bob", rooms=rooms)
        erin = NativePeer.joined(three.port, "erin", rooms=rooms)  # only listens
        taken = NativePeer(three.port)
        taken.send({"t": "hello", "v": 1, "nick": "ALICE", "rooms": []})
        taken.expect_error("nick_taken")  # unique across hosts, case-insensitively
        per = 15
        senders = [threading.Thread(target=_blast, args=(p, rooms, per)) for p in (alice, bob)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        for room in rooms:  # one order per room, the same on both hosts
            views = [[(m["seq"], m["text"]) for m in p.msgs(room, 2 * per, timeout=20)]
                     for p in (alice, bob, erin)]
            assert [s for s, _ in views[0]] == list(range(1, 2 * per + 1)), room
            assert views[0] == views[1] == views[2], room
        carol = NativePeer.joined(two.port, "carol", rooms=[])  # history from the other host
        carol.send({"t": "join", "room": rooms[0]})
        carol.expect(lambda b: b.get("t") == "joined")
        carol.send({"t": "history", "room": rooms[0], "after": 25, "limit": 10})
        page = carol.expect(lambda b: b.get("t") == "history" and not b.get("replay"))
        assert [m["seq"] for m in page["messages"]] == list(range(26, 2 * per + 1))
        dave = NativePeer.joined(one.port, "dave", rooms=[], resume={rooms[2]: 27})
        got = dave.msgs(rooms[2], 3)  # what it missed, read on the other host's shard
        assert [m["seq"] for m in got] == [28, 29, 30]
        store = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0], password=PASSWORD)
        assert store.smembers("cr:rooms") == {r.encode() for r in rooms}
        for peer in (alice, bob, erin, taken, carol, dave):
            peer.close()
        deadline = time.monotonic() + 10 * UNIT  # emptied rooms stop counting (VACATE, split)
        while store.smembers("cr:rooms") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.smembers("cr:rooms") == set()
        assert all(store.pttl(f"cr:{{{r}}}:log") > 0 for r in rooms)  # history set to expire
        store.close()


def _blast(peer: NativePeer, rooms: list[str], per: int) -> None:
    for i in range(per):
        for room in rooms:
            peer.send({"t": "say", "room": room, "text": f"{peer.nick}:{i}"})


class Sender(threading.Thread):
    """Says `n` numbered msgs in one room, one at a time, noting each answer."""

    def __init__(self, peer: NativePeer, room: str, limit: int = 3000) -> None:
        super().__init__(daemon=True)
        self.peer, self.room, self.limit = peer, room, limit
        self.acked: dict[int, str] = {}  # seq -> text, for each msg that came back
        self.refused: list[float] = []   # when a say got `unavailable`
        self.other: list[Any] = []       # any other answer (a failure)
        self.acked_at: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        for i in range(self.limit):
            if self.halt.is_set():
                return
            self.peer.send({"t": "say", "room": self.room, "text": f"n{i}", "id": i})
            try:
                got = self.peer.expect(lambda b, i=i: b.get("id") == i
                                       and b.get("t") in ("msg", "error"), timeout=10)
            except AssertionError as exc:
                self.other.append(str(exc))
                return
            if got["t"] == "msg":
                self.acked[got["seq"]] = got["text"]
                self.acked_at.append(time.monotonic())
            elif got.get("code") == "unavailable":
                self.refused.append(time.monotonic())
                self.halt.wait(0.15)  # under the relay's error budget (100 in 10 s)
            else:
                self.other.append(got)
            self.halt.wait(0.005)


def _receive(peer: NativePeer, room: str, got: list[tuple[int, str]],
             until: threading.Event) -> None:
    """Note (seq, text) of each msg of `room` the peer gets, until told to stop."""
    while not until.is_set():
        peer._pump(0.05)
        keep = []
        for body in peer.inbox:
            if isinstance(body, dict) and body.get("t") == "msg" and body.get("room") == room:
                got.append((body["seq"], body["text"]))
            else:
                keep.append(body)
        peer.inbox = keep


@pytest.mark.parametrize("how", ["kill9", "manual"])
def test_failover_of_a_busy_rooms_primary_loses_nothing_silently(
        fast_cluster: RedisCluster, how: str) -> None:
    """kill9: the primary dies (its replica is promoted after the node timeout;
    connections fail). manual: CLUSTER FAILOVER (the old primary stays up as a
    replica: MOVED, and Redis ends our shard subscriptions there)."""
    from relay.hub import redis_scripts as lua

    cluster = fast_cluster
    room = _rooms_on_every_shard(cluster)[0]
    with _host(cluster.url).start() as one, _host(cluster.url).start() as two:
        alice = NativePeer.joined(one.port, "alice", rooms=[room])
        bob = NativePeer.joined(two.port, "bob", rooms=[room])
        carol = NativePeer.joined(one.port, "carol", rooms=[room])
        done = threading.Event()
        views: dict[str, list[tuple[int, str]]] = {"bob": [], "carol": []}
        readers = [threading.Thread(target=_receive, args=(p, room, views[p.nick], done),
                                    daemon=True) for p in (bob, carol)]
        for t in readers:
            t.start()
        sender = Sender(alice, room)
        sender.start()
        deadline = time.monotonic() + 10 * UNIT
        while len(sender.acked) < 30:
            assert time.monotonic() < deadline and not sender.other, sender.other
            time.sleep(0.01)
        victim = cluster.primary_of(lua.room_key(room, "seq"))
        killed = time.monotonic()
        if how == "kill9":
            cluster.kill(victim)
        else:
            cluster.failover(victim)
        before = max(sender.acked)
        deadline = killed + RESUME_DEADLINE * UNIT
        while not any(t > killed for t in sender.acked_at) or max(sender.acked) <= before:
            assert time.monotonic() < deadline, (
                f"no msg acknowledged {RESUME_DEADLINE} s after the kill "
                f"({len(sender.refused)} refused)")
            assert not sender.other, sender.other
            time.sleep(0.02)
        resumed = time.monotonic() - killed
        assert cluster.primary_of(lua.room_key(room, "seq")) != victim  # a replica took over
        settle = len(sender.acked) + 20
        deadline = time.monotonic() + 10 * UNIT
        while len(sender.acked) < settle:
            assert time.monotonic() < deadline and not sender.other, sender.other
            time.sleep(0.01)
        sender.halt.set()
        sender.join(15)
        last = max(sender.acked)
        deadline = time.monotonic() + RESUME_DEADLINE * UNIT
        while not all(seen and seen[-1][0] >= last for seen in views.values()):
            if time.monotonic() > deadline:  # every host catches up by itself
                break
            time.sleep(0.02)
        caught_up = time.monotonic() - killed
        done.set()
        for t in readers:
            t.join(15)
        assert not sender.other, sender.other  # every say got a msg or `unavailable`
        if how == "kill9":  # the outage lasts the node timeout at least: says met it
            assert sender.refused
        try:
            for nick, seen in views.items():
                _assert_no_silent_hole(nick, seen, sender.acked)
        except AssertionError:
            print("\n".join(one.output[-40:] + two.output[-40:]))  # the hosts' side
            print({nick: seen[-5:] for nick, seen in views.items()})
            raise
        print(f"{how} failover: traffic resumed {resumed:.2f} s after the kill, every receiver "
              f"caught up by {caught_up:.2f} s; "
              f"{len(sender.refused)} say(s) refused meanwhile, {len(sender.acked)} acked")
        for peer in (alice, bob, carol):
            peer.close()


def _assert_no_silent_hole(nick: str, seen: list[tuple[int, str]],
                           acked: dict[int, str]) -> None:
    """Seqs only grow; each acknowledged msg arrived with its seq, unless a new
    epoch's jump (a seq step of at least the stale margin) passed over it."""
    from relay.hub.redis_scripts import STALE_MARGIN

    seqs = [s for s, _ in seen]
    assert seqs == sorted(set(seqs)), f"{nick}: seqs out of order or reused"
    got = dict(seen)
    jumps = [(a, b) for a, b in zip(seqs, seqs[1:], strict=False) if b - a >= STALE_MARGIN]
    for seq, text in acked.items():
        if seq in got:
            assert got[seq] == text, f"{nick}: seq {seq} is {got[seq]!r}, was {text!r}"
        else:
            assert any(a < seq < b for a, b in jumps), f"{nick}: acked seq {seq} missing"
    holes = [(a, b) for a, b in zip(seqs, seqs[1:], strict=False) if 1 < b - a < STALE_MARGIN]
    assert not holes, f"{nick}: seqs skipped without a new epoch: {holes}"
