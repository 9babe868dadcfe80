"""Failure stays local, without sockets: batches packed item by item, a hub
request that raises, the error budget and the flood limit's costs."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import zmq

from relay.bus.wire import (
    MAX_NESTING,
    TooDeep,
    check_nesting,
    nesting,
    pack,
    pack_batch,
    room_topic,
    unpack,
    worker_topic,
)
from relay.config import Settings
from relay.hub.process import Hub
from relay.worker.limits import ErrorBudget, TokenBucket
from tests.unit.relay.test_hubstate import bodies, hub, ready, run


def nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# pack_batch -------------------------------------------------------------------

def test_a_batch_packed_item_by_item_is_the_same_array() -> None:
    items = [{"op": "say", "room": "lobby", "text": "é" * 300, "id": [1, {"a": None}]},
             {"op": "hb"}, [1, 2.5, b"\x00", True]]
    assert pack_batch(items, lambda item, exc: pytest.fail(str(exc))) == pack(items)
    many = [{"op": "ping", "id": i} for i in range(70000)]  # array32 header
    assert unpack(pack_batch(many, lambda item, exc: None) or b"") == many


def test_an_item_msgpack_refuses_costs_only_itself() -> None:
    refused: list[tuple[Any, str]] = []

    def refuse(item: Any, exc: Exception) -> Any:
        refused.append((item, type(exc).__name__))
        return {"error": item["c"]} if item["c"] == 2 else None

    items = [{"c": 1, "after": 2**64}, {"c": 2, "id": nest(1100)}, {"c": 3, "ok": True}]
    data = pack_batch(items, refuse)
    assert unpack(data or b"") == [{"error": 2}, {"c": 3, "ok": True}]
    assert [name for _, name in refused] == ["OverflowError", "ValueError"]
    assert pack([1, 2]) == b"\x92\x01\x02"  # the shared packer was reset after each failure
    assert pack_batch([{"c": 1, "after": 2**64}], lambda item, exc: None) is None


def test_request_items_nest_at_most_max_nesting_levels() -> None:
    at_bound = {"op": "ping", "id": nest(MAX_NESTING - 1)}  # the map is one level
    assert nesting(at_bound) == MAX_NESTING
    check_nesting(at_bound, pack(at_bound))
    over = {"op": "ping", "id": nest(MAX_NESTING)}
    with pytest.raises(TooDeep):
        check_nesting(over, pack(over))
    assert pack_batch([over], lambda item, exc: None, limit_nesting=True) is None
    assert pack_batch([over], lambda item, exc: pytest.fail("limited")) is not None
    assert nesting(nest(5000)) == 5000  # iterative: no RecursionError
    assert nesting("x" * 100) == 0 and nesting({"a": [{}]}) == 3


# The hub ------------------------------------------------------------------------

def test_a_request_that_raises_costs_its_sender_an_error(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    s = hub()
    ready(s, "A")
    run(s, "A", {"op": "hello", "c": 1, "nick": "ann", "rooms": ["lobby"]})
    out = run(s, "A", {"op": "history", "c": 1, "room": "lobby", "after": 2**63},
              {"op": "history", "c": 1, "room": "lobby", "limit": "many"},
              {"op": "who", "c": 1, "room": "lobby"})
    got = bodies(out, worker_topic("A"))
    assert [(b["t"], b.get("code"), b.get("ref")) for b in got] == [
        ("error", "bad_field", "history"), ("error", "bad_field", "history"),
        ("members", None, None)]
    assert s.contained == 2


def test_a_held_request_that_raises_does_not_stop_the_resync() -> None:
    s = hub()
    run(s, "A", {"op": "say", "c": 1, "room": "lobby", "text": "x"},  # unknown worker: held
        {"op": "history", "c": 1, "room": "lobby", "after": 2**63})
    out = run(s, "A", {"op": "sync", "clients": [[1, "ann", {"lobby": 0}]]})
    got = bodies(out, worker_topic("A"))
    assert [b.get("code") for b in got if b.get("t") == "error"] == ["bad_field"]
    assert [b["seq"] for b in bodies(out, room_topic("lobby"))] == [1]


@pytest.fixture
def bus_hub() -> Any:
    ctx: zmq.Context[Any] = zmq.Context()
    h = Hub(Settings(), "inproc://hub-test", ctx)
    sub = ctx.socket(zmq.SUB)
    sub.connect("inproc://hub-test")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    yield h, sub
    sub.close(linger=0)
    h.sock.close(linger=0)
    ctx.term()


def _received(sub: zmq.Socket[bytes]) -> list[tuple[bytes, Any]]:
    got = []
    while sub.poll(200):
        topic, _header, body = sub.recv_multipart()
        got.append((topic, unpack(body)))
    return got


def test_a_reply_that_cannot_be_packed_becomes_an_error_to_its_client(bus_hub: Any) -> None:
    h, sub = bus_hub
    w = worker_topic("A")
    h.publish([(w, [1, {"t": "pong", "id": nest(1100)}]), (w, [2, {"t": "pong"}]),
               (room_topic("lobby"), [{"t": "msg", "seq": 1}, "A", 3, 2**64]),
               (room_topic("lobby"), [{"t": "msg", "seq": 2}, None, None, None])])
    got = _received(sub)
    assert got[0][0] == w and got[0][1][0][0] == 1
    assert got[0][1][0][1]["code"] == "bad_field" and got[0][1][1] == [2, {"t": "pong"}]
    # The room message goes out without the id; its author hears why, last.
    assert got[1] == (room_topic("lobby"), [[{"t": "msg", "seq": 1}, "A", 3, None],
                                            [{"t": "msg", "seq": 2}, None, None, None]])
    assert got[2][0] == w and got[2][1][0][0] == 3 and got[2][1][0][1]["ref"] == "say"
    assert h.topic_seq == {w: 2, room_topic("lobby"): 1}


# The error budget and the flood limit's costs -------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_error_budget_allows_exactly_its_limit_per_window() -> None:
    clock = Clock()
    budget = ErrorBudget(100, 10.0, clock)
    assert all(budget.charge() for _ in range(100))
    assert not budget.charge()  # the 101st within 10 s
    clock.now = 9.99
    assert not budget.charge()
    clock.now = 10.0  # the first hundred (at t=0) left the window
    assert budget.charge()
    assert len(budget._stamps) <= 101  # bounded, however many are charged
    assert budget.error()["code"] == "too_many_errors"


def test_error_budget_of_zero_is_off() -> None:
    budget = ErrorBudget(0)
    assert all(budget.charge() for _ in range(10000))


def test_token_bucket_charges_a_cost_capped_at_a_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(10, 40, clock)
    assert bucket.take(25)
    assert not bucket.take(20)  # 15 left: nothing spent on a refusal
    assert bucket.take(15)
    clock.now = 4.0  # 40 tokens back
    assert bucket.take(1000)  # a page of replies costs at most a burst
    assert not bucket.take(1)
    assert TokenBucket(0, 1).take(10**6)  # rate 0: off


def test_msgpack_unpacks_what_request_nesting_allows_inside_a_batch() -> None:
    """The margin MAX_NESTING leaves: a reply wraps a request's value in at
    most three more levels (batch, [conn, body], body) and must still unpack."""
    deepest = nest(MAX_NESTING - 1)
    reply = [[1, {"t": "pong", "id": deepest}]]
    assert msgpack.unpackb(msgpack.packb(reply)) == reply
