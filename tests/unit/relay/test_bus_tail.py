"""A dropped tail of a burst is seen within one heartbeat, and refilled from history."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from relay.bus.link import BusLink
from relay.bus.messages import Filled, Heartbeat
from relay.bus.wire import ANNOUNCE, GapCounter, room_topic, unpack, worker_topic
from relay.config import Settings
from relay.hub.process import Hub
from relay.hub.state import HubState, Out
from relay.worker.admission import Admission
from relay.worker.busloop import BusLoop
from relay.worker.inbox import Inbox
from relay.worker.writer import Connection
from transports.native import FrameDecoder, NativeServerCodec


def test_catch_up_counts_a_tail_once() -> None:
    gaps = GapCounter()
    topic = b"rlobby\x00"
    assert gaps.check(topic, "hub", 1, 1) == 0
    assert gaps.check(topic, "hub", 1, 2) == 0
    assert gaps.catch_up(topic, "hub", 1, 5) == 3  # 3, 4, 5 never came
    assert gaps.check(topic, "hub", 1, 6) == 0  # not counted twice
    assert gaps.catch_up(topic, "hub", 1, 6) == 0
    assert (gaps.gaps, gaps.missing) == (1, 3)
    assert gaps.catch_up(b"other", "hub", 1, 9) == 0  # no baseline, no claim


def test_hub_heartbeat_names_the_last_seq_of_each_topic() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    hub = Hub(Settings(), "inproc://tail-test", ctx)
    sub = ctx.socket(zmq.XSUB)
    sub.connect("inproc://tail-test")
    for topic in (ANNOUNCE, room_topic("lobby")):
        sub.send(b"\x01" + topic)
    hub.sock.recv_multipart()  # the subscriptions, as XPUB sees them
    hub.sock.recv_multipart()
    out: Out = []
    hub.state.handle("w1", {"op": "hb", "hello": True}, out, 0.0)
    hub.state.handle("w1", {"op": "hello", "c": 1, "nick": "a", "rooms": ["lobby"]}, out, 0.0)
    for i in range(3):
        hub.state.handle("w1", {"op": "say", "c": 1, "room": "lobby", "text": str(i)}, out, 0.0)
    out.append((ANNOUNCE, {"t": "_hub", "epoch": hub.epoch}))
    hub.publish(out)
    got = []
    while True:
        topic, header, body = sub.recv_multipart()
        got.append((topic, unpack(header), unpack(body)))
        if topic == ANNOUNCE:
            break
    beat = got[-1][2][0]
    lobby = room_topic("lobby")
    last_lobby_bus_seq = [h[2] for t, h, _ in got if t == lobby][-1]
    assert beat["seqs"][lobby] == [last_lobby_bus_seq, 3]  # bus seq, room msg seq
    assert worker_topic("w1") in beat["seqs"]
    sub.close(0)
    hub.sock.close(0)
    ctx.term()


class Recorder:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes], copy: bool = True) -> None:
        self.sent.append(frames)


def worker_bus(ctx: zmq.Context[Any]) -> BusLoop:
    settings = Settings()
    inbox = Inbox(settings.max_inflight)
    return BusLoop(ctx, "w1", "inproc://unused", settings,
                   Admission(settings, 1, lambda req: None), inbox)


@pytest.fixture
def bus_with_members() -> Iterator[tuple[BusLoop, list[socket.socket], Recorder]]:
    ctx: zmq.Context[Any] = zmq.Context()
    bus = worker_bus(ctx)
    rec = Recorder()
    bus.link = BusLink(ctx, "inproc://unused", "w1", hwm=1000)
    bus.link.sock.close(0)
    bus.link.sock = rec  # type: ignore[assignment]
    peers, members = [], {}
    for i in range(3):
        a, b = socket.socketpair()
        b.setblocking(False)
        conn = Connection(i, a, "x:1", NativeServerCodec(), 1 << 20, lambda c: None)
        bus.conns[i] = members[i] = conn
        peers.append(b)
    bus.sync.members["lobby"] = members
    bus.sync.subs["lobby"] = 3
    yield bus, peers, rec
    for p in peers:
        p.close()
    ctx.term()


def msg(seq: int) -> dict[str, Any]:
    return {"t": "msg", "room": "lobby", "seq": seq, "ts": 1, "from": "x", "text": f"m{seq}"}


def test_worker_refills_a_dropped_tail_in_order(
        bus_with_members: tuple[BusLoop, list[socket.socket], Recorder]) -> None:
    bus, peers, rec = bus_with_members
    topic = room_topic("lobby")
    bus.gaps.check(topic, "hub", 7, 1)
    bus.fanout.fan_out("lobby", [[msg(1), None, None, None]])
    bus.fanout.flush()
    # The beat says the bus carried up to bus seq 4 and room seq 4: 3 messages dropped.
    bus.sync.check_tails({topic: [4, 4]}, "hub", 7)
    assert bus.gaps.missing == 3
    (frames,) = rec.sent
    assert unpack(frames[2]) == [{"op": "fill", "room": "lobby", "after": 1}]
    bus.sync.check_tails({topic: [4, 4]}, "hub", 7)
    assert len(rec.sent) == 1  # one fill on its way at a time
    # History answers with 1..4; members get 2, 3, 4 (never 1 again), in order.
    bus.sync.fill(Filled("lobby", [msg(s) for s in range(1, 5)]))
    bus.fanout.flush()
    for p in peers:
        seqs = [f["seq"] for f in FrameDecoder().feed(p.recv(1 << 16))]
        assert seqs == [1, 2, 3, 4]
    assert bus.sync.room_seq["lobby"] == 4


def test_fill_never_delivers_what_live_traffic_already_passed(
        bus_with_members: tuple[BusLoop, list[socket.socket], Recorder]) -> None:
    bus, peers, rec = bus_with_members
    bus.fanout.fan_out("lobby", [[msg(1), None, None, None], [msg(5), None, None, None]])
    bus.sync.fill(Filled("lobby", [msg(s) for s in range(2, 6)]))
    bus.fanout.flush()
    seqs = [f["seq"] for f in FrameDecoder().feed(peers[0].recv(1 << 16))]
    assert seqs == [1, 5]  # the client sees the jump and fills it itself


def test_hub_fill_answers_from_history() -> None:
    s = HubState(epoch=1, history_len=3, clock=lambda: 1)
    out: Out = []
    s.handle("w1", {"op": "hb", "hello": True}, out, 0.0)
    s.handle("w1", {"op": "hello", "c": 1, "nick": "a", "rooms": ["r"]}, out, 0.0)
    for i in range(5):
        s.handle("w1", {"op": "say", "c": 1, "room": "r", "text": str(i)}, out, 0.0)
    out = []
    s.handle("w1", {"op": "fill", "room": "r", "after": 1}, out, 0.0)
    ((topic, (conn, body)),) = out
    assert topic == worker_topic("w1") and conn is None and body["t"] == "_fill"
    assert [m["seq"] for m in body["messages"]] == [3, 4, 5]  # what history still has


def test_no_lost_wakeup_when_a_request_arrives_mid_wake(monkeypatch: pytest.MonkeyPatch) -> None:
    """Invariant: if the wake flag is set, the eventfd is readable (someone will wake)."""
    import os
    import select

    bus = Inbox(1000)
    bus.submit(None, Heartbeat())  # first request: flag set, eventfd written
    real_read = os.eventfd_read

    def read_with_a_producer_racing_in(fd: int) -> int:
        bus.submit(None, Heartbeat())  # a client thread queues right now
        return real_read(fd)

    monkeypatch.setattr(os, "eventfd_read", read_with_a_producer_racing_in)
    bus.consume_wake()
    readable = bool(select.select([bus.wake_fd], [], [], 0)[0])
    assert not bus._wake_pending or readable
    assert len(bus.queue) == 2  # both requests are there for the drain that follows
    # And the next request wakes the bus thread again.
    monkeypatch.setattr(os, "eventfd_read", real_read)
    bus.submit(None, Heartbeat())
    assert select.select([bus.wake_fd], [], [], 0)[0]


def test_a_jump_holds_live_traffic_until_the_fill_in_order(
        bus_with_members: tuple[BusLoop, list[socket.socket], Recorder]) -> None:
    bus, peers, rec = bus_with_members
    bus.sync.room_batch("lobby", [[msg(1), None, None, None]])
    bus.fanout.flush()
    # 2..4 never came (a restarted hub published before we re-subscribed).
    bus.sync.room_batch("lobby", [[msg(5), None, None, None]])
    bus.sync.room_batch("lobby", [[msg(6), None, None, None]])
    (frames,) = rec.sent
    assert unpack(frames[2]) == [{"op": "fill", "room": "lobby", "after": 1}]
    bus.fanout.flush()
    for p in peers:  # nothing past the gap went out
        assert [f["seq"] for f in FrameDecoder().feed(p.recv(1 << 16))] == [1]
    # History answers 2..5 (5 arrived meanwhile): members get 2..6 once each, in order.
    bus.sync.fill(Filled("lobby", [msg(s) for s in range(2, 6)]))
    bus.fanout.flush()
    for p in peers:
        assert [f["seq"] for f in FrameDecoder().feed(p.recv(1 << 16))] == [2, 3, 4, 5, 6]
    bus.sync.room_batch("lobby", [[msg(7), None, None, None]])
    assert "lobby" not in bus.sync.held


def test_a_fill_that_never_comes_releases_the_hold(
        bus_with_members: tuple[BusLoop, list[socket.socket], Recorder],
        monkeypatch: pytest.MonkeyPatch) -> None:
    bus, peers, rec = bus_with_members
    bus.sync.room_batch("lobby", [[msg(1), None, None, None]])
    bus.sync.room_batch("lobby", [[msg(4), None, None, None]])
    assert "lobby" in bus.sync.held
    deadline = bus.sync.held["lobby"][0]
    import relay.worker.roomsync as wb

    monkeypatch.setattr(wb.time, "monotonic", lambda: deadline + 0.01)
    bus.sync.release_stale_holds()
    assert "lobby" not in bus.sync.held and "lobby" not in bus.sync.filling
    assert [f["seq"] for f in FrameDecoder().feed(peers[0].recv(1 << 16))] == [1, 4]
