"""The Redis engine's round trips, against a real redis-server we start.

One wake over many rooms is one pipeline of script calls (no SCRIPT EXISTS
before it), bounded by MAX_CALLS / MAX_BYTES with the rest sent on the next
wakes in order; a script Redis forgot (SCRIPT FLUSH, a restart) is loaded
and the calls sent again without sequencing anything twice; our own batch
goes on our bus at once and its copy through the channel is skipped; a join
costs a bounded number of round trips.
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.redisproc import REDIS, RedisServer

redis = pytest.importorskip("redis", reason="the redis client (pip install redis) is missing")
pytestmark = pytest.mark.skipif(
    REDIS is None, reason="redis-server missing: sh tests/ensure_apt.sh redis redis-server "
    "redis-server (make test does it)")


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer().start() as srv:
        yield srv


class Counted:
    """Counts the engine's round trips (every one goes through Link.run)."""

    def __init__(self, engine: Any) -> None:
        self.trips = 0
        run = engine.link.run

        def counted(fn: Any) -> Any:
            self.trips += 1
            return run(fn)

        engine.link.run = counted


def _engine(url: str, host: str = "h1", **kw: Any) -> Any:
    from relay.hub.redis_engine import RedisEngine

    engine = RedisEngine(url, host=host)
    engine.is_local = lambda worker: worker == "w1"
    if kw:
        engine.traffic.max_calls = kw.get("max_calls", engine.traffic.max_calls)
        engine.traffic.max_bytes = kw.get("max_bytes", engine.traffic.max_bytes)
    return engine


def _msgs(room: str, texts: list[str]) -> list[tuple[bytes, list[Any]]]:
    from relay.bus.wire import room_topic

    return [(room_topic(room), [{"t": "msg", "room": room, "from": "ann", "text": t},
                                "w1", 1, None]) for t in texts]


def _stats(url: str) -> dict[str, int]:
    r = redis.Redis.from_url(url)
    try:
        return {k: int(v["calls"]) for k, v in r.info("commandstats").items()}
    finally:
        r.close()


def test_one_wake_over_many_rooms_is_bounded_pipelines_in_order(server: RedisServer) -> None:
    from relay.hub import redis_scripts as lua

    engine = _engine(server.url, max_calls=100)
    try:
        rooms = [f"r{k}" for k in range(250)]
        for room in rooms:
            engine.traffic.watch(room)
        count = Counted(engine)
        out = [item for room in rooms for item in _msgs(room, ["a", "b"])]
        local = engine.outgoing(out)
        assert count.trips == 1  # the first 100 rooms, one round trip
        got = [(t, it[0]["seq"], it[0]["text"]) for t, it in local]
        assert len(got) == 200  # ours, the rooms' next: on our bus at once, with seqs
        assert got[:2] == [(b"rr0\x00", 1, "a"), (b"rr0\x00", 2, "b")]
        trips = sends = 0
        while engine.traffic._queue:  # the loop is woken for the rest
            engine.incoming()  # (the hub's turn: it drains the wake fd; it may also check
            # the rooms whose subscriptions were confirmed meanwhile: not counted here)
            assert select.select([engine.wake_fd], [], [], 0)[0], "the loop was not woken"
            assert trips < 10
            before = count.trips
            local += engine.outgoing([])
            sends += count.trips - before
            trips += 1
        assert trips == 2 and sends == 2
        assert len(local) == 500
        r = redis.Redis.from_url(server.url)
        assert {int(r.get(lua.room_key(room, "seq"))) for room in rooms} == {2}
        assert "cmdstat_script|exists" not in _stats(server.url)
        time.sleep(0.2)  # nothing to wait for: our copies from the channel must be skipped
        deadline = time.monotonic() + 5
        while engine.traffic.feed.items and time.monotonic() < deadline:
            assert engine.incoming() == []
        r.close()
    finally:
        engine.close()


def test_byte_bound_sends_at_least_one_batch_per_wake(server: RedisServer) -> None:
    engine = _engine(server.url, max_bytes=1)
    try:
        engine.traffic.watch("big")
        count = Counted(engine)
        local = engine.outgoing(_msgs("big", ["x" * 2000]) + _msgs("small", ["y"]))
        assert count.trips == 1 and [it[0]["seq"] for _, it in local] == [1]
        assert len(engine.traffic._queue) == 1
        engine.outgoing([])
        assert count.trips == 2 and not engine.traffic._queue
    finally:
        engine.close()


def test_a_forgotten_script_is_loaded_and_nothing_sequenced_twice(server: RedisServer) -> None:
    from relay.hub import redis_scripts as lua

    engine = _engine(server.url)
    try:
        engine.traffic.watch("lobby")
        first = engine.outgoing(_msgs("lobby", ["a", "b"]))
        r = redis.Redis.from_url(server.url)
        loads = _stats(server.url).get("cmdstat_script|load", 0)
        r.script_flush()
        again = engine.outgoing(_msgs("lobby", ["c"]))
        assert [it[0]["seq"] for _, it in first + again] == [1, 2, 3]
        assert int(r.get(lua.room_key("lobby", "seq"))) == 3
        assert r.xlen(lua.room_key("lobby", "log")) == 3
        assert _stats(server.url).get("cmdstat_script|load", 0) == loads + 1
        r.close()
    finally:
        engine.close()


def test_redis_down_answers_every_queued_say_unavailable(server: RedisServer) -> None:
    engine = _engine(server.url, max_calls=2)
    try:
        for room in ("a", "b", "c"):
            engine.traffic.watch(room)
        server.stop()
        out = engine.outgoing(_msgs("a", ["1"]) + _msgs("b", ["2"]) + _msgs("c", ["3"]))
        out += engine.outgoing([])
        assert [(it[0], it[1]["t"], it[1]["code"]) for _, it in out] == [
            (1, "error", "unavailable")] * 3
    finally:
        engine.close()


def test_join_costs_few_round_trips(server: RedisServer) -> None:
    from relay.hub.engine import ClientRec
    from relay.hub.members import Membership
    from relay.hub.presence import Presence

    engine = _engine(server.url)
    try:
        presence = Presence(engine, limit=100, interval=0.0)
        members = Membership(engine, presence, max_rooms_per_client=10, join_replay=20,
                             join_replay_rooms=5)
        for conn, nick in ((1, "ann"), (2, "bob")):
            assert engine.register(ClientRec("w1", conn, nick, {}, "10.0.0.1", "", ""))
        engine.traffic.watch("lobby")
        engine.outgoing(_msgs("lobby", ["old"]))
        engine.flush()
        count = Counted(engine)
        out: list[Any] = []
        members.join(("w1", 1), "lobby", out)
        engine.flush()
        assert count.trips <= 2, count.trips  # the room cap (OPEN_ROOM), then the join
        kinds = [it[1]["t"] if isinstance(it[0], int) else it[0]["t"] for _, it in out]
        assert kinds == ["joined", "presence", "history"]
        count.trips = 0
        out = []
        members.join(("w1", 2), "lobby", out)
        assert count.trips <= 1, count.trips  # a room with local members: the join only
        print("join trips", count.trips)
        joined = out[0][1][1]
        assert joined["members"] == ["ann", "bob"] and joined["seq"] == 1
    finally:
        engine.close()


def test_hello_is_one_round_trip_and_a_taken_nick_leaves_no_record(server: RedisServer) -> None:
    from relay.hub.engine import ClientRec
    from relay.hub.redis_engine import CLIENTS

    one, two = _engine(server.url), _engine(server.url, host="h2")
    try:
        count = Counted(one)
        assert one.register(ClientRec("w1", 1, "Ann", {}, "10.0.0.1", "", ""))
        assert count.trips == 1
        assert not two.register(ClientRec("w2", 1, "ann", {}, "10.0.0.2", "", ""))
        r = redis.Redis.from_url(server.url)
        assert r.hkeys(CLIENTS) == [b"w1\t1"]
        assert r.smembers("cr:ip:10.0.0.2") == set()
        r.close()
    finally:
        two.close()
        one.close()


def test_mute_checks_cost_one_read_per_wake_and_other_hosts_see_it_next_wake(
        server: RedisServer) -> None:
    from relay.hub.engine import Sanction

    one, two = _engine(server.url), _engine(server.url, host="h2")
    try:
        count = Counted(two)
        for _ in range(50):  # fifty says in one wake: one read of the mute table
            assert not two.sanctions("mute")
        assert count.trips == 1
        assert one.set_sanction("mute", "ann", Sanction(0, "op", "spam"), 10, 1)
        assert two.sanction("mute", "ann", 1) is None  # this wake: as read at its start
        two.flush()  # the wake ends
        assert two.sanctions("mute") and two.sanction("mute", "ann", 1) is not None
        assert one.set_sanction("mute", "bob", Sanction(5, "op", ""), 10, 1)
        two.flush()
        assert two.sanction("mute", "bob", 10) is None  # over: dropped, in Redis too
        two.flush()
        assert set(two.sanctions("mute")) == {"ann"}
    finally:
        two.close()
        one.close()


def test_watching_a_room_pokes_our_feed_so_it_subscribes_at_once(server: RedisServer) -> None:
    from relay.hub import redis_scripts as lua

    engine = _engine(server.url)
    try:
        listener = redis.Redis.from_url(server.url).pubsub()
        listener.subscribe(lua.host_key("h1", "ch"))
        assert listener.get_message(timeout=5)["type"] == "subscribe"
        engine.traffic.watch("lobby")
        assert engine.outgoing([]) == []  # the wake's round trip carries the poke
        poke = listener.get_message(timeout=5)
        assert poke is not None and poke["data"] == b"k\n"
        engine.outgoing([])  # once per watch, not every wake
        assert listener.get_message(timeout=0.2) is None
        deadline = time.monotonic() + 5
        got: list[object] = []
        while time.monotonic() < deadline and not engine.feed.connected.is_set():
            time.sleep(0.01)
        for _ in range(20):  # our feed takes the poke in and makes nothing of it
            got += engine.incoming()
            time.sleep(0.01)
        assert got == []
        listener.close()
    finally:
        engine.close()
