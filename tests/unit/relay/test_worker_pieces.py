"""The worker's pieces without a relay process: bus messages, fan-out, room sync, limits."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from relay.bus import messages as m
from relay.bus.wire import GapCounter
from relay.worker.fanout import Fanout
from relay.worker.limits import FLOOD_WINDOW, Flood, FloodLimit
from relay.worker.roomsync import RoomSync
from relay.worker.writer import Connection
from transports.native import FrameDecoder, NativeServerCodec
from transports.text import TextServerCodec


def test_requests_go_on_the_wire_as_the_hub_reads_them() -> None:
    assert m.Say("lobby", "hi", 7).to_wire(3) == {
        "op": "say", "room": "lobby", "text": "hi", "id": 7, "c": 3}
    assert m.Say("lobby", "hi", None, True).to_wire(3)["action"] is True
    assert m.Hello("ann", ["lobby"], {}, "10.0.0.1").to_wire(1) == {
        "op": "hello", "nick": "ann", "rooms": ["lobby"], "resume": {}, "ip": "10.0.0.1", "c": 1}
    assert m.Fill("r", 4).to_wire() == {"op": "fill", "room": "r", "after": 4}
    assert m.Heartbeat().to_wire() == {"op": "hb"}
    assert m.Gone().to_wire(9) == {"op": "gone", "c": 9}
    assert m.Kick({"nick": "bob"}).to_wire(2) == {"op": "kick", "nick": "bob", "c": 2}
    assert m.op_of(m.WorkerGone("w1").to_wire()) == "worker_gone"


def test_control_items_decode_to_their_types() -> None:
    assert m.decode_control({"t": "_ready", "epoch": 5}) == m.Ready(5)
    assert m.decode_control({"t": "_fill", "room": "r", "messages": []}) == m.Filled("r", [])
    assert m.decode_control({"t": "_credit", "n": 3}) == m.Receipt(3)
    assert m.decode_control({"t": "welcome", "nick": "a"}) is None  # a client's body


class Sent:
    def __init__(self) -> None:
        self.up: list[m.Request] = []
        self.subs: list[bytes] = []


@pytest.fixture
def members() -> Iterator[tuple[list[Connection], list[socket.socket]]]:
    conns, peers = [], []
    for i, codec in enumerate([NativeServerCodec(), NativeServerCodec(), TextServerCodec()]):
        a, b = socket.socketpair()
        b.setblocking(False)
        conns.append(Connection(i, a, "x:1", codec, 1 << 20, lambda c: None))
        peers.append(b)
    yield conns, peers
    for c in conns:
        c.sock.close()
    for p in peers:
        p.close()


def msg(seq: int) -> list[Any]:
    return m.RoomItem({"t": "msg", "room": "lobby", "seq": seq, "ts": 1, "from": "x",
                       "text": f"m{seq}"}).to_wire()


def make(conns: list[Connection]) -> tuple[Fanout, RoomSync, Sent]:
    sent = Sent()
    fanout = Fanout("w1", {}, {}, 1 << 20, 0.0, lambda what, exc: None)
    sync = RoomSync(b"ww1\x00", GapCounter(), fanout, sent.subs.append, sent.subs.append,
                    sent.up.extend)
    for conn in conns:
        sync.subscribe(conn, "lobby")
        sync.joined(conn, "lobby", 0)
    return fanout, sync, sent


def test_fan_out_encodes_once_per_dialect(
        members: tuple[list[Connection], list[socket.socket]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    conns, peers = members
    fanout, sync, sent = make(conns)
    assert sent.subs == [b"rlobby\x00"]  # one subscription for three members
    calls: list[type] = []
    for cls in (NativeServerCodec, TextServerCodec):
        real = cls.encode_fanout

        def counting(body: dict[str, Any], key: Any, real: Any = real, cls: type = cls
                     ) -> bytes:
            calls.append(cls)
            return bytes(real(body, key))

        monkeypatch.setattr(cls, "encode_fanout", staticmethod(counting))
    fanout.fan_out("lobby", [msg(1), msg(2)])
    fanout.flush()
    assert sorted(c.__name__ for c in calls) == ["NativeServerCodec"] * 2 + ["TextServerCodec"] * 2
    for p in peers[:2]:
        assert [f["seq"] for f in FrameDecoder().feed(p.recv(1 << 16))] == [1, 2]
    assert b"m1" in peers[2].recv(1 << 16)
    assert fanout.delivered == 6


def test_room_sync_holds_behind_a_gap_and_fills_in_order(
        members: tuple[list[Connection], list[socket.socket]]) -> None:
    conns, peers = members
    fanout, sync, sent = make(conns)
    sync.room_batch("lobby", [msg(1)])
    sync.room_batch("lobby", [msg(4)])  # 2 and 3 never came
    sync.room_batch("lobby", [msg(5)])
    assert sent.up == [m.Fill("lobby", 1)] and "lobby" in sync.held
    sync.fill(m.Filled("lobby", [msg(s)[0] for s in (1, 2, 3, 4)]))
    fanout.flush()
    assert [f["seq"] for f in FrameDecoder().feed(peers[0].recv(1 << 16))] == [1, 2, 3, 4, 5]
    assert not sync.held and not sync.filling


def test_a_fill_stops_at_the_first_held_msg_which_goes_out_as_it_came(
        members: tuple[list[Connection], list[socket.socket]]) -> None:
    """After a new epoch's jump (a Redis failover) history holds the held msg too:
    the held one (which carries its author's id echo) is the one delivered."""
    conns, peers = members
    fanout, sync, sent = make(conns)
    sync.room_batch("lobby", [msg(1)])
    sync.room_batch("lobby", [msg(1_000_002)])
    assert sent.up == [m.Fill("lobby", 1)]
    copy = {**msg(1_000_002)[0], "text": "history's copy"}
    sync.fill(m.Filled("lobby", [copy]))
    fanout.flush()
    got = [(f["seq"], f["text"]) for f in FrameDecoder().feed(peers[0].recv(1 << 16))]
    assert got == [(1, "m1"), (1_000_002, "m1000002")]


def test_the_last_member_leaving_unsubscribes(
        members: tuple[list[Connection], list[socket.socket]]) -> None:
    conns, _ = members
    _, sync, sent = make(conns)
    for conn in conns:
        sync.leave_all(conn)
    assert sent.subs == [b"rlobby\x00"] * 2 and not sync.subs and not sync.members


def test_flood_limit_drops_notices_once_a_second_and_cuts_a_flood() -> None:
    now = [0.0]
    flood = FloodLimit(1, 1, clock=lambda: now[0])
    assert flood.take() is Flood.ALLOWED
    assert flood.take() is Flood.NOTICE
    assert flood.take() is Flood.DROPPED  # no second notice within the second
    now[0] = 1.5
    assert flood.take() is Flood.ALLOWED  # a token came back
    for _ in range(49):  # the window's drops so far: 2 + 49 = 51, over 10x for 10 s
        flood.take()
    now[0] = FLOOD_WINDOW + 0.1
    assert flood.take() is Flood.ALLOWED  # the bucket refilled its burst of one
    assert flood.take() is Flood.CUT


def test_flood_limit_window_is_a_setting_and_cuts_at_its_bound() -> None:
    """--flood-window 2 at 1 msg/s: a window of 10 drops (half of 10x the rate for
    2 s) ends in a cut, one of 9 does not."""
    for drops, cut in ((10, True), (9, False)):
        now = [0.0]
        flood = FloodLimit(1, 1, window=2.0, clock=lambda now=now: now[0])  # type: ignore[misc]
        assert flood.take() is Flood.ALLOWED  # the burst of one
        for _ in range(drops):
            assert flood.take() is not Flood.ALLOWED
        now[0] = 1.99
        assert flood.take() is Flood.ALLOWED  # a token came back; the window is still open
        now[0] = 2.0
        assert (flood.take() is Flood.CUT) is cut


def test_flood_limit_one_drop_under_the_flood_mark_is_not_cut() -> None:
    now = [0.0]
    flood = FloodLimit(1, 1, clock=lambda: now[0])
    flood.take()
    for _ in range(49):  # 49 drops: one under half of 10x the rate for 10 s
        flood.take()
    now[0] = FLOOD_WINDOW
    flood.take()
    assert flood.take() is not Flood.CUT


def test_flood_window_flag_parses_and_refuses_zero_and_below() -> None:
    from relay.cli import _settings, build_parser
    from relay.config import Settings

    def settings(*argv: str) -> Settings:
        return _settings(build_parser().parse_args(["start", *argv]))

    assert Settings().flood_window == FLOOD_WINDOW == 10.0
    assert settings("--flood-window", "0.5").flood_window == 0.5
    for bad in ("0", "-1"):
        with pytest.raises(SystemExit, match="--flood-window must be more than 0"):
            settings("--flood-window", bad)
