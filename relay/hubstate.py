"""The hub's logic without sockets: registry, per-room sequencer, history.

Requests come in as dicts (from a worker's batch), and every reply or
broadcast goes out as (topic, item) in the order it was produced. Order
matters: a `joined` and the room's later messages must reach a worker in the
order the hub decided them, so the I/O layer only coalesces consecutive items
of one topic, never reorders.

Items:
    worker topic: [conn, body]                 one body for one connection
                  [None, body]                 for the worker itself (`_ready`)
    room topic:   [body, worker, conn, id]     a msg (author and its id, which
                                               only the author gets back) or a
                                               presence (author fields None)

This module has one authority per fact: nick ownership (case-insensitive),
room membership, each room's seq and its history ring.

Budgets (issue 19). Memory is bounded by four limits, all enforced here:
rooms per client and rooms in total (`too_many_rooms`), history bytes across
every room (the least recently active rooms lose their oldest messages first)
and a TTL after which an empty, silent room is forgotten with its history.
A forgotten room's seq is not: it is kept as a tombstone (and in the history
db), so a room that comes back continues where it stopped and a client that
resumes with an old seq gets `history_gap`, never someone else's messages.
"""

from __future__ import annotations

import heapq
import itertools
import sys
import time
import zlib
from array import array
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relay.authguard import AuthGuard
from relay.bus import ANNOUNCE, room_topic, worker_topic
from relay.historydb import HistoryStore
from transports.validate import HISTORY_MAX_LIMIT, ip_key, nick_key

Out = list[tuple[bytes, Any]]
FILL_MAX = 1000  # messages resent per fill request
MAX_STASH = 100_000  # requests held per worker while it re-announces its clients
MAX_SANCTIONS = 10_000  # bans by nick, bans by IP, mutes: each list holds at most this many
ConnKey = tuple[str, int]
ROOMS_REPLY_MAX = 500  # entries in a `rooms` reply: 500 of the longest names fit 64 KiB frames
# Bytes a stored msg costs besides its text: tracemalloc counts 280 (the body
# dict, its ts and seq ints, the ring slot); the rest is the allocator's share.
# benchmarks/room_memory.py weighs the whole hub against --history-bytes.
MSG_OVERHEAD = 400
MAX_TOMBSTONES = 100_000  # forgotten rooms whose last seq is kept exactly
FLOOR_SLOTS = 65_536  # past that, a seq floor per hash slot: a seq is never handed out twice


def msg_cost(body: dict[str, Any]) -> int:
    """What one stored msg counts against --history-bytes: its text as Python holds
    it (1, 2 or 4 bytes a character) plus the fixed cost of the body around it."""
    return MSG_OVERHEAD + sys.getsizeof(body.get("text", ""))


def _slot(room: str) -> int:
    return zlib.crc32(room.encode()) % FLOOR_SLOTS


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class ClientRec:
    worker: str
    conn: int
    nick: str
    rooms: dict[str, None] = field(default_factory=dict)  # ordered set
    ip: str = ""  # as ip_key() gives it; "" when unknown (re-announced after a hub restart)


@dataclass(slots=True)
class Sanction:
    """A ban or mute: until (wall-clock ms, 0 = no expiry), who set it, why."""

    until: int
    by: str
    reason: str

    def left(self, now: int) -> str:
        if not self.until:
            return "until an operator lifts it"
        minutes = max(1, -(-(self.until - now) // 60_000))
        return f"for {minutes} more minute{'' if minutes == 1 else 's'}"


@dataclass(slots=True)
class Room:
    name: str
    history_len: int
    seq: int = 0
    members: dict[ConnKey, None] = field(default_factory=dict)
    history: deque[dict[str, Any]] = field(default_factory=deque)
    cost: int = 0  # msg_cost() of its history, counted against --history-bytes

    @property
    def first_seq(self) -> int:
        """Seq of the oldest message still in history (seq+1 when it is empty)."""
        return self.seq - len(self.history) + 1


def _error(code: str, text: str, ref: str, **ctx: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"t": "error", "code": code, "text": text, "ref": ref}
    body.update(ctx)
    return body


class HubState:
    """Everything the hub knows; `handle()` turns one request into output items."""

    def __init__(
        self,
        *,
        epoch: int,
        history_len: int = 1000,
        server: str = "chat-relay",
        worker_timeout: float = 5.0,
        clock: Callable[[], int] = now_ms,
        store: HistoryStore | None = None,
        history_bytes: int = 128 * 1024 * 1024,
        max_rooms: int = 10_000,
        max_rooms_per_client: int = 100,
        room_ttl: float = 3600.0,
        auth: AuthGuard | None = None,
    ) -> None:
        self.epoch = epoch
        self.history_len = history_len
        self.history_bytes = history_bytes
        self.max_rooms = max_rooms
        self.max_rooms_per_client = max_rooms_per_client
        self.room_ttl = room_ttl
        self.server = server
        self.worker_timeout = worker_timeout
        self.clock = clock
        self.clients: dict[ConnKey, ClientRec] = {}
        self.nicks: dict[str, ConnKey] = {}
        self.rooms: dict[str, Room] = {}
        self.workers: dict[str, float] = {}  # worker -> last heartbeat (monotonic)
        self.awaiting_sync: dict[str, list[dict[str, Any]]] = {}
        self.expired: set[str] = set()  # workers whose clients others saw leave
        self._guest = itertools.count(1)
        self.messages = 0  # say requests sequenced, for metrics
        # Moderation: the hub is the one authority on bans and mutes.
        self.banned_nicks: dict[str, Sanction] = {}  # nick_key -> ban
        self.banned_ips: dict[str, Sanction] = {}    # ip_key -> ban
        self.muted: dict[str, Sanction] = {}         # nick_key -> mute
        self.moderation: Counter[str] = Counter()    # actions taken, for metrics
        self.auth = auth if auth is not None else AuthGuard()  # failed passwords, relay-wide
        # Budgets: what history costs, which rooms spoke least recently (first),
        # which rooms are empty since when (oldest first), forgotten rooms' seqs.
        self.history_used = 0
        self._lru: OrderedDict[str, None] = OrderedDict()  # rooms with history
        self._idle: dict[str, float] = {}  # memberless rooms -> monotonic time they emptied
        self._tombs: dict[str, int] = {}  # forgotten room -> its last seq (oldest first)
        self._floors = array("q", bytes(8 * FLOOR_SLOTS))  # seqs of tombstones let go
        self._mono = 0.0  # the current request's monotonic time
        self._started: float | None = None
        self.evicted = 0  # messages dropped for --history-bytes, for metrics
        self.forgotten = 0  # rooms forgotten (TTL or to make space), for metrics
        # Durable history (--history-db): a room comes back with its seq and
        # newest messages when it is first used (lazily: a big file cannot hold
        # up the start); every msg is staged for the hub's next commit.
        self.store = store

    # Dispatch ---------------------------------------------------------------

    def handle(self, worker: str, req: dict[str, Any], out: Out, mono: float) -> None:
        op = req.get("op")
        self._mono = mono
        if worker not in self.workers:
            if op == "hb" and req.get("hello"):
                pass  # a fresh worker: it has no clients yet
            elif op == "sync" or op == "worker_gone":
                pass
            else:
                # A worker we do not know has clients we do not know: the hub
                # restarted (or expired it). Ask it to re-announce them and
                # hold its requests until it has, so none is lost or refused.
                stash = self.awaiting_sync.get(worker)
                if stash is None:
                    stash = self.awaiting_sync[worker] = []
                    out.append((worker_topic(worker),
                                [None, {"t": "_resync", "epoch": self.epoch}]))
                if op != "hb" and len(stash) < MAX_STASH:
                    stash.append(req)
                return
        self.workers[worker] = mono
        handler = self._HANDLERS.get(op) if isinstance(op, str) else None
        if handler is None:
            return  # an unknown op from a newer worker is not our business to crash on
        handler(self, worker, req, out)
        if op == "sync":
            for held in self.awaiting_sync.pop(worker, []):
                self.handle(worker, held, out, mono)

    def expire_workers(self, mono: float) -> Out:
        """Forget workers silent for longer than worker_timeout (kill -9, cut link)."""
        out: Out = []
        self._mono = mono
        for worker, seen in list(self.workers.items()):
            if mono - seen > self.worker_timeout:
                self.drop_worker(worker, out)
        return out

    def drop_worker(self, worker: str, out: Out) -> None:
        if self.workers.pop(worker, None) is not None:
            self.expired.add(worker)
        self.awaiting_sync.pop(worker, None)
        for key in [k for k in self.clients if k[0] == worker]:
            self._remove_client(key, out)

    def expire_rooms(self, mono: float) -> None:
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

    # Budgets ----------------------------------------------------------------

    def _room(self, name: str) -> Room:
        room = self.rooms.get(name)
        return self._revive(name) if room is None else room

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

    # Helpers ----------------------------------------------------------------

    def _members(self, room: Room) -> list[str]:
        return [self.clients[k].nick for k in room.members]

    @staticmethod
    def _to(out: Out, key: ConnKey, body: dict[str, Any]) -> None:
        out.append((worker_topic(key[0]), [key[1], body]))

    @staticmethod
    def _broadcast(out: Out, room: str, body: dict[str, Any], by: ConnKey | None = None) -> None:
        """Room-wide body; `by` tags the client that caused it (for `encode_own`)."""
        w, c = by if by is not None else (None, None)
        out.append((room_topic(room), [body, w, c, None]))

    def _join(self, key: ConnKey, name: str, out: Out, resume: int | None = None,
              ref: str = "join") -> None:
        client = self.clients[key]
        if name not in client.rooms and len(client.rooms) >= self.max_rooms_per_client:
            self._to(out, key, _error(
                "too_many_rooms", f"you are in {len(client.rooms)} rooms, the most one client "
                f"may be in; part one before joining {name}", ref, room=name))
            return
        if name not in self.rooms and len(self.rooms) >= self.max_rooms \
                and not self._make_space():
            self._to(out, key, _error(
                "too_many_rooms", f"the relay holds {len(self.rooms)} rooms, all with members, "
                f"its limit; {name} cannot be opened now (join an existing room)", ref,
                room=name))
            return
        room = self._room(name)
        already = key in room.members
        room.members[key] = None
        self._idle.pop(name, None)
        client.rooms[name] = None
        self._to(out, key, {"t": "joined", "room": name, "members": self._members(room),
                            "seq": room.seq})
        if resume is not None:
            self._replay(key, room, resume, out)
        if not already:
            self._broadcast(out, name, {"t": "presence", "room": name, "nick": client.nick,
                                        "event": "join"}, key)

    def _replay(self, key: ConnKey, room: Room, after: int, out: Out) -> None:
        """Send what a resuming client missed, or say honestly that history is gone."""
        if after > room.seq:
            self._to(out, key, _error(
                "history_gap",
                f"{room.name} is at seq {room.seq}, before your {after}: the relay restarted "
                "and its history of this room is gone",
                "hello", room=room.name))
            return
        if after + 1 < room.first_seq:
            self._to(out, key, _error(
                "history_gap",
                f"history of {room.name} starts at seq {room.first_seq}; messages "
                f"{after + 1}-{room.first_seq - 1} are gone",
                "hello", room=room.name))
            after = room.first_seq - 1
        start = after + 1 - room.first_seq
        for i in range(start, len(room.history)):
            self._to(out, key, room.history[i])

    def _part(self, key: ConnKey, name: str, out: Out,
              extra: dict[str, Any] | None = None) -> None:
        client = self.clients[key]
        room = self.rooms[name]
        room.members.pop(key, None)
        client.rooms.pop(name, None)
        body = {"t": "presence", "room": name, "nick": client.nick, "event": "part"}
        if extra:
            body.update(extra)  # an operator's removal: by, reason
        self._broadcast(out, name, body, key)
        if not room.members:
            if room.history:
                self._idle[name] = self._mono  # forgotten after room_ttl
            else:
                self._forget(room)  # nothing to remember but its seq

    def _remove_client(self, key: ConnKey, out: Out,
                       extra: dict[str, Any] | None = None) -> None:
        client = self.clients.get(key)
        if client is None:
            return
        for name in list(client.rooms):
            self._part(key, name, out, extra)
        self.nicks.pop(nick_key(client.nick), None)
        del self.clients[key]

    def _client(self, worker: str, req: dict[str, Any], out: Out) -> ConnKey | None:
        key = (worker, int(req.get("c", -1)))
        if key in self.clients:
            return key
        if req.get("op") != "gone":
            # Never drop a request silently: the hub lost this client (restart).
            self._to(out, key, _error("not_ready", "the relay's hub restarted; say hello again",
                                      str(req.get("op"))))
        return None

    def _in_room(self, key: ConnKey, req: dict[str, Any], ref: str, out: Out) -> Room | None:
        name = req.get("room", "")
        room = self.rooms.get(name)
        if room is None or key not in room.members:
            self._to(out, key, _error("not_in_room", f"you are not in {name}", ref, room=name))
            return None
        return room

    # Requests ---------------------------------------------------------------

    def _op_hb(self, worker: str, req: dict[str, Any], out: Out) -> None:
        if req.get("hello"):
            out.append((worker_topic(worker), [None, {"t": "_ready", "epoch": self.epoch}]))
            if self.banned_ips or self.auth.blocks(self.clock()):
                out.append((worker_topic(worker), [None, self._bans_body()]))

    def _op_hello(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = (worker, int(req["c"]))
        if key in self.clients:
            self._to(out, key, _error("bad_field", "already said hello", "hello"))
            return
        nick = req.get("nick")
        ip = ip_key(str(req.get("ip") or "")) or ""
        if self._refuse_banned(key, nick, ip, out):
            return
        if nick is None:
            nick = self._guest_nick()
        elif nick_key(nick) in self.nicks:
            self._to(out, key, _error("nick_taken", f"nick {nick} is taken", "hello", nick=nick))
            return
        self.clients[key] = ClientRec(worker, key[1], nick, ip=ip)
        self.nicks[nick_key(nick)] = key
        self._to(out, key, {"t": "welcome", "v": 1, "nick": nick, "server": self.server})
        resume: dict[str, int] = req.get("resume") or {}
        for name in req.get("rooms", []):
            if name not in resume:
                self._join(key, name, out, ref="hello")
        for name, seq in resume.items():
            self._join(key, name, out, resume=seq, ref="hello")

    def _guest_nick(self) -> str:
        while True:
            nick = f"guest-{next(self._guest)}"
            if nick_key(nick) not in self.nicks and nick_key(nick) not in self.banned_nicks:
                return nick

    def _op_join(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self._client(worker, req, out)
        if key is not None:
            resume = req.get("resume")
            self._join(key, req["room"], out, resume=resume if isinstance(resume, int) else None)

    def _op_part(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self._client(worker, req, out)
        if key is None or self._in_room(key, req, "part", out) is None:
            return
        self._to(out, key, {"t": "parted", "room": req["room"]})
        self._part(key, req["room"], out)

    def _op_say(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self._client(worker, req, out)
        if key is None or (self.muted and self._refuse_muted(key, "say", out,
                                                             room=req.get("room"))):
            return
        room = self._in_room(key, req, "say", out)
        if room is None:
            return
        room.seq += 1
        self.messages += 1
        body = {"t": "msg", "room": room.name, "seq": room.seq, "ts": self.clock(),
                "from": self.clients[key].nick, "text": req["text"]}
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
        out.append((room_topic(room.name), [body, key[0], key[1], req.get("id")]))

    def _op_whisper(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self._client(worker, req, out)
        if key is None or (self.muted and self._refuse_muted(key, "whisper", out,
                                                             nick=req.get("to"))):
            return
        target = self.nicks.get(nick_key(req["to"]))
        if target is None:
            self._to(out, key, _error("no_such_nick", f"no one is called {req['to']}",
                                      "whisper", nick=req["to"]))
            return
        body = {"t": "whisper", "from": self.clients[key].nick, "to": self.clients[target].nick,
                "text": req["text"], "ts": self.clock()}
        if target != key:
            self._to(out, target, body)
        echo = dict(body)
        if req.get("id") is not None:
            echo["id"] = req["id"]
        self._to(out, key, echo)

    def _op_nick(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self._client(worker, req, out)
        if key is None:
            return
        new = req["nick"]
        owner = self.nicks.get(nick_key(new))
        if owner is not None and owner != key:
            self._to(out, key, _error("nick_taken", f"nick {new} is taken", "nick", nick=new))
            return
        ban = self._sanction(self.banned_nicks, nick_key(new)) if self.banned_nicks else None
        if ban is not None and owner != key:
            # A banned nick is held by its ban: taken, for anyone who asks.
            left = ban.left(self.clock())
            self._to(out, key, _error("nick_taken", f"nick {new} is banned {left}", "nick",
                                      nick=new))
            return
        client = self.clients[key]
        old = client.nick
        del self.nicks[nick_key(old)]
        self.nicks[nick_key(new)] = key
        client.nick = new
        mute = self.muted.pop(nick_key(old), None) if self.muted else None
        if mute is not None:
            self.muted[nick_key(new)] = mute  # a mute follows its person
        self._to(out, key, {"t": "renamed", "nick": new})
        for name in client.rooms:
            self._broadcast(out, name, {"t": "presence", "room": name, "nick": old,
                                        "event": "nick", "new": new}, key)

    def _op_who(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self._client(worker, req, out)
        if key is None:
            return
        room = self._in_room(key, req, "who", out)
        if room is not None:
            self._to(out, key, {"t": "members", "room": room.name,
                                "members": self._members(room)})

    def _op_history(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self._client(worker, req, out)
        if key is None:
            return
        room = self._in_room(key, req, "history", out)
        if room is None:
            return
        limit = max(1, min(int(req.get("limit", 100)), HISTORY_MAX_LIMIT))
        after = req.get("after")
        hist = room.history
        if after is None:
            start = max(0, len(hist) - limit)
            page = list(itertools.islice(hist, start, None))
            more = start > 0
        else:
            if after + 1 < room.first_seq:
                self._to(out, key, _error(
                    "history_gap",
                    f"history of {room.name} starts at seq {room.first_seq}; messages "
                    f"{after + 1}-{room.first_seq - 1} are gone", "history", room=room.name))
                after = room.first_seq - 1
            start = max(0, after + 1 - room.first_seq)
            page = list(itertools.islice(hist, start, start + limit))
            more = start + limit < len(hist)
        self._to(out, key, {"t": "history", "room": room.name, "messages": page, "more": more})

    def _op_rooms(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self._client(worker, req, out)
        if key is not None:
            self._to(out, key, self._rooms_body())

    def _rooms_body(self) -> dict[str, Any]:
        """Rooms with members, the largest first, at most ROOMS_REPLY_MAX of them;
        a capped reply says so (`truncated`, `total`)."""
        sizes = [(len(r.members), r.name) for r in self.rooms.values() if r.members]
        body: dict[str, Any] = {"t": "rooms"}
        if len(sizes) > ROOMS_REPLY_MAX:
            body["truncated"] = True
            body["total"] = len(sizes)
            sizes = heapq.nlargest(ROOMS_REPLY_MAX, sizes, key=lambda s: s[0])
        else:
            sizes.sort(key=lambda s: -s[0])
        body["rooms"] = {name: n for n, name in sizes}
        return body

    def _op_gone(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = (worker, int(req.get("c", -1)))
        self._remove_client(key, out)

    def _op_fill(self, worker: str, req: dict[str, Any], out: Out) -> None:
        """A worker lost part of a room's stream on the bus: resend it from history."""
        room = self.rooms.get(str(req.get("room")))
        if room is None:
            return
        after = max(int(req.get("after", 0)), room.first_seq - 1)
        start = after + 1 - room.first_seq
        msgs = list(itertools.islice(room.history, start, start + FILL_MAX))
        out.append((worker_topic(worker), [None, {"t": "_fill", "room": room.name,
                                                  "messages": msgs}]))

    def _op_ping(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self._client(worker, req, out)
        if key is not None:
            msg_id = req.get("id")
            self._to(out, key, {"t": "pong"} if msg_id is None else {"t": "pong", "id": msg_id})

    def _op_credit(self, worker: str, req: dict[str, Any], out: Out) -> None:
        """A receipt for the worker's credit window (relay/overload.py): it travels
        behind everything this request's batch produced, on the worker's pipe."""
        out.append((worker_topic(worker), [None, {"t": "_credit", "n": req.get("n")}]))

    def _op_echo(self, worker: str, req: dict[str, Any], out: Out) -> None:
        """A reply the worker wrote itself (a reader's error about a bad frame), sent
        back down the client's reply stream, so that it comes after the replies to
        every frame before it instead of overtaking them."""
        body = req.get("body")
        if isinstance(body, dict):
            self._to(out, (worker, int(req.get("c", -1))), body)

    def _op_bye(self, worker: str, req: dict[str, Any], out: Out) -> None:
        """A barrier: by the time `_bye` reaches the worker, everything due before it has."""
        self._to(out, (worker, int(req.get("c", -1))), {"t": "_bye"})

    def _op_auth_fail(self, worker: str, req: dict[str, Any], out: Out) -> None:
        """A wrong password on any worker; a block it starts goes to every worker."""
        block = self.auth.on_fail(req, self.clock())
        if block is not None:
            out.append((ANNOUNCE, block))

    def _op_worker_gone(self, worker: str, req: dict[str, Any], out: Out) -> None:
        self.drop_worker(str(req.get("w", "")), out)

    def _op_sync(self, worker: str, req: dict[str, Any], out: Out) -> None:
        """A worker re-announces its clients to a hub that restarted (new epoch).

        Each entry is [conn, nick, {room: last seq seen}]. Seq continues from
        the highest seq any worker saw, so no seq is ever handed out twice.
        """
        returning = worker in self.expired  # others saw these clients leave
        self.expired.discard(worker)
        out.append((worker_topic(worker), [None, self._bans_body()]))  # replaces stale ones
        for conn, nick, rooms in req.get("clients", []):
            key = (worker, int(conn))
            if key in self.clients or nick_key(nick) in self.nicks:
                continue
            self.clients[key] = ClientRec(worker, key[1], nick)
            self.nicks[nick_key(nick)] = key
            for name, seq in rooms.items():
                room = self._room(name)  # over a budget or not: these members exist
                room.seq = max(room.seq, int(seq))
                room.members[key] = None
                self._idle.pop(name, None)
                self.clients[key].rooms[name] = None
                if returning:
                    self._broadcast(out, name, {"t": "presence", "room": name, "nick": nick,
                                                "event": "join"}, key)

    # Moderation -------------------------------------------------------------
    #
    # The worker forwards these only for a connection that proved the operator
    # password, so the hub acts on them as given. Bans and mutes live here
    # (memory only: a hub restart lifts them); workers get the IP bans as a
    # `_bans` item (on ANNOUNCE when they change, on their own topic when they
    # connect or resync) to refuse new connections before any hello.

    def _sanction(self, table: dict[str, Sanction], key: str) -> Sanction | None:
        """The active sanction under `key`; an expired one is dropped here."""
        found = table.get(key)
        if found is not None and found.until and found.until <= self.clock():
            del table[key]
            return None
        return found

    def _bans_body(self) -> dict[str, Any]:
        now = self.clock()
        body = {"t": "_bans", "ips": {ip: s.until for ip, s in self.banned_ips.items()
                                      if not s.until or s.until > now}}
        blocks = self.auth.blocks(now)
        if blocks:  # addresses blocked after failed passwords (AuthGuard)
            body["blocks"] = blocks
        return body

    @staticmethod
    def _why(by: str, reason: str) -> str:
        return f" by {by}" + (f": {reason}" if reason else "")

    def _refuse_banned(self, key: ConnKey, nick: str | None, ip: str, out: Out) -> bool:
        ban, what = None, ""
        if ip and self.banned_ips:
            ban, what = self._sanction(self.banned_ips, ip), f"your address {ip}"
        if ban is None and nick is not None and self.banned_nicks:
            ban, what = self._sanction(self.banned_nicks, nick_key(nick)), f"the nick {nick}"
        if ban is None:
            return False
        body = _error("banned", f"{what} is banned {ban.left(self.clock())}"
                      f"{self._why(ban.by, ban.reason)}", "hello", by=ban.by)
        if ban.reason:
            body["reason"] = ban.reason
        self._to(out, key, body)
        return True

    def _refuse_muted(self, key: ConnKey, ref: str, out: Out, **ctx: Any) -> bool:
        mute = self._sanction(self.muted, nick_key(self.clients[key].nick))
        if mute is None:
            return False
        self._to(out, key, _error("muted", f"you are muted {mute.left(self.clock())}"
                                  f"{self._why(mute.by, mute.reason)}; nobody got this", ref,
                                  **ctx))
        return True

    def _cut(self, target: ConnKey, code: str, text: str, by: str, reason: str,
             out: Out) -> None:
        """Tell a client why it must go and forget it; its worker closes the connection."""
        extra: dict[str, Any] = {"by": by}
        if reason:
            extra["reason"] = reason
        self._to(out, target, {"t": "error", "code": code, "text": text, **extra})
        self._remove_client(target, out, extra)

    def _notice(self, out: Out, key: ConnKey, text: str) -> None:
        if key in self.clients:
            self._to(out, key, {"t": "notice", "text": text})

    def _store(self, table: dict[str, Sanction], name: str, sanction: Sanction, key: ConnKey,
               ref: str, out: Out) -> bool:
        if name not in table and len(table) >= MAX_SANCTIONS:
            now = self.clock()
            for k in [k for k, s in table.items() if s.until and s.until <= now]:
                del table[k]
            if len(table) >= MAX_SANCTIONS:
                self._to(out, key, _error("bad_field", f"the {ref} list is full "
                                          f"({MAX_SANCTIONS} entries); lift one first", ref))
                return False
        table[name] = sanction
        return True

    def _sanction_from(self, key: ConnKey, req: dict[str, Any]) -> Sanction:
        minutes = req.get("minutes")
        until = self.clock() + int(minutes) * 60_000 if minutes else 0
        return Sanction(until, self.clients[key].nick, str(req.get("reason") or ""))

    def _op_kick(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self._client(worker, req, out)
        if key is None:
            return
        target = self.nicks.get(nick_key(str(req.get("nick"))))
        if target is None:
            self._to(out, key, _error("no_such_nick", f"no one is called {req.get('nick')}",
                                      "kick", nick=req.get("nick")))
            return
        by, name = self.clients[key].nick, self.clients[target].nick
        reason = str(req.get("reason") or "")
        self._cut(target, "kicked", f"you were kicked{self._why(by, reason)}", by, reason, out)
        self.moderation["kick"] += 1
        self._notice(out, key, f"kicked {name}")

    def _op_ban(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self._client(worker, req, out)
        if key is None:
            return
        ban = self._sanction_from(key, req)
        ip = ip_key(str(req["ip"])) if req.get("ip") else None
        if ip is not None:
            if not self._store(self.banned_ips, ip, ban, key, "ban", out):
                return
            what = f"address {ip}"
            victims = [k for k, c in self.clients.items() if c.ip == ip and k != key]
            out.append((ANNOUNCE, self._bans_body()))
        elif req.get("nick"):
            nick = str(req["nick"])
            if not self._store(self.banned_nicks, nick_key(nick), ban, key, "ban", out):
                return
            what = f"nick {nick}"
            holder = self.nicks.get(nick_key(nick))
            victims = [holder] if holder is not None and holder != key else []
        else:
            self._to(out, key, _error("bad_field", "ban takes a nick or an ip", "ban"))
            return
        left = ban.left(self.clock())
        for victim in victims:
            self._cut(victim, "banned", f"you are banned ({what}) {left}"
                      f"{self._why(ban.by, ban.reason)}", ban.by, ban.reason, out)
        self.moderation["ban"] += 1
        own = ip is not None and self.clients[key].ip == ip
        self._notice(out, key, f"banned {what} {left}; {len(victims)} connection(s) closed"
                     + ("; it is your own address: you could not reconnect" if own else ""))

    def _op_unban(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self._client(worker, req, out)
        if key is None:
            return
        ip = ip_key(str(req["ip"])) if req.get("ip") else None
        if ip is not None:
            found = self.banned_ips.pop(ip, None)
            what = f"address {ip}"
            out.append((ANNOUNCE, self._bans_body()))
        else:
            found = self.banned_nicks.pop(nick_key(str(req.get("nick"))), None)
            what = f"nick {req.get('nick')}"
        self._notice(out, key, f"unbanned {what}" if found else f"{what} was not banned")

    def _op_mute(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self._client(worker, req, out)
        if key is None:
            return
        nick = str(req.get("nick"))
        mute = self._sanction_from(key, req)
        if not self._store(self.muted, nick_key(nick), mute, key, "mute", out):
            return
        self.moderation["mute"] += 1
        left = mute.left(self.clock())
        target = self.nicks.get(nick_key(nick))
        if target is not None:
            self._notice(out, target, f"you are muted {left}{self._why(mute.by, mute.reason)}")
        self._notice(out, key, f"muted {nick} {left}"
                     + ("" if target is not None else " (not connected now)"))

    def _op_unmute(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self._client(worker, req, out)
        if key is None:
            return
        nick = str(req.get("nick"))
        found = self.muted.pop(nick_key(nick), None)
        target = self.nicks.get(nick_key(nick))
        if found is not None and target is not None:
            self._notice(out, target, f"you may speak again ({self.clients[key].nick})")
        self._notice(out, key, f"unmuted {nick}" if found else f"{nick} was not muted")

    _HANDLERS: dict[str, Callable[[HubState, str, dict[str, Any], Out], None]] = {
        "hb": _op_hb,
        "hello": _op_hello,
        "join": _op_join,
        "part": _op_part,
        "say": _op_say,
        "whisper": _op_whisper,
        "nick": _op_nick,
        "who": _op_who,
        "history": _op_history,
        "rooms": _op_rooms,
        "gone": _op_gone,
        "bye": _op_bye,
        "echo": _op_echo,
        "ping": _op_ping,
        "credit": _op_credit,
        "fill": _op_fill,
        "worker_gone": _op_worker_gone,
        "auth_fail": _op_auth_fail,
        "sync": _op_sync,
        "kick": _op_kick,
        "ban": _op_ban,
        "unban": _op_unban,
        "mute": _op_mute,
        "unmute": _op_unmute,
    }
