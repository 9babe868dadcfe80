"""The Redis engine's traffic: the wake's output out through Redis, and back in.

Out (`outgoing`): one round trip per wake for every room (redis_batch.py:
a non-transactional pipeline of EVALSHA calls, no SCRIPT EXISTS first).
Each run of a room's msgs is one SEQUENCE call (seq, stream, publish,
atomically by itself); presence is published on the room's channel in the
same pipeline, so it keeps its place among the msgs. Room runs queue in the
hub's order and a wake sends at most MAX_CALLS of them or MAX_BYTES (the
rest go next wake, the loop woken at once), so a burst over 1,000 rooms
never holds the hub loop for long. Replies for another host's worker go on
that host's channel, announcements (bans, blocks) on the relay-wide one and
on our own bus. Our own sequenced batch goes on our bus at once when it is
the room's next (no trip through the channel; its copy that comes back is
skipped by its seqs, unread); presence we publish is tagged with our host
and goes on our bus at once too.

In (`incoming`): the room channel of every room with local members, in
Redis's order, which for one room is seq order. A batch that skips seqs
(published before our subscription was live, or lost while Redis was away)
is preceded by the missing msgs read from the stream, and anything at or
below what this host already published is dropped, so our bus carries each
room's msgs once, in seq order, like a single hub's.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relay.bus.wire import ANNOUNCE, pack, room_topic, unpack
from relay.hub import redis_scripts as lua
from relay.hub.engine import EngineUnavailable
from relay.hub.redis_batch import Batch, execute
from relay.hub.redis_feed import Feed
from relay.hub.redis_link import Link
from relay.hub.replies import Body, Out
from relay.hub.replies import to as reply_to
from transports.errors import error_body as error

log = logging.getLogger("chat_relay.hub")

FILL_MAX = 10_000  # msgs read from a stream to fill one gap
MAX_CALLS = 256      # room batches (script calls, presence) sent in one round trip
MAX_BYTES = 1 << 20  # their payload bytes in one round trip (one batch may be bigger)


@dataclass(slots=True)
class Call:
    """One room's run of msgs (one SEQUENCE call) or presence (one PUBLISH)."""

    kind: str          # "msg" or "pres"
    room: str
    items: list[Any]   # as the hub made them: [body, worker, conn, label]
    packed: bytes      # the items as published
    bodies: list[bytes]  # "msg": each body as the stream keeps it

    @property
    def size(self) -> int:
        return len(self.packed) + sum(len(b) for b in self.bodies)


def entry_body(entry: tuple[bytes, dict[bytes, bytes]]) -> Body:
    """A stream entry as the msg body it holds, its seq taken from its id."""
    body: Body = unpack(entry[1][b"b"])
    body["seq"] = int(entry[0].split(b"-", 1)[0])
    return body


class Traffic:
    """Publishing through Redis and taking in what the channels carry."""

    def __init__(self, link: Link, feed: Feed, host: str, history: int,
                 is_local: Callable[[str], bool], host_of: Callable[[str], str | None],
                 max_calls: int = MAX_CALLS, max_bytes: int = MAX_BYTES) -> None:
        self.link = link
        self.feed = feed
        self.host = host
        self.history = history
        self.is_local = is_local  # worker id -> held by this host?
        self.host_of = host_of    # worker id -> the host that holds it, if known
        self.delivered: dict[str, int] = {}  # room -> last seq published on our bus
        # Room calls not sent yet, in the hub's order: a wake sends at most
        # max_calls of them or max_bytes, so one wake never holds the loop for long.
        self._queue: collections.deque[Call] = collections.deque()
        self.max_calls, self.max_bytes = max(1, max_calls), max(1, max_bytes)
        self._pres_head = b"p" + host.encode() + b"\n"
        # A room was just watched: the feed thread applies subscriptions between
        # polls (up to 50 ms), and other hosts' presence meanwhile is not in any
        # stream, so the wake's round trip also pokes our own channel.
        self._kick = False
        # room -> seq -> our own item, until it is delivered: a gap filled from the
        # stream still tells the author (its `id` echo), which the stream does not keep.
        self._own: dict[str, dict[int, Any]] = {}
        self._check: set[str] = set()  # rooms whose tail to check for missed msgs
        # Members of other hosts' clients this hub took out of a room (a kick, a
        # ban): told to their host, which then forgets them without a second part.
        self._forget: dict[str, list[Any]] = {}
        self.on_forgotten: Callable[[str, int, str], None] = lambda worker, conn, room: None

    # Subscriptions --------------------------------------------------------------

    def watch(self, room: str, seq: int | None = None) -> None:
        """A first local member: subscribe, and start from the room's seq now
        (`seq`: read by the caller in its own round trip just now)."""
        if room in self.delivered:
            return
        if seq is None:
            seq = int(self.link.run(lambda r: r.get(lua.room_key(room, "seq"))) or 0)
        self.delivered[room] = seq
        self.feed.subscribe(lua.room_key(room, "ch"))
        self._kick = True

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
        remote: dict[str, Out] = {}
        shout: list[Any] = []
        queue = self._queue
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
                items = [x for _, x in out[i:j]]
                if is_msg:
                    bodies = [pack({k: v for k, v in it[0].items() if k != "seq"})
                              for it in items]
                    queue.append(Call("msg", room, items, pack(items), bodies))
                else:
                    queue.append(Call("pres", room, items, pack(items), []))
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
        calls: list[Call] = []
        size = 0
        while queue and len(calls) < self.max_calls and (not calls or size < self.max_bytes):
            call = queue.popleft()
            calls.append(call)
            size += call.size
        if calls or remote or shout or self._forget or self._kick:
            self._send(calls, remote, shout, local)
        return local  # what stays queued goes next wake (incoming() wakes the loop)

    def drain(self) -> None:
        """Send what is still queued (a clean stop): others get it, in order."""
        while self._queue and self.link.up:
            self.outgoing([])

    def _send(self, calls: list[Call], remote: dict[str, Out], shout: list[Any],
              local: Out) -> None:
        now = str(time.time_ns() // 1_000_000)
        forget, self._forget = self._forget, {}
        batch = Batch()
        for call in calls:
            channel = lua.room_key(call.room, "ch")
            if call.kind == "pres":  # tagged: our own copy is delivered here, not twice
                batch.command(self.link.publish_cmd, channel, self._pres_head + call.packed)
                continue
            floor = self.delivered.get(call.room, 0)
            batch.script(self.link.sequence, self.link.sequence_keys(call.room),
                         [channel, self.history, floor, now, call.packed, *call.bodies])
        for host, parted in forget.items():  # before the replies that cut them
            batch.command(self.link.publish_cmd, lua.host_key(host, "ch"), b"f\n" + pack(parted))
        for host, replies in remote.items():
            batch.command(self.link.publish_cmd, lua.host_key(host, "ch"), b"w\n" + pack(replies))
        if shout:
            batch.command(self.link.publish_cmd, lua.ALL_CHANNEL, b"a\n" + pack([self.host, shout]))
        if self._kick:  # wakes our feed thread from its poll: it subscribes at once
            self._kick = False
            batch.command(self.link.publish_cmd, lua.host_key(self.host, "ch"), b"k\n")
        try:
            results: list[Any] = execute(self.link, batch)
        except EngineUnavailable:
            results = [None] * len(calls)
        for call, res in zip(calls, results, strict=False):
            room, items = call.room, call.items
            failed = res is None or isinstance(res, Exception)
            if call.kind == "pres":
                if failed or room in self.delivered:  # our members, at least
                    local.extend((room_topic(room), it) for it in items)
            elif failed:
                if isinstance(res, Exception):
                    log.error("sequencing %d msg(s) of %s failed: %s", len(items), room, res)
                for it in items:
                    if isinstance(it[1], str) and isinstance(it[2], int):
                        reply_to(local, (it[1], it[2]), unavailable(it[3]))
            else:
                self._sequenced(room, int(res[0]), items, local)
                if res[2]:
                    log.warning("%s started a new epoch %s from seq %s (its seq in redis was lost, "
                                "or may be stale after a failover)",
                                room, res[1], res[0])

    def _sequenced(self, room: str, first: int, items: list[Any], local: Out) -> None:
        """Our batch got seqs first..: on our bus now if it is the room's next
        (no round trip through the channel), else when the gap before it is filled."""
        done = self.delivered.get(room)
        if done is None:
            return
        if done == first - 1:
            topic = room_topic(room)
            for offset, it in enumerate(items):
                it[0]["seq"] = first + offset
                local.append((topic, it))
            self._advance(room, first + len(items) - 1)
            return
        own = self._own.setdefault(room, {})
        for offset, it in enumerate(items):
            own[first + offset] = it

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
        if self._queue:  # after drain(), which eats wakes: the loop comes back at once
            self.feed.wake()
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
            topic = room_topic(room)
            if kind == b"p":
                if head != self._pres_head[:-1]:  # ours went on our bus when published
                    out.extend((topic, it) for it in unpack(rest))
                return
            first = int(head[1:])
            done = self.delivered[room]
            if first + array_len(rest) - 1 <= done:
                return  # ours, delivered when sequenced (or filled already): not unpacked
            items = unpack(rest)
            last = first + len(items) - 1
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
        while own:  # kept in seq order: drop from the front
            first = next(iter(own))
            if first > seq:
                break
            del own[first]

    def _tails(self, out: Out) -> None:
        rooms = [r for r in self._check if r in self.delivered]
        self._check.clear()
        if not rooms:
            return
        seqs = self.link.pipe(lambda p: [p.get(lua.room_key(r, "seq")) for r in rooms])
        for room, seq in zip(rooms, seqs, strict=True):
            if isinstance(seq, bytes) and room in self.delivered:
                self._fill(room, self.delivered[room], int(seq), out)


def array_len(data: bytes) -> int:
    """The length of the msgpack array `data` holds, read from its header alone."""
    tag = data[0]
    if 0x90 <= tag <= 0x9F:
        return tag & 0x0F
    if tag == 0xDC:
        return int.from_bytes(data[1:3], "big")
    if tag == 0xDD:
        return int.from_bytes(data[1:5], "big")
    raise ValueError(f"not a msgpack array (0x{tag:02x})")


def unavailable(label: Any) -> Body:
    """The `unavailable` error a say gets while the engine's store is unreachable."""
    body = error("unavailable", "the relay cannot reach its message store right now; "
                 "your message was not sent, try again shortly", "say")
    if label is not None:
        body["id"] = label
    return body
