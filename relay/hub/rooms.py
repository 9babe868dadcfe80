"""The memory engine's rooms: their members and rings, under four budgets.

Budgets (issue 19). Memory is bounded by four limits, all enforced here:
rooms per client (members.py asks) and rooms in total (`open` refuses a new
room when no empty one can be forgotten to make space), history bytes
across every room (the least recently active rooms lose their oldest
messages first) and a TTL after which an empty, silent room is forgotten
with its history. A forgotten room's seq is not: it is kept as a tombstone
(and in the history db), so a room that comes back continues where it
stopped and a client that resumes with an old seq gets `history_gap`, never
someone else's messages. Past MAX_TOMBSTONES, a seq floor per hash slot
still keeps every seq from being handed out twice.

Durable history (--history-db): a room comes back with its seq and newest
messages when it is first used (lazily: a big file cannot hold up the
start); every msg is staged for the hub's next commit.
"""

from __future__ import annotations

import zlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from relay.hub.history import Body, msg_cost
from relay.hub.historydb import HistoryStore
from relay.hub.replies import ConnKey

MAX_TOMBSTONES = 100_000  # forgotten rooms whose last seq is kept exactly
FLOOR_SLOTS = 65_536  # past that, a seq floor per hash slot: a seq is never handed out twice


def _slot(room: str) -> int:
    return zlib.crc32(room.encode()) % FLOOR_SLOTS


@dataclass(slots=True)
class Room:
    name: str
    history_len: int
    seq: int = 0
    members: dict[ConnKey, None] = field(default_factory=dict)
    history: deque[Body] = field(default_factory=deque)
    cost: int = 0  # msg_cost() of its history, counted against --history-bytes
    quiet: bool = False  # past --presence-limit: joins and parts are not announced

    @property
    def first_seq(self) -> int:
        """Seq of the oldest message still in history (seq+1 when it is empty)."""
        return self.seq - len(self.history) + 1


class RoomTable:
    """Every room in memory, the history budget's LRU, idle rooms and tombstones."""

    def __init__(self, *, history_len: int, history_bytes: int, max_rooms: int,
                 room_ttl: float, store: HistoryStore | None,
                 on_forget: Callable[[str], None]) -> None:
        self.history_len = history_len
        self.history_bytes = history_bytes
        self.max_rooms = max_rooms
        self.room_ttl = room_ttl
        self.store = store
        self.on_forget = on_forget
        self.rooms: dict[str, Room] = {}
        # What history costs, which rooms spoke least recently (first), which
        # rooms are empty since when (oldest first), forgotten rooms' seqs.
        self.history_used = 0
        self._lru: OrderedDict[str, None] = OrderedDict()  # rooms with history
        self._idle: dict[str, float] = {}  # memberless rooms -> monotonic time they emptied
        self._tombs: dict[str, int] = {}  # forgotten room -> its last seq (oldest first)
        self._floors = array("q", bytes(8 * FLOOR_SLOTS))  # seqs of tombstones let go
        self._started: float | None = None
        self.evicted = 0  # messages dropped for --history-bytes, for metrics
        self.forgotten = 0  # rooms forgotten (TTL or to make space), for metrics

    def open(self, name: str, force: bool = False) -> Room | None:
        """The room, brought into memory if it is not; None at --max-rooms when no
        empty room can be forgotten to make space (unless `force`)."""
        room = self.rooms.get(name)
        if room is not None:
            return room
        if not force and len(self.rooms) >= self.max_rooms and not self._make_space():
            return None
        return self._revive(name)

    def add_member(self, room: Room, key: ConnKey) -> bool:
        """True when `key` was not a member yet; the room is no longer idle."""
        already = key in room.members
        room.members[key] = None
        self._idle.pop(room.name, None)
        return not already

    def vacated(self, room: Room, mono: float) -> None:
        """A room whose last member left: forgotten after room_ttl, or now when it
        has nothing to remember but its seq."""
        if room.members:
            return
        if room.history:
            self._idle[room.name] = mono
        else:
            self._forget(room)

    def append(self, room: Room, body: Body) -> None:
        """Sequence one msg body into the room's ring, within every budget."""
        room.seq += 1
        body["seq"] = room.seq
        room.history.append(body)
        if self.store is not None:
            self.store.stage(body)
        cost = msg_cost(body)
        if len(room.history) > room.history_len:
            cost -= msg_cost(room.history.popleft())
        room.cost += cost
        self.history_used += cost
        lru = self._lru
        lru[room.name] = None
        lru.move_to_end(room.name)
        if self.history_used > self.history_bytes:
            self._evict()

    def expire(self, mono: float) -> None:
        """Forget rooms empty and silent for longer than room_ttl (called every beat).

        With a history db, also drop (once) the stored history of rooms that no
        one used during the first room_ttl after the start.
        """
        if self._started is None:
            self._started = mono
        idle = self._idle
        while idle:
            name, since = next(iter(idle.items()))
            if mono - since < self.room_ttl:
                break
            self._forget(self.rooms[name])
        if self.store is not None and mono - self._started >= self.room_ttl:
            self._started = float("inf")  # once per start
            self.store.forget_except(self.rooms)

    def _revive(self, name: str) -> Room:
        """A room new to memory: its seq continues from its tombstone or the history
        db, and the db's newest messages come back as its history."""
        seq = self._tombs.pop(name, None)
        room = Room(name, self.history_len, self._floors[_slot(name)] if seq is None else seq)
        self.rooms[name] = room
        saved = self.store.load_room(name) if self.store is not None else None
        if saved is not None and saved.seq >= room.seq:
            room.seq = saved.seq
            kept = saved.messages[len(saved.messages) - self.history_len:] \
                if self.history_len else []
            room.history.extend(kept)
            room.cost = sum(msg_cost(m) for m in kept)
            self.history_used += room.cost
            if kept:
                self._lru[name] = None
                self._evict()
        return room

    def _forget(self, room: Room) -> None:
        """Drop a memberless room and its history; keep its seq as a tombstone."""
        name = room.name
        del self.rooms[name]
        self._idle.pop(name, None)
        self._lru.pop(name, None)
        self.on_forget(name)
        self.history_used -= room.cost
        self.forgotten += 1
        if room.seq:
            tombs = self._tombs
            if len(tombs) >= MAX_TOMBSTONES:
                old = next(iter(tombs))
                slot, old_seq = _slot(old), tombs.pop(old)
                self._floors[slot] = max(self._floors[slot], old_seq)
            tombs[name] = room.seq
            if self.store is not None:
                self.store.forget(name, room.seq)

    def _evict(self) -> None:
        """Over --history-bytes: the least recently active rooms lose their oldest
        messages first (the room just spoken in is the newest, so the last)."""
        lru, store = self._lru, self.store
        while self.history_used > self.history_bytes and lru:
            name = next(iter(lru))
            room = self.rooms[name]
            if room.history:
                cost = msg_cost(room.history.popleft())
                room.cost -= cost
                self.history_used -= cost
                self.evicted += 1
                if store is not None:
                    store.trim(name, room.first_seq)
                if room.history:
                    continue
            del lru[name]
            if name in self._idle:
                self._forget(room)  # nothing left to remember but its seq

    def _make_space(self) -> bool:
        """At --max-rooms: forget the room empty for longest, if there is one."""
        if not self._idle:
            return False
        self._forget(self.rooms[next(iter(self._idle))])
        return True
