"""Long send rounds look at the bus as they go (fanout.Fanout.flush, busdrain.BusDrain)."""

from __future__ import annotations

from typing import Any, cast

import zmq

from relay.bus import messages as m
from relay.worker.busdrain import MAX_LOOK, BusDrain
from relay.worker.fanout import MID_ROUND_LOOK, Fanout
from relay.worker.writer import Connection
from transports.native import FrameDecoder, NativeServerCodec


class Member:
    """What fan-out uses of a Connection, recording each send."""

    def __init__(self, cid: int) -> None:
        self.id = cid
        self.fan_key = None
        self.codec = NativeServerCodec()
        self.sends: list[list[int]] = []

    def send(self, data: bytes) -> bool:
        self.sends.append([f["seq"] for f in FrameDecoder().feed(data)])
        return True


def msg(seq: int) -> list[Any]:
    return m.RoomItem({"t": "msg", "room": "lobby", "seq": seq, "ts": 1, "from": "x",
                       "text": f"m{seq}"}).to_wire()


def room_of(count: int) -> tuple[Fanout, list[Member]]:
    members = [Member(i) for i in range(count)]
    room = {"lobby": cast(dict[int, Connection], {c.id: c for c in members})}
    return Fanout("w1", room, {}, 1 << 20, 0.02, lambda what, exc: None), members


def test_members_a_long_round_has_not_reached_get_what_came_in_the_same_send() -> None:
    fanout, members = room_of(2 * MID_ROUND_LOOK + 10)
    looks: list[int] = []

    def look() -> bool:  # msg 2 arrives while the first MID_ROUND_LOOK are written
        looks.append(len(looks))
        if len(looks) == 1:
            fanout.fan_out("lobby", [msg(2)])
            return True
        return False

    fanout.mid_round = look
    fanout.fan_out("lobby", [msg(1)])
    fanout.flush()
    assert len(looks) == 2  # after each full block of members, none after the last
    written, reached_later = members[:MID_ROUND_LOOK], members[MID_ROUND_LOOK:]
    assert all(c.sends == [[1]] for c in written)
    assert all(c.sends == [[1, 2]] for c in reached_later)  # one send, in order
    # The members written before msg 2 came get it in the next round, after the linger.
    assert fanout.rounds.due == fanout.rounds.last_end + fanout.rounds.linger()
    fanout.flush()
    assert all(c.sends == [[1], [2]] for c in written)
    assert all(c.sends == [[1, 2]] for c in reached_later)
    assert len(looks) == 2  # that round had MID_ROUND_LOOK members: it did not look


def test_a_round_of_mid_round_look_members_never_looks() -> None:
    looked: list[int] = []

    def look() -> bool:
        looked.append(1)
        return False

    fanout, members = room_of(MID_ROUND_LOOK)
    fanout.mid_round = look
    fanout.fan_out("lobby", [msg(1)])
    fanout.flush()
    assert looked == [] and all(c.sends == [[1]] for c in members)
    fanout, members = room_of(MID_ROUND_LOOK + 1)
    fanout.mid_round = look
    fanout.fan_out("lobby", [msg(1)])
    fanout.flush()
    assert looked == [1] and all(c.sends == [[1]] for c in members)
    assert fanout.rounds.due is None  # nothing came in: nothing scheduled


class Bus:
    """A zmq SUB socket's recv_multipart(NOBLOCK) over a list of messages."""

    def __init__(self, messages: list[list[bytes]]) -> None:
        self.messages = messages

    def recv_multipart(self, flags: int) -> list[bytes]:
        assert flags == zmq.NOBLOCK
        if not self.messages:
            raise zmq.Again()
        return self.messages.pop(0)


def test_a_look_takes_room_batches_and_keeps_the_first_other_message_in_order() -> None:
    fanout, _ = room_of(1)
    handled: list[bytes] = []
    drain = BusDrain(fanout, lambda topic, header, body: handled.append(body))
    bus = Bus([[b"rlobby\x00", b"h", b"1"], [b"rlobby\x00", b"h", b"2"],
               [b"ww1\x00", b"h", b"welcome"], [b"rlobby\x00", b"h", b"3"]])
    sock = cast(zmq.Socket[bytes], bus)
    assert drain.look(sock)
    assert handled == [b"1", b"2"] and drain.kept is not None
    assert not drain.look(sock)  # a kept message waits for the drain: no look past it
    drain.drain(sock)
    assert handled == [b"1", b"2", b"welcome", b"3"] and drain.kept is None


def test_no_look_while_pacing_leaves_room_traffic_on_the_bus() -> None:
    fanout, _ = room_of(1)
    drain = BusDrain(fanout, lambda topic, header, body: None)
    bus = Bus([[b"rlobby\x00", b"h", b"1"]])
    drain.polled = False
    assert not drain.look(cast(zmq.Socket[bytes], bus))
    assert len(bus.messages) == 1


def test_a_look_takes_at_most_max_look_room_batches() -> None:
    fanout, _ = room_of(1)
    handled: list[bytes] = []
    drain = BusDrain(fanout, lambda topic, header, body: handled.append(body))
    bus = Bus([[b"rlobby\x00", b"h", str(i).encode()] for i in range(MAX_LOOK + 1)])
    assert drain.look(cast(zmq.Socket[bytes], bus))
    assert len(handled) == MAX_LOOK and len(bus.messages) == 1  # the rest waits for the drain
