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
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relay.bus import ANNOUNCE, log_contained, room_topic, worker_topic
from relay.historydb import HistoryStore
from transports.validate import HISTORY_MAX_LIMIT, ip_key, nick_key

log = logging.getLogger("chat_relay.hub")

Out = list[tuple[bytes, Any]]
FILL_MAX = 1000  # messages resent per fill request
MAX_STASH = 100_000  # requests held per worker while it re-announces its clients
MAX_SANCTIONS = 10_000  # bans by nick, bans by IP, mutes: each list holds at most this many
ConnKey = tuple[str, int]


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
    ) -> None:
        self.epoch = epoch
        self.history_len = history_len
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
        self.contained = 0  # requests dropped because handling them raised
        self._seen_failures: set[tuple[str, str]] = set()
        # Durable history (--history-db): rooms come back with their seq and
        # newest messages; every msg is staged for the hub's next commit.
        self.store = store
        if store is not None:
            for name, saved in store.load().items():
                kept = saved.messages[max(0, len(saved.messages) - history_len):]
                self.rooms[name] = Room(name, history_len, saved.seq, history=deque(kept))

    # Dispatch ---------------------------------------------------------------

    def handle(self, worker: str, req: dict[str, Any], out: Out, mono: float) -> None:
        op = req.get("op")
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
        try:
            handler(self, worker, req, out)
        except Exception as exc:
            self._failed(worker, req, exc, out)
        if op == "sync":
            for held in self.awaiting_sync.pop(worker, []):
                self.handle(worker, held, out, mono)

    def _failed(self, worker: str, req: dict[str, Any], exc: Exception, out: Out) -> None:
        """A request whose handling raised (a value validation let through):
        dropped with one log line and an error to its sender; the hub goes on.
        What it changed before raising stays, with the output that says so."""
        self.contained += 1
        op, conn = str(req.get("op")), req.get("c")
        log_contained(log, self._seen_failures, f"{op} request from {worker}/{conn}", exc)
        if isinstance(conn, int) and op != "gone":
            self._to(out, (worker, conn), _error(
                "bad_field", f"the relay could not handle this {op} ({type(exc).__name__}); "
                "it was dropped", op))

    def expire_workers(self, mono: float) -> Out:
        """Forget workers silent for longer than worker_timeout (kill -9, cut link)."""
        out: Out = []
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

    # Helpers ----------------------------------------------------------------

    def _room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name, self.history_len)
        return room

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

    def _join(self, key: ConnKey, name: str, out: Out, resume: int | None = None) -> None:
        client = self.clients[key]
        room = self._room(name)
        already = key in room.members
        room.members[key] = None
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
        if not room.members and room.seq == 0:
            del self.rooms[name]  # nothing to remember about an empty, silent room

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
            if self.banned_ips:
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
                self._join(key, name, out)
        for name, seq in resume.items():
            self._join(key, name, out, resume=seq)

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
        if len(room.history) > room.history_len:
            room.history.popleft()
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
            rooms = {r.name: len(r.members) for r in self.rooms.values() if r.members}
            self._to(out, key, {"t": "rooms", "rooms": rooms})

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
                room = self._room(name)
                room.seq = max(room.seq, int(seq))
                room.members[key] = None
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
        return {"t": "_bans", "ips": {ip: s.until for ip, s in self.banned_ips.items()
                                      if not s.until or s.until > now}}

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
        "fill": _op_fill,
        "worker_gone": _op_worker_gone,
        "sync": _op_sync,
        "kick": _op_kick,
        "ban": _op_ban,
        "unban": _op_unban,
        "mute": _op_mute,
        "unmute": _op_unmute,
    }
