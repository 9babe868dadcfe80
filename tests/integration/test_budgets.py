"""Budgets (issue 19): rooms per client, rooms in total, history bytes, room TTL.

HubState tests run without sockets and with an injected monotonic time; the
relay tests start real processes and meet each bound through the wire.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from relay.bus.wire import worker_topic
from relay.hub import rooms
from relay.hub.history import msg_cost
from relay.hub.historydb import HistoryStore
from relay.hub.requests import ROOMS_REPLY_MAX
from relay.hub.state import HubState, Out
from tests.conftest import RelayFactory
from tests.integration.test_metrics import metrics_url, value, wait_metrics
from tests.unit.relay.test_hubstate import bodies, ready, run
from tests.wire import NativePeer, TextPeer
from transports.irc import IrcServerCodec
from transports.text import TextServerCodec

W = worker_topic("A")


def hub(**kw: Any) -> HubState:
    state = HubState(epoch=1, clock=lambda: 1000, **kw)
    ready(state, "A")
    return state


def hello(state: HubState, conn: int, nick: str, rooms: list[str] | None = None,
          **extra: Any) -> list[dict[str, Any]]:
    return bodies(run(state, "A", {"op": "hello", "c": conn, "nick": nick,
                                   "rooms": rooms or [], **extra}), W)


def at(state: HubState, mono: float, *reqs: dict[str, Any]) -> list[dict[str, Any]]:
    """Handle `reqs` at monotonic time `mono`; the replies to worker A."""
    out: Out = []
    for req in reqs:
        state.handle("A", req, out, mono)
    return bodies(out, W)


def say(conn: int, room: str, text: str) -> dict[str, Any]:
    return {"op": "say", "c": conn, "room": room, "text": text}


def actual_cost(state: HubState) -> int:
    return sum(msg_cost(m) for r in state.rooms.values() for m in r.history)


# Rooms per client ------------------------------------------------------------------------


def test_the_101st_join_is_refused_and_the_connection_stays() -> None:
    s = hub()
    hello(s, 1, "ann")
    for i in range(100):
        got = bodies(run(s, "A", {"op": "join", "c": 1, "room": f"r{i}"}), W)
        assert got[0]["t"] == "joined", (i, got)
    got = bodies(run(s, "A", {"op": "join", "c": 1, "room": "r100"}), W)
    assert got == [{"t": "error", "code": "too_many_rooms", "ref": "join", "room": "r100",
                    "text": got[0]["text"]}]
    assert "100 rooms" in got[0]["text"]
    assert "r100" not in s.rooms and len(s.clients[("A", 1)].rooms) == 100
    # Rejoining a room one is in is no new room; after a part, a join fits again.
    assert bodies(run(s, "A", {"op": "join", "c": 1, "room": "r5"}), W)[0]["t"] == "joined"
    run(s, "A", {"op": "part", "c": 1, "room": "r5"})
    assert bodies(run(s, "A", {"op": "join", "c": 1, "room": "r100"}), W)[0]["t"] == "joined"
    assert bodies(run(s, "A", say(1, "r100", "still here")), W) == []  # the msg went out


def test_hello_rooms_and_resume_count_against_the_same_limit() -> None:
    s = hub(max_rooms_per_client=10)
    got = hello(s, 1, "ann", [f"a{i}" for i in range(6)],
                resume={f"b{i}": 0 for i in range(6)})
    assert [b["t"] for b in got].count("joined") == 10
    refused = [b for b in got if b["t"] == "error"]
    assert [(b["code"], b["ref"], b["room"]) for b in refused] == [
        ("too_many_rooms", "hello", "b4"), ("too_many_rooms", "hello", "b5")]
    assert got[0]["t"] == "welcome"  # the client is in, with the rooms that fit


# Rooms in total --------------------------------------------------------------------------


def test_relay_wide_limit_makes_space_from_empty_rooms_then_refuses() -> None:
    s = hub(max_rooms=3)
    hello(s, 1, "ann", ["a", "b"])
    run(s, "A", say(1, "b", "kept until it is needed"))
    assert bodies(run(s, "A", {"op": "join", "c": 1, "room": "c"}), W)[0]["t"] == "joined"
    got = bodies(run(s, "A", {"op": "join", "c": 1, "room": "d"}), W)
    assert got[0]["code"] == "too_many_rooms" and got[0]["room"] == "d"
    assert "3 rooms" in got[0]["text"] and set(s.rooms) == {"a", "b", "c"}
    # b empties (it has history, so it waits for its TTL) and becomes the space d needs.
    run(s, "A", {"op": "part", "c": 1, "room": "b"})
    assert set(s.rooms) == {"a", "b", "c"}
    assert bodies(run(s, "A", {"op": "join", "c": 1, "room": "d"}), W)[0]["t"] == "joined"
    assert set(s.rooms) == {"a", "c", "d"} and s.forgotten == 1
    # b comes back later with its seq: nothing reuses seq 1.
    run(s, "A", {"op": "part", "c": 1, "room": "a"})  # a was silent: forgotten at once
    got = bodies(run(s, "A", {"op": "join", "c": 1, "room": "b"}), W)
    assert got[0] == {"t": "joined", "room": "b", "members": ["ann"], "seq": 1}


# History bytes ---------------------------------------------------------------------------


def test_history_budget_holds_under_10000_rooms_and_evicts_least_recent_first() -> None:
    budget = 25_000 * 503  # about 25,000 of these messages: 2.5 of the 3 rounds below
    s = hub(history_bytes=budget, max_rooms_per_client=20_000, history_len=50)
    hello(s, 1, "ann", [f"r{i}" for i in range(10_000)])
    for rnd in range(3):
        for i in range(10_000):
            run(s, "A", say(1, f"r{i}", f"round {rnd} in r{i} " + "x" * 40))
            assert s.history_used <= budget
    one = msg_cost(s.rooms["r9999"].history[0])
    assert budget - one < s.history_used == actual_cost(s) <= budget  # full, one msg at a time
    assert len(s.rooms) == 10_000
    # Each room keeps a run that ends at its seq; between them 25,000 messages.
    assert all(r.history[-1]["seq"] == 3 for r in s.rooms.values())
    assert 24_000 < sum(len(r.history) for r in s.rooms.values()) < 26_000
    # One more message, in r5000: the least recently active room (r0) pays for it with
    # its oldest messages; nobody else loses anything.
    before = {name: r.first_seq for name, r in s.rooms.items()}
    run(s, "A", say(1, "r5000", "more " + "y" * 200))
    after = {name: r.first_seq for name, r in s.rooms.items()}
    assert [n for n in before if before[n] != after[n]] == ["r0"]
    assert after["r0"] > before["r0"] and s.history_used <= budget
    assert s.rooms["r5000"].history[-1]["seq"] == 4


def test_history_past_what_was_evicted_gets_history_gap_then_what_is_left() -> None:
    s = hub(history_bytes=10 * msg_cost({"text": "mNN"}), history_len=100)
    hello(s, 1, "ann", ["old", "new"])
    run(s, "A", *(say(1, "old", f"m{i:02d}") for i in range(6)))
    run(s, "A", *(say(1, "new", f"m{i:02d}") for i in range(6)))
    assert [m["seq"] for m in s.rooms["old"].history] == [3, 4, 5, 6]  # lost 1-2
    assert len(s.rooms["new"].history) == 6
    got = bodies(run(s, "A", {"op": "history", "c": 1, "room": "old", "after": 0}), W)
    assert got[0]["code"] == "history_gap" and got[0]["room"] == "old"
    assert [m["seq"] for m in got[1]["messages"]] == [3, 4, 5, 6] and not got[1]["more"]
    # Resume the same way: joined, history_gap, then what history still has.
    got = hello(s, 2, "bob", resume={"old": 1})
    assert [b["t"] for b in got] == ["welcome", "joined", "error", "msg", "msg", "msg", "msg"]
    assert got[2]["code"] == "history_gap"
    # A room that lost everything answers an empty page after the gap.
    s.history_bytes = 6 * msg_cost({"text": "mNN"})
    run(s, "A", say(1, "new", "m06"))
    assert not s.rooms["old"].history
    got = bodies(run(s, "A", {"op": "history", "c": 1, "room": "old", "after": 2}), W)
    assert got[0]["code"] == "history_gap"
    assert got[1] == {"t": "history", "room": "old", "messages": [], "more": False}
    got = bodies(run(s, "A", {"op": "history", "c": 1, "room": "old"}), W)
    assert got == [{"t": "history", "room": "old", "messages": [], "more": False}]


def test_wide_characters_cost_what_python_holds() -> None:
    narrow, wide = msg_cost({"text": "a" * 1000}), msg_cost({"text": "a" * 999 + "\U0001f600"})
    assert wide - narrow > 2500  # one emoji makes every character 4 bytes in memory


# Room TTL and what a forgotten room keeps ------------------------------------------------


def test_an_empty_silent_room_is_forgotten_after_the_ttl_and_keeps_its_seq() -> None:
    s = hub(room_ttl=60.0)
    at(s, 10.0, {"op": "hello", "c": 1, "nick": "ann", "rooms": ["r"]},
       *(say(1, "r", f"m{i}") for i in range(5)),
       {"op": "part", "c": 1, "room": "r"})
    used = s.history_used
    s.expire_rooms(69.9)
    assert "r" in s.rooms and s.history_used == used
    s.expire_rooms(70.0)
    assert "r" not in s.rooms and s.history_used == 0 and s.forgotten == 1
    # It comes back at seq 5: a resume from seq 3 gets history_gap, never another room's msgs.
    got = at(s, 80.0, {"op": "hello", "c": 2, "nick": "bob", "resume": {"r": 3}})
    assert got[1] == {"t": "joined", "room": "r", "members": ["bob"], "seq": 5}
    assert got[2]["code"] == "history_gap" and len(got) == 3
    at(s, 80.0, say(2, "r", "new life"))
    assert [m["seq"] for m in s.rooms["r"].history] == [6]


def test_a_member_or_a_message_keeps_a_room_alive() -> None:
    s = hub(room_ttl=60.0)
    at(s, 0.0, {"op": "hello", "c": 1, "nick": "ann", "rooms": ["r", "q"]}, say(1, "r", "hi"))
    s.expire_rooms(1000.0)
    assert {"r", "q"} <= set(s.rooms)  # members: kept however long
    at(s, 1000.0, {"op": "part", "c": 1, "room": "r"}, {"op": "part", "c": 1, "room": "q"})
    assert "q" not in s.rooms  # empty and never spoken in: nothing to keep
    at(s, 1030.0, {"op": "join", "c": 1, "room": "r"}, {"op": "part", "c": 1, "room": "r"})
    s.expire_rooms(1080.0)
    assert "r" in s.rooms  # the TTL counts from when it emptied last
    s.expire_rooms(1090.0)
    assert "r" not in s.rooms


def test_past_the_tombstone_table_a_seq_floor_still_prevents_reuse(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rooms, "MAX_TOMBSTONES", 2)
    s = hub(room_ttl=0.0)
    at(s, 0.0, {"op": "hello", "c": 1, "nick": "ann", "rooms": ["a", "b", "c"]},
       *(say(1, room, "x") for room in "abc" for _ in range(3)),
       *({"op": "part", "c": 1, "room": room} for room in "abc"))
    s.expire_rooms(0.0)
    assert s.rooms == {} and list(s._tombs) == ["b", "c"]
    got = at(s, 1.0, {"op": "join", "c": 1, "room": "a"})
    assert got[0]["seq"] >= 3


# The rooms reply and IRC LIST ------------------------------------------------------------


def test_rooms_reply_is_capped_largest_first_and_says_so() -> None:
    s = hub(max_rooms_per_client=1000)
    n = ROOMS_REPLY_MAX + 100
    hello(s, 1, "ann", [f"r{i}" for i in range(n)])
    for c in range(2, 5):  # r0-r2 get more members
        hello(s, c, f"u{c}", [f"r{i}" for i in range(c - 1)])
    got = bodies(run(s, "A", {"op": "rooms", "c": 1}), W)[0]
    assert got["truncated"] is True and got["total"] == n
    assert len(got["rooms"]) == ROOMS_REPLY_MAX
    assert list(got["rooms"].items())[:3] == [("r0", 4), ("r1", 3), ("r2", 2)]
    small = hub()
    hello(small, 1, "ann", ["a", "b"])
    hello(small, 2, "bob", ["b"])
    assert bodies(run(small, "A", {"op": "rooms", "c": 1}), W)[0] == {
        "t": "rooms", "rooms": {"b": 2, "a": 1}}


def test_irc_and_text_tell_a_capped_list_and_too_many_rooms() -> None:
    irc = IrcServerCodec()
    irc.receive_data(b"NICK ann\r\nUSER ann 0 * :ann\r\n")
    irc.encode({"t": "welcome", "v": 1, "nick": "ann", "server": "x"})
    irc.data_to_send()
    irc.receive_data(b"LIST\r\n")
    text = irc.encode({"t": "rooms", "rooms": {"a": 3, "b": 1}, "truncated": True,
                       "total": 900}).decode()
    assert "322 ann #a 3" in text and "the 2 largest of 900 rooms" in text
    assert text.rstrip().endswith("End of /LIST")
    refused = irc.encode({"t": "error", "code": "too_many_rooms", "text": "you are in 100 rooms",
                          "ref": "join", "room": "r101"}).decode()
    assert refused.startswith(":chat-relay 405 ann #r101 :")
    codec = TextServerCodec()
    out = codec.encode({"t": "rooms", "rooms": {"a": 3}, "truncated": True,
                        "total": 900}).decode()
    assert "* rooms: a (3)" in out and "the 1 largest of 900 rooms" in out


# --history-db: lazy loading, and no more kept than memory keeps --------------------------


def fill_db(path: str, rooms: int, per_room: int) -> None:
    """A history file as a long-lived relay leaves it, written straight (fast)."""
    HistoryStore.open(path).close()
    db = sqlite3.connect(path)
    import msgpack
    db.executemany("INSERT INTO rooms (room, seq) VALUES (?, ?)",
                   [(f"r{i}", per_room) for i in range(rooms)])
    db.executemany("INSERT INTO messages (room, seq, body) VALUES (?, ?, ?)", (
        (f"r{i}", q, msgpack.packb({"t": "msg", "room": f"r{i}", "seq": q, "ts": 1,
                                    "from": "old", "text": f"r{i} says {q}"}))
        for i in range(rooms) for q in range(1, per_room + 1)))
    db.commit()
    db.close()


def stored(store: HistoryStore, room: str) -> list[int]:
    return [s for (s,) in store.db.execute(
        "SELECT seq FROM messages WHERE room=? ORDER BY seq", (room,))]


def test_db_rooms_load_on_first_use_and_follow_memory(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    fill_db(path, 200, 10)
    store = HistoryStore.open(path, keep=10)
    s = HubState(epoch=store.epoch(1), store=store, room_ttl=60.0, clock=lambda: 1,
                 history_bytes=12 * msg_cost({"text": "r7 says 10"}))
    ready(s, "A")
    s.expire_rooms(0.0)  # the hub's first beat: the start
    assert s.rooms == {}  # nothing loaded at the start
    got = at(s, 0.0, {"op": "hello", "c": 1, "nick": "ann", "rooms": ["r7", "r8"],
                      "resume": {"r9": 8}})
    assert set(s.rooms) == {"r7", "r8", "r9"}
    assert [b["seq"] for b in got if b["t"] == "msg"] == [9, 10]
    # Three rooms of 10 over a budget of 12: r7 and r8 (joined first) lost theirs.
    assert s.history_used <= s.history_bytes and not s.rooms["r7"].history
    store.prune()
    assert stored(store, "r7") == [] and stored(store, "r8") == [9, 10]
    # r9 forgotten after its TTL: its messages leave the file, its seq stays.
    at(s, 1.0, {"op": "part", "c": 1, "room": "r9"})
    s.expire_rooms(59.0)
    assert "r9" in s.rooms and stored(store, "r100") == list(range(1, 11))
    s.expire_rooms(61.0)
    assert "r9" not in s.rooms
    store.prune()
    assert stored(store, "r9") == []
    # A whole TTL after the start, rooms no one used left the file too (seqs stay).
    assert stored(store, "r100") == [] and stored(store, "r8") == [9, 10]
    assert store.load_room("r100") == (10, [])
    got = at(s, 62.0, {"op": "join", "c": 1, "room": "r9", "resume": 3})
    assert got[0]["seq"] == 10 and got[1]["code"] == "history_gap"
    store.close()


def test_relay_starts_on_a_big_db_and_loads_rooms_on_first_use(
        relay_factory: RelayFactory, tmp_path: Path) -> None:
    db = str(tmp_path / "big.db")
    fill_db(db, 3000, 20)  # 60,000 messages
    relay = relay_factory(workers=1, args=["--rate-limit", "0", "--history-db", db,
                                           "--metrics", "127.0.0.1:0"])
    url = metrics_url(relay)
    back = NativePeer(relay.port)
    back.send({"t": "hello", "v": 1, "nick": "back", "rooms": [], "resume": {"r2999": 17}})
    back.expect(lambda m: m.get("t") == "welcome")
    assert back.expect(lambda m: m.get("t") == "joined")["seq"] == 20
    assert [m["text"] for m in back.msgs("r2999", 3)] == [f"r2999 says {q}" for q in (18, 19, 20)]
    # An eager hub would hold 3,000 rooms by now; this one holds the one in use.
    samples = wait_metrics(url, lambda s: value(s, "chat_relay_hub_rooms") >= 1)
    assert value(samples, "chat_relay_hub_rooms") == 1
    back.close()


# Through a real relay --------------------------------------------------------------------


def test_relay_refuses_the_101st_room_and_serves_on(relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=2)
    ann = NativePeer.joined(relay.port, "ann", rooms=[f"a{i}" for i in range(64)],
                            resume={f"b{i}": 0 for i in range(35)})
    ann.send({"t": "join", "room": "c0"})
    assert ann.expect(lambda m: m.get("t") == "joined")["room"] == "c0"  # the 100th
    ann.send({"t": "join", "room": "c1"})
    err = ann.expect_error("too_many_rooms")
    assert (err["ref"], err["room"]) == ("join", "c1") and "100 rooms" in err["text"]
    ann.send({"t": "say", "room": "c0", "text": "still connected"})
    assert ann.msgs("c0", 1)[0]["text"] == "still connected"
    # A hello over the limit: welcome, 100 joined, the rest refused.
    bob = NativePeer(relay.port)
    bob.send({"t": "hello", "v": 1, "nick": "bob", "rooms": [f"a{i}" for i in range(64)],
              "resume": {f"b{i}": 0 for i in range(37)}})
    bob.expect(lambda m: m.get("t") == "welcome")
    for _ in range(100):
        bob.expect(lambda m: m.get("t") == "joined")
    err = bob.expect_error("too_many_rooms")
    assert (err["ref"], err["room"]) == ("hello", "b36")
    bob.send({"t": "ping", "id": 1})
    bob.expect(lambda m: m.get("t") == "pong")


def test_relay_wide_room_limit_through_the_wire(relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=2, args=["--rate-limit", "0", "--max-rooms", "3"])
    ann = NativePeer.joined(relay.port, "ann", rooms=["lobby", "a", "b"])
    bob = TextPeer(relay.port)  # in lobby, the third room
    bob.expect_text("/help")
    bob.send_line("/join d")
    assert "3 rooms" in bob.expect_text("error")
    ann.send({"t": "part", "room": "b"})  # b was silent: forgotten, d fits
    ann.expect(lambda m: m.get("t") == "parted")
    bob.send_line("/join d")
    bob.expect_text("you joined d")
