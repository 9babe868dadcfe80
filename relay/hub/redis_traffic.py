"""The Redis engine's traffic: the wake's output out through Redis, and back in.

Out (`outgoing`): one pipeline per wake. Each run of a room's msgs is one
SEQUENCE call (seq, stream, publish, atomically); presence is published on
the room's channel in the same pipeline, so it keeps its place among the
msgs. Replies for another host's worker go on that host's channel,
announcements (bans, blocks) on the relay-wide one and on our own bus.
Room items are not published here: they come back by the subscription.

In (`incoming`): the room channel of every room with local members, in
Redis's order, which for one room is seq order. A batch that skips seqs
(published before our subscription was live, or lost while Redis was away)
is preceded by the missing msgs read from the stream, and anything at or
below what this host already published is dropped, so our bus carries each
room's msgs once, in seq order, like a single hub's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from relay.bus.wire import ANNOUNCE, pack, room_topic, unpack
from relay.hub import redis_scripts as lua
from relay.hub.engine import EngineUnavailable
from relay.hub.redis_feed import Feed
from relay.hub.redis_link import Link
from relay.hub.replies import Body, Out
from relay.hub.replies import to as reply_to
from transports.errors import error_body as error

log = logging.getLogger("chat_relay.hub")

FILL_MAX = 10_000  # msgs read from a stream to fill one gap


def entry_body(entry: tuple[bytes, dict[bytes, bytes]]) -> Body:
    """A stream entry as the msg body it holds, its seq taken from its id."""
    body: Body = unpack(entry[1][b"b"])
    body["seq"] = int(entry[0].split(b"-", 1)[0])
    return body


class Traffic:
    """Publishing through Redis and taking in what the channels carry."""

    def __init__(self, link: Link, feed: Feed, host: str, history: int,
                 is_local: Callable[[str], bool], host_of: Callable[[str], str | None]) -> None:
        self.link = link
        self.feed = feed
        self.host = host
        self.history = history
        self.is_local = is_local  # worker id -> held by this host?
        self.host_of = host_of    # worker id -> the host that holds it, if known
        self.delivered: dict[str, int] = {}  # room -> last seq published on our bus
        # room -> seq -> our own item, until it is delivered: a gap filled from the
        # stream still tells the author (its `id` echo), which the stream does not keep.
        self._own: dict[str, dict[int, Any]] = {}
        self._check: set[str] = set()  # rooms whose tail to check for missed msgs
        # Members of other hosts' clients this hub took out of a room (a kick, a
        # ban): told to their host, which then forgets them without a second part.
        self._forget: dict[str, list[Any]] = {}
        self.on_forgotten: Callable[[str, int, str], None] = lambda worker, conn, room: None

    # Subscriptions --------------------------------------------------------------

    def watch(self, room: str) -> None:
        """A first local member: subscribe, and start from the room's seq now."""
        if room in self.delivered:
            return
        seq = self.link.run(lambda r: r.get(lua.room_key(room, "seq")))
        self.delivered[room] = int(seq or 0)
        self.feed.subscribe(lua.room_key(room, "ch"))

    def unwatch(self, room: str) -> None:
        if self.delivered.pop(room, None) is not None:
            self.feed.unsubscribe(lua.room_key(room, "ch"))
            self._check.discard(room)
            self._own.pop(room, None)

    def forget(self, host: str, worker: str, conn: int, room: str) -> None:
        """Tell `host` (next wake) that its client left `room` by our doing."""
        self._forget.setdefault(host, []).append([worker, conn, room])

    def check_all(self) -> None:
        """Check every watched room's tail at the next chance (heartbeat, resync)."""
        self._check.update(self.delivered)

    # Out --------------------------------------------------------------------------

    def outgoing(self, out: Out) -> Out:
        local: Out = []
        calls: list[tuple[str, str, list[Any]]] = []  # (kind, room, items) per command
        remote: dict[str, Out] = {}
        shout: list[Any] = []
        i, n = 0, len(out)
        while i < n:
            topic, item = out[i]
            if topic[:1] == b"r":
                room = topic[1:-1].decode()
                is_msg = item[0].get("t") == "msg"
                j = i + 1
                while (j < n and out[j][0] == topic
                       and (out[j][1][0].get("t") == "msg") == is_msg):
                    j += 1
                calls.append(("msg" if is_msg else "pres", room, [x for _, x in out[i:j]]))
                i = j
                continue
            i += 1
            if topic[:1] == b"w":
                worker = topic[1:-1].decode()
                host = None if self.is_local(worker) else self.host_of(worker)
                if host is None or host == self.host:
                    local.append((topic, item))
                else:
                    remote.setdefault(host, []).append((topic, item))
            else:
                local.append((topic, item))
                if topic == ANNOUNCE and isinstance(item, dict) and item.get("t") != "_hub":
                    shout.append(item)
        if calls or remote or shout or self._forget:
            self._send(calls, remote, shout, local)
        return local

    def _send(self, calls: list[tuple[str, str, list[Any]]], remote: dict[str, Out],
              shout: list[Any], local: Out) -> None:
        now = str(time.time_ns() // 1_000_000)
        forget, self._forget = self._forget, {}

        def fill(p: Any) -> None:
            for kind, room, items in calls:
                channel = lua.room_key(room, "ch")
                if kind == "pres":
                    self.link.publish(p, channel, b"p\n" + pack(items))
                    continue
                floor = self.delivered.get(room, 0)
                bodies = [pack({k: v for k, v in it[0].items() if k != "seq"}) for it in items]
                self.link.sequence(
                    keys=[lua.room_key(room, "seq"), lua.room_key(room, "epoch"),
                          lua.room_key(room, "log")],
                    args=[channel, self.history, floor, now, pack(items), *bodies], client=p)
            for host, parted in forget.items():  # before the replies that cut them
                self.link.publish(p, lua.host_key(host, "ch"), b"f\n" + pack(parted))
            for host, items in remote.items():
                self.link.publish(p, lua.host_key(host, "ch"), b"w\n" + pack(items))
            if shout:
                self.link.publish(p, lua.ALL_CHANNEL, b"a\n" + pack([self.host, shout]))

        try:
            results = self.link.pipe(fill)
        except EngineUnavailable:
            results = [None] * len(calls)
        for (kind, room, items), res in zip(calls, results, strict=False):
            if kind == "pres" and (res is None or isinstance(res, Exception)):
                local.extend((room_topic(room), it) for it in items)  # our members, at least
            elif kind == "msg" and (res is None or isinstance(res, Exception)):
                if isinstance(res, Exception):
                    log.error("sequencing %d msg(s) of %s failed: %s", len(items), room, res)
                for it in items:
                    if isinstance(it[1], str) and isinstance(it[2], int):
                        reply_to(local, (it[1], it[2]), unavailable(it[3]))
            elif kind == "msg":
                if room in self.delivered:
                    own = self._own.setdefault(room, {})
                    for offset, it in enumerate(items):
                        own[int(res[0]) + offset] = it
                if res[2]:
                    log.warning("%s started a new epoch %s from seq %s (its seq in redis was lost, "
                                "or may be stale after a failover)",
                                room, res[1], res[0])

    # In ---------------------------------------------------------------------------

    def incoming(self) -> Out:
        out: Out = []
        for entry in self.feed.drain():
            if entry is None:
                self.check_all()  # the subscription was down: look for what we missed
                continue
            channel, data = entry
            try:
                self._take(channel, data, out)
            except EngineUnavailable:
                self._check.add(channel[len(lua.PREFIX) + 1:-4])
            except Exception as exc:  # noqa: BLE001 - a bad payload costs itself only
                log.warning("dropping an undecodable item on %s: %s", channel, exc)
        if self._check and self.link.up:
            try:
                self._tails(out)
            except EngineUnavailable:
                pass
        return out

    def _take(self, channel: str, data: bytes, out: Out) -> None:
        head, _, rest = data.partition(b"\n")
        kind = head[:1]
        if channel.startswith(lua.PREFIX + "{"):
            room = channel[len(lua.PREFIX) + 1:-4]  # cr:{room}:ch
            if room not in self.delivered:
                return
            if kind == b"s":  # our subscription is live: what came before is in the stream
                self._check.add(room)
                return
            items = unpack(rest)
            topic = room_topic(room)
            if kind == b"p":
                out.extend((topic, it) for it in items)
                return
            first = int(head[1:])
            last = first + len(items) - 1
            done = self.delivered[room]
            if last <= done:
                return
            if first > done + 1:
                self._fill(room, done, first - 1, out)
                done = self.delivered[room]
            for offset, it in enumerate(items):
                seq = first + offset
                if seq > done:
                    it[0]["seq"] = seq
                    out.append((topic, it))
            self._advance(room, last)
        elif kind == b"w":
            for topic, item in unpack(rest):
                out.append((bytes(topic), item))
        elif kind == b"f":
            for worker, conn, room in unpack(rest):
                self.on_forgotten(str(worker), int(conn), str(room))
        elif kind == b"a":
            origin, items = unpack(rest)
            if origin != self.host:
                out.extend((ANNOUNCE, it) for it in items)

    def _fill(self, room: str, done: int, upto: int, out: Out) -> None:
        """Publish msgs done+1..upto of `room` from its stream (a gap we saw)."""
        if upto <= done:
            return
        # The newest FILL_MAX entries of the range, by what the stream holds, not
        # by seq arithmetic: a new epoch's jump (a failover) spans a million
        # seqs of which the stream has only the few before and after it.
        entries = self.link.run(lambda r: r.xrevrange(
            lua.room_key(room, "log"), f"{upto}-0", f"{done + 1}-0", count=FILL_MAX))
        entries.reverse()
        topic = room_topic(room)
        own = self._own.get(room, {})
        lost = 0
        for entry in entries:
            body = entry_body(entry)
            mine = own.get(body["seq"])
            if mine is not None:  # ours: the author still gets its id echo
                mine[0]["seq"] = body["seq"]
                out.append((topic, mine))
            else:
                lost += 1
                out.append((topic, [body, None, None, None]))
        if lost:
            log.warning("filled %d msg(s) of %s from redis (seq %d-%d)", lost, room,
                        done + 1, upto)
        self._advance(room, upto)

    def _advance(self, room: str, seq: int) -> None:
        """Our bus has carried `room` up to `seq`: forget our own items up to there."""
        self.delivered[room] = max(self.delivered[room], seq)
        own = self._own.get(room)
        if own:
            for done in [s for s in own if s <= seq]:
                del own[done]

    def _tails(self, out: Out) -> None:
        rooms = [r for r in self._check if r in self.delivered]
        self._check.clear()
        if not rooms:
            return
        seqs = self.link.pipe(lambda p: [p.get(lua.room_key(r, "seq")) for r in rooms])
        for room, seq in zip(rooms, seqs, strict=True):
            if isinstance(seq, bytes) and room in self.delivered:
                self._fill(room, self.delivered[room], int(seq), out)


def unavailable(label: Any) -> Body:
    """The `unavailable` error a say gets while the engine's store is unreachable."""
    body = error("unavailable", "the relay cannot reach its message store right now; "
                 "your message was not sent, try again shortly", "say")
    if label is not None:
        body["id"] = label
    return body
