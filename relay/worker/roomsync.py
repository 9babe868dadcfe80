"""Room sync: which rooms this worker follows on the bus, and their seqs kept whole.

Subscriptions follow local membership: a room's topic is subscribed when the
first local connection asks to be in it, before its request goes upstream
(XSUB keeps that order, so the subscription is in place by the time the hub
decides the join), and unsubscribed when the last one leaves.

Gaps are filled, never passed on silently: a room batch whose first msg
skips seqs (the bus dropped some, or a restarted hub published before our
subscription was back) is held, the hub is asked for the missing messages
(`Fill`), and the fill goes out first, so members still see every seq in
order. A hold lasts at most FILL_WAIT; then what is held goes out with the
gap in it. A lost tail is found from the hub's heartbeat (`check_tails`).
After a hub restart, `resync` tells the new hub who is here.

No sockets here: subscriptions and requests go out through callables, and
batches to the fan-out (fanout.py), so the tests drive it directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from relay.bus.messages import Fill, Filled, Request, RoomItem, Sync
from relay.bus.wire import GapCounter, room_topic, topic_room
from relay.worker.fanout import Fanout, Members
from relay.worker.writer import Connection

log = logging.getLogger("chat_relay.worker")

FILL_WAIT = 2.0  # seconds a room's live traffic may wait behind a fill from history


class RoomSync:
    def __init__(self, my_topic: bytes, gaps: GapCounter, fanout: Fanout,
                 subscribe: Callable[[bytes], None], unsubscribe: Callable[[bytes], None],
                 send_up: Callable[[list[Request]], None]) -> None:
        self.my_topic = my_topic
        self.gaps = gaps
        self.fanout = fanout
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._send_up = send_up
        self.members: Members = fanout.members  # confirmed local members
        self.room_seq = fanout.room_seq  # last msg seq seen per room (for a hub resync)
        self.subs: dict[str, int] = {}  # room -> local connections holding a subscription
        self.fresh: set[str] = set()  # subscribed rooms not yet confirmed by a `joined`
        self.filling: set[str] = set()  # rooms with a fill request on its way
        # Rooms whose live batches wait behind a fill: (give-up time, batches).
        self.held: dict[str, tuple[float, list[list[list[Any]]]]] = {}

    # Subscriptions and membership ----------------------------------------------

    def subscribe(self, conn: Connection, room: str) -> None:
        if room in conn.sub_rooms:
            return
        conn.sub_rooms.add(room)
        count = self.subs.get(room, 0)
        if count == 0:
            self._subscribe(room_topic(room))
            self.fresh.add(room)
        self.subs[room] = count + 1

    def unsubscribe(self, conn: Connection, room: str) -> None:
        if room not in conn.sub_rooms:
            return
        conn.sub_rooms.discard(room)
        count = self.subs.get(room, 0) - 1
        if count <= 0:
            self.subs.pop(room, None)
            self._unsubscribe(room_topic(room))
            self.gaps.forget(room_topic(room))
            self.fresh.discard(room)
            self.filling.discard(room)
            self.held.pop(room, None)
            self.room_seq.pop(room, None)
        else:
            self.subs[room] = count

    def joined(self, conn: Connection, room: str, seq: int) -> None:
        """The hub confirmed `conn` in `room` as of `seq`: fan-out starts here."""
        if room in self.fresh:
            self.fresh.discard(room)
            self.gaps.forget(room_topic(room))  # counting starts after this point
        conn.rooms.add(room)
        self.members.setdefault(room, {})[conn.id] = conn
        self.room_seq.setdefault(room, seq)

    def parted(self, conn: Connection, room: str) -> None:
        conn.rooms.discard(room)
        self._drop_member(conn, room)
        self.unsubscribe(conn, room)

    def on_reply(self, conn: Connection, t: Any, body: dict[str, Any]) -> bool:
        """What a hub reply to `conn` changes in its rooms; True when it refused
        the hello (its subscriptions are dropped, and the reader waits on it)."""
        if t == "joined":
            self.joined(conn, body["room"], body["seq"])
        elif t == "parted":
            self.parted(conn, body["room"])
        elif t == "error" and body.get("code") == "too_many_rooms":
            room = body.get("room")
            if isinstance(room, str) and room not in conn.rooms:
                self.unsubscribe(conn, room)  # the join was refused: no fan-out for it
        elif t == "error" and body.get("ref") == "hello" and not conn.ready:
            for room in list(conn.sub_rooms):
                self.unsubscribe(conn, room)
            return True
        return False

    def leave_all(self, conn: Connection) -> None:
        """Take `conn` out of every room's fan-out and drop its subscriptions."""
        for room in list(conn.rooms):
            self._drop_member(conn, room)
        conn.rooms.clear()
        for room in list(conn.sub_rooms):
            self.unsubscribe(conn, room)

    def _drop_member(self, conn: Connection, room: str) -> None:
        members = self.members.get(room)
        if members is not None:
            members.pop(conn.id, None)
            if not members:
                del self.members[room]

    def follows(self, topic: bytes) -> tuple[bool, bool]:
        """(ours, fresh) for a room topic: subscribed at all, and not yet confirmed.

        A batch for a room we left is still in flight: not ours, not a gap.
        Until a `joined` proves our subscription is in place, messages may be
        stale ones from an earlier subscription: no baseline yet.
        """
        room = topic_room(topic)
        return room in self.subs, room in self.fresh

    # Gaps: hold, fill, release ----------------------------------------------------

    def room_batch(self, room: str, items: list[list[Any]]) -> None:
        """A room batch off the bus: deliver it, or hold it behind a gap being filled."""
        held = self.held.get(room)
        if held is not None:
            held[1].append(items)
            return
        last = self.room_seq.get(room)
        first = next((i[0]["seq"] for i in items if i[0].get("t") == "msg"), None)
        if (last is not None and first is not None and first > last + 1
                and room in self.members and room not in self.filling):
            log.warning("%s jumped from seq %d to %d on the bus; filling from history",
                        room, last, first)
            self.held[room] = (time.monotonic() + FILL_WAIT, [items])
            self.filling.add(room)
            self._send_up([Fill(room, last)])
            return
        self.fanout.fan_out(room, items)

    def fill(self, filled: Filled) -> None:
        """Messages the bus dropped, resent from history: deliver only what is newer
        than what members already have (so nothing is ever out of order), then
        whatever was held behind the gap."""
        room = filled.room
        self.filling.discard(room)
        last = self.room_seq.get(room, 0)
        # What is held behind the gap goes out as it came (with its author's id
        # echo), not as history's copy: fill only up to the first held msg. (A
        # new epoch's jump, after a Redis failover, makes that copy the only one.)
        upto = min((i[0]["seq"] for batch in self.held.get(room, (0.0, []))[1] for i in batch
                    if i[0].get("t") == "msg"), default=None)
        missing = [RoomItem(m).to_wire() for m in filled.messages
                   if m["seq"] > last and (upto is None or m["seq"] < upto)]
        if missing and room in self.members:
            log.warning("refilled %d message(s) of %s the bus dropped", len(missing), room)
            self.fanout.fan_out(room, missing)
        self._release_held(room)

    def _release_held(self, room: str) -> None:
        held = self.held.pop(room, None)
        if held is None:
            return
        for items in held[1]:
            last = self.room_seq.get(room, 0)
            # The fill may already have delivered the first messages held here.
            fresh = [i for i in items if i[0].get("t") != "msg" or i[0]["seq"] > last]
            if fresh:
                self.fanout.fan_out(room, fresh)

    def release_stale_holds(self) -> None:
        """A fill that never came (the hub died again) must not stall a room."""
        now = time.monotonic()
        for room, (deadline, _) in list(self.held.items()):
            if now >= deadline:
                log.warning("no fill for %s within %.1f s; delivering with the gap", room,
                            FILL_WAIT)
                self.filling.discard(room)
                self._release_held(room)
                self.fanout.flush()

    def check_tails(self, seqs: dict[bytes, list[Any]], origin: str, epoch: int) -> None:
        """Count bus messages that never came, and ask the hub to resend a room's."""
        fills: list[Request] = []
        for topic, (bus_seq, msg_seq) in seqs.items():
            if topic == self.my_topic:
                mine = True
            elif topic[:1] == b"r":
                room = topic_room(topic)
                if room not in self.subs or room in self.fresh:
                    continue
                mine = False
            else:
                continue
            missed = self.gaps.catch_up(topic, origin, epoch, bus_seq)
            if missed:
                log.warning("bus gap on %r: the last %d message(s) from %s were dropped",
                            topic, missed, origin)
            if mine or msg_seq is None:
                continue
            last = self.room_seq.get(room)
            if last is not None and msg_seq > last and room in self.members \
                    and room not in self.filling:
                self.filling.add(room)
                fills.append(Fill(room, last))
        if fills:
            self._send_up(fills)

    def resync(self, conns: Iterable[Connection]) -> Sync:
        """The hub forgot us (it restarted): who is here, and in which rooms as of which seq."""
        clients = [
            [c.id, c.nick, {room: self.room_seq.get(room, 0) for room in c.rooms}]
            for c in conns
            if c.ready and c.nick
        ]
        log.warning("hub asked for a resync; re-announcing %d client(s)", len(clients))
        return Sync(clients)
