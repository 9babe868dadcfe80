"""HubState without sockets: requests in, ordered (topic, item) out."""

from __future__ import annotations

from typing import Any

from relay.bus.wire import room_topic, worker_topic
from relay.hub.state import HubState, Out


def hub(**kw: Any) -> HubState:
    return HubState(epoch=1, clock=lambda: 1000, **kw)


def run(state: HubState, worker: str, *reqs: dict[str, Any]) -> Out:
    out: Out = []
    for req in reqs:
        state.handle(worker, req, out, 0.0)
    return out


def bodies(out: Out, topic: bytes) -> list[dict[str, Any]]:
    res = []
    for t, item in out:
        if t == topic:
            res.append(item[1] if topic.startswith(b"w") else item[0])
    return res


def ready(state: HubState, *workers: str) -> None:
    for w in workers:
        run(state, w, {"op": "hb", "hello": True})


def test_hello_join_say_order_and_seq() -> None:
    s = hub()
    ready(s, "A", "B")
    out = run(s, "A", {"op": "hello", "c": 1, "nick": "ann", "rooms": ["lobby"]})
    assert [b["t"] for b in bodies(out, worker_topic("A"))] == ["welcome", "joined"]
    out = run(s, "B", {"op": "hello", "c": 1, "nick": "bob", "rooms": ["lobby"]},
              {"op": "say", "c": 1, "room": "lobby", "text": "hi", "id": 5})
    # joined (worker topic) comes before the presence and the msg (room topic).
    topics = [t for t, _ in out]
    assert topics.index(worker_topic("B")) < topics.index(room_topic("lobby"))
    joined = bodies(out, worker_topic("B"))[1]
    assert joined == {"t": "joined", "room": "lobby", "members": ["ann", "bob"], "seq": 0}
    msg_item = [item for t, item in out if t == room_topic("lobby")][-1]
    body, w, c, msg_id = msg_item
    assert (body["seq"], body["from"], w, c, msg_id) == (1, "bob", "B", 1, 5)
    assert "id" not in body  # only the author gets its id back, worker-side


def test_nick_rules_case_insensitive_and_guest() -> None:
    s = hub()
    ready(s, "A")
    run(s, "A", {"op": "hello", "c": 1, "nick": "Zed", "rooms": []})
    out = run(s, "A", {"op": "hello", "c": 2, "nick": "zED", "rooms": []})
    assert bodies(out, worker_topic("A"))[0]["code"] == "nick_taken"
    out = run(s, "A", {"op": "hello", "c": 3, "nick": None, "rooms": []})
    assert bodies(out, worker_topic("A"))[0]["nick"] == "guest-1"
    out = run(s, "A", {"op": "nick", "c": 3, "nick": "ZED"})
    assert bodies(out, worker_topic("A"))[0]["code"] == "nick_taken"
    out = run(s, "A", {"op": "nick", "c": 1, "nick": "zed"})  # a case change of one's own
    assert bodies(out, worker_topic("A"))[0] == {"t": "renamed", "nick": "zed"}


def test_history_ring_and_resume_gap() -> None:
    s = hub(history_len=3)
    ready(s, "A")
    run(s, "A", {"op": "hello", "c": 1, "nick": "a", "rooms": ["r"]})
    run(s, "A", *({"op": "say", "c": 1, "room": "r", "text": str(i)} for i in range(6)))
    assert [m["seq"] for m in s.rooms["r"].history] == [4, 5, 6]
    out = run(s, "A", {"op": "hello", "c": 2, "nick": "b", "rooms": [], "resume": {"r": 1}})
    got = bodies(out, worker_topic("A"))
    assert [b["t"] for b in got] == ["welcome", "joined", "error", "msg", "msg", "msg"]
    assert got[2]["code"] == "history_gap" and got[2]["room"] == "r"
    out = run(s, "A", {"op": "hello", "c": 3, "nick": "c", "rooms": [], "resume": {"r": 5}})
    assert [b.get("seq") for b in bodies(out, worker_topic("A"))[2:]] == [6]
    out = run(s, "A", {"op": "history", "c": 1, "room": "r", "after": 0, "limit": 2})
    got = bodies(out, worker_topic("A"))
    assert got[0]["code"] == "history_gap"
    assert [m["seq"] for m in got[1]["messages"]] == [4, 5] and got[1]["more"] is True


def test_restarted_hub_holds_requests_until_sync() -> None:
    s = hub()
    # A request from a worker this hub has never seen: held, and a resync asked for.
    out = run(s, "A", {"op": "say", "c": 7, "room": "r", "text": "during restart"})
    assert bodies(out, worker_topic("A")) == [{"t": "_resync", "epoch": 1}]
    assert not s.rooms
    out = run(s, "A", {"op": "sync", "clients": [[7, "kay", {"r": 41}]]})
    msg = [item[0] for t, item in out if t == room_topic("r")]
    assert msg and msg[0]["seq"] == 42 and msg[0]["text"] == "during restart"
    assert s.nicks["kay"] == ("A", 7)


def test_worker_expiry_frees_nicks_and_parts_rooms() -> None:
    s = hub(worker_timeout=5.0)
    out: Out = []
    s.handle("A", {"op": "hb", "hello": True}, out, 0.0)
    s.handle("A", {"op": "hello", "c": 1, "nick": "gone", "rooms": ["r"]}, out, 0.0)
    s.handle("B", {"op": "hb", "hello": True}, out, 4.0)
    out = s.expire_workers(6.0)
    assert "gone" not in s.nicks and "A" not in s.workers and "B" in s.workers
    assert bodies(out, room_topic("r"))[0]["event"] == "part"


def test_not_in_room_and_unknown_target() -> None:
    s = hub()
    ready(s, "A")
    run(s, "A", {"op": "hello", "c": 1, "nick": "a", "rooms": []})
    for req in ({"op": "say", "c": 1, "room": "x", "text": "t"}, {"op": "who", "c": 1, "room": "x"},
                {"op": "part", "c": 1, "room": "x"}, {"op": "history", "c": 1, "room": "x"}):
        got = bodies(run(s, "A", req), worker_topic("A"))
        assert got[0]["code"] == "not_in_room" and got[0]["room"] == "x"
    got = bodies(run(s, "A", {"op": "whisper", "c": 1, "to": "nope", "text": "t"}),
                 worker_topic("A"))
    assert got[0]["code"] == "no_such_nick"


def test_expired_worker_returning_rejoins_with_presence() -> None:
    s = hub(worker_timeout=5.0)
    out: Out = []
    s.handle("A", {"op": "hb", "hello": True}, out, 0.0)
    s.handle("A", {"op": "hello", "c": 1, "nick": "back", "rooms": ["r"]}, out, 0.0)
    s.expire_workers(6.0)
    out = run(s, "A", {"op": "say", "c": 1, "room": "r", "text": "held"})
    assert bodies(out, worker_topic("A"))[0]["t"] == "_resync"
    out = run(s, "A", {"op": "sync", "clients": [[1, "back", {"r": 0}]]})
    got = bodies(out, room_topic("r"))
    assert [b["t"] for b in got] == ["presence", "msg"] and got[0]["event"] == "join"
    # After a hub *restart* nobody saw them leave: no presence.
    fresh = hub()
    out = run(fresh, "B", {"op": "sync", "clients": [[1, "stay", {"r": 3}]]})
    assert bodies(out, room_topic("r")) == []


def test_ping_is_answered_after_the_requests_before_it() -> None:
    s = hub()
    ready(s, "A")
    run(s, "A", {"op": "hello", "c": 1, "nick": "ann", "rooms": ["lobby"]})
    out = run(s, "A", {"op": "who", "c": 1, "room": "lobby"}, {"op": "ping", "c": 1, "id": 7},
              {"op": "rooms", "c": 1}, {"op": "ping", "c": 1})
    assert bodies(out, worker_topic("A")) == [
        {"t": "members", "room": "lobby", "members": ["ann"]},
        {"t": "pong", "id": 7},
        {"t": "rooms", "rooms": {"lobby": 1}},
        {"t": "pong"},
    ]


def test_a_readers_error_is_echoed_in_order_with_the_replies_before_it() -> None:
    s = hub()
    ready(s, "A")
    run(s, "A", {"op": "hello", "c": 1, "nick": "ann", "rooms": ["lobby"]})
    bad = {"t": "error", "code": "bad_room", "text": "room must be ...", "ref": "join"}
    out = run(s, "A", {"op": "who", "c": 1, "room": "lobby"}, {"op": "echo", "c": 1, "body": bad},
              {"op": "echo", "c": 1, "body": "not a body"})
    assert bodies(out, worker_topic("A")) == [
        {"t": "members", "room": "lobby", "members": ["ann"]},
        bad,
    ]
