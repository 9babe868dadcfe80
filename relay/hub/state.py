"""The hub's logic without sockets: one request in, ordered (topic, item) out.

Requests come in as dicts (from a worker's batch); `HubState.handle` finds
the handler of the request's `op` and every reply or broadcast it makes goes
out as (topic, item) in the order it was produced (replies.py lists the
items). Order matters: a `joined` and the room's later messages must reach a
worker in the order the hub decided them, so the I/O layer only coalesces
consecutive items of one topic, never reorders.

This module keeps what is about workers, not clients: a worker the hub does
not know (the hub restarted, or expired it) is asked to re-announce its
clients (`_resync`) and its requests are held until it has (`sync`); a
silent worker is forgotten with its clients; a handler that raises costs its
request only. The handlers live in members.py, requests.py and
moderation.py; every fact they decide on lives behind the engine seam
(engine.py), in memory.py unless an engine is given.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from relay.bus import messages as m
from relay.bus.wire import ANNOUNCE, log_contained, worker_topic
from relay.hub.authguard import AuthGuard
from relay.hub.engine import ClientRec, Engine, EngineUnavailable, Sanction
from relay.hub.historydb import HistoryStore
from relay.hub.members import Membership
from relay.hub.memory import MemoryEngine
from relay.hub.moderation import Moderation
from relay.hub.presence import PendingPresence, Presence
from relay.hub.replies import ConnKey, Out, conn_key, now_ms, to
from relay.hub.requests import Chat
from relay.hub.rooms import Room
from transports.errors import error_body as error
from transports.validate import ip_key, nick_key

log = logging.getLogger("chat_relay.hub")

__all__ = ["HubState", "Out"]

MAX_STASH = 100_000  # requests held per worker while it re-announces its clients
Handler = Callable[[str, dict[str, Any], Out], None]


class HubState:
    """Everything the hub decides; `handle()` turns one request into output items."""

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
        join_replay: int = 20,
        join_replay_rooms: int = 10,
        presence_limit: int = 500,
        presence_interval: float = 0.0,
        engine: Engine | None = None,
    ) -> None:
        if engine is None:
            engine = MemoryEngine(epoch=epoch, history_len=history_len, store=store,
                                  history_bytes=history_bytes, max_rooms=max_rooms,
                                  room_ttl=room_ttl, auth=auth)
        self.engine = engine
        self.epoch = engine.epoch
        self.server = server
        self.worker_timeout = worker_timeout
        self.clock = clock
        self.presence = Presence(engine, presence_limit, presence_interval)
        engine.on_forget = self.presence.forget
        self.members = Membership(engine, self.presence,
                                  max_rooms_per_client=max_rooms_per_client,
                                  join_replay=join_replay, join_replay_rooms=join_replay_rooms)
        self.mod = Moderation(engine, self.members, clock)
        self.chat = Chat(engine, self.members, self.mod, self.presence, clock)
        self.workers: dict[str, float] = {}  # worker -> last heartbeat (monotonic)
        self.awaiting_sync: dict[str, list[dict[str, Any]]] = {}
        self.expired: set[str] = set()  # workers whose clients others saw leave
        self._guest = itertools.count(1)
        self.contained = 0  # requests dropped because handling them raised
        self._seen_failures: set[tuple[str, str]] = set()
        chat, mod = self.chat, self.mod
        self._handlers: dict[str, Handler] = {
            m.Heartbeat.OP: self._op_hb, m.Hello.OP: self._op_hello, m.Join.OP: chat.op_join,
            m.Part.OP: chat.op_part, m.Say.OP: chat.op_say, m.Whisper.OP: chat.op_whisper,
            m.Nick.OP: chat.op_nick, m.Who.OP: chat.op_who, m.History.OP: chat.op_history,
            m.ChatHistory.OP: chat.op_chathistory, m.Whois.OP: chat.op_whois,
            m.Away.OP: chat.op_away, m.Rooms.OP: chat.op_rooms, m.Gone.OP: self._op_gone,
            m.Bye.OP: self._op_bye, m.Echo.OP: chat.op_echo, m.Ping.OP: chat.op_ping,
            m.Fill.OP: chat.op_fill, m.WorkerGone.OP: self._op_worker_gone,
            m.AuthFail.OP: self._op_auth_fail, m.Sync.OP: self._op_sync,
            m.Credit.OP: self._op_credit,
            m.Kick.OP: mod.op_kick, m.Ban.OP: mod.op_ban, m.Unban.OP: mod.op_unban,
            m.Mute.OP: mod.op_mute, m.Unmute.OP: mod.op_unmute,
        }

    # Dispatch ---------------------------------------------------------------

    def handle(self, worker: str, req: dict[str, Any], out: Out, mono: float) -> None:
        op = m.op_of(req)
        self.presence.mono = mono
        if worker not in self.workers:
            if op == m.Heartbeat.OP and req.get("hello"):
                pass  # a fresh worker: it has no clients yet
            elif op in (m.Sync.OP, m.WorkerGone.OP):
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
                if op != m.Heartbeat.OP and len(stash) < MAX_STASH:
                    stash.append(req)
                return
        self.workers[worker] = mono
        handler = self._handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            return  # an unknown op from a newer worker is not our business to crash on
        try:
            handler(worker, req, out)
        except Exception as exc:
            self._failed(worker, req, exc, out)
        if op == m.Sync.OP:
            for held in self.awaiting_sync.pop(worker, []):
                self.handle(worker, held, out, mono)

    def _failed(self, worker: str, req: dict[str, Any], exc: Exception, out: Out) -> None:
        """A request whose handling raised (a value validation let through):
        dropped with one log line and an error to its sender; the hub goes on.
        What it changed before raising stays, with the output that says so."""
        op, conn = str(m.op_of(req)), req.get("c")
        if isinstance(exc, EngineUnavailable):  # the store is away: say so, keep the client
            if isinstance(conn, int) and op not in (m.Gone.OP, m.AuthFail.OP):
                body = error("unavailable", f"the relay cannot reach its message store "
                             f"right now; your {op} was not done, try again shortly", op)
                if op == m.Say.OP and req.get("id") is not None:
                    body["id"] = req["id"]
                to(out, (worker, conn), body)
            return
        self.contained += 1
        log_contained(log, self._seen_failures, f"{op} request from {worker}/{conn}", exc)
        if isinstance(conn, int) and op != m.Gone.OP:
            to(out, (worker, conn), error(
                "bad_field", f"the relay could not handle this {op} ({type(exc).__name__}); "
                "it was dropped", op))

    # Upkeep (the process loop calls these) ------------------------------------

    def expire_workers(self, mono: float) -> Out:
        """Forget workers silent for longer than worker_timeout (kill -9, cut link)."""
        out: Out = []
        self.presence.mono = mono
        for worker, seen in list(self.workers.items()):
            if mono - seen > self.worker_timeout:
                self.drop_worker(worker, out)
        return out

    def drop_worker(self, worker: str, out: Out) -> None:
        if self.workers.pop(worker, None) is not None:
            self.expired.add(worker)
        self.awaiting_sync.pop(worker, None)
        for key in self.engine.clients_on(worker):
            self.members.leave(key, out)

    def expire_rooms(self, mono: float) -> None:
        """Forget rooms empty and silent for longer than the room TTL (every beat)."""
        self.engine.expire(mono)

    def flush_presence(self, mono: float, out: Out) -> None:
        """Send every presence batch whose interval is over (each wake)."""
        self.presence.flush(mono, out)

    def presence_due(self) -> float | None:
        """When the next presence batch is due (monotonic), or None."""
        return self.presence.due()

    # Workers and their clients ------------------------------------------------

    def _op_hb(self, worker: str, req: dict[str, Any], out: Out) -> None:
        if req.get("hello"):
            out.append((worker_topic(worker), [None, {"t": "_ready", "epoch": self.epoch}]))
            if self.mod.any_bans():
                out.append((worker_topic(worker), [None, self.mod.bans_body()]))

    def _op_hello(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = (worker, int(req["c"]))
        engine = self.engine
        if engine.client(key) is not None:
            to(out, key, error("bad_field", "already said hello", "hello"))
            return
        nick = req.get("nick")
        ip = ip_key(str(req.get("ip") or "")) or ""
        if self.mod.refuse_banned(key, nick, ip, out):
            return
        guest = nick is None
        if nick is None:
            nick = self._guest_nick()
        # A shared engine's hosts count guests alike: a guest nick claimed meanwhile
        # on another host is skipped, not refused.
        while not engine.register(ClientRec(worker, key[1], nick, ip=ip)):
            if guest and int(nick.rpartition("-")[2]) < 1_000_000:
                nick = self._guest_nick()
                continue
            to(out, key, error("nick_taken", f"nick {nick} is taken", "hello", nick=nick))
            return
        # `epoch` (extension): a client that sees it change knows the relay
        # restarted and its history is gone (with --history-db it persists).
        to(out, key, {"t": "welcome", "v": 1, "nick": nick, "server": self.server,
                      "epoch": self.epoch})
        resume: dict[str, int] = req.get("resume") or {}
        replays = self.members.join_replay_rooms  # bounds what one hello can pile up at once
        for name in req.get("rooms", []):
            if name not in resume:
                replays -= self.members.join(key, name, out, ref="hello", replay=replays > 0)
        for name, seq in resume.items():
            self.members.join(key, name, out, resume=seq, ref="hello")

    def _guest_nick(self) -> str:
        banned = self.engine.sanctions("nick")
        while True:
            nick = f"guest-{next(self._guest)}"
            if self.engine.nick_owner(nick) is None and nick_key(nick) not in banned:
                return nick

    def _op_gone(self, worker: str, req: dict[str, Any], out: Out) -> None:
        self.members.leave(conn_key(worker, req), out)

    def _op_bye(self, worker: str, req: dict[str, Any], out: Out) -> None:
        """A barrier: by the time `_bye` reaches the worker, everything due before it has.
        Its reason is kept for the parts its connection's end will cause."""
        key = conn_key(worker, req)
        client = self.engine.client(key)
        if client is not None and req.get("reason"):
            client.quit_reason = str(req["reason"])
        to(out, key, {"t": "_bye"})

    def _op_credit(self, worker: str, req: dict[str, Any], out: Out) -> None:
        """A receipt for the worker's credit window (relay/overload.py): it travels
        behind everything this request's batch produced, on the worker's pipe."""
        out.append((worker_topic(worker), [None, {"t": "_credit", "n": req.get("n")}]))

    def _op_auth_fail(self, worker: str, req: dict[str, Any], out: Out) -> None:
        """A wrong password on any worker; a block it starts goes to every worker."""
        block = self.engine.auth_fail(req, self.clock())
        if block is not None:
            out.append((ANNOUNCE, block))

    def _op_worker_gone(self, worker: str, req: dict[str, Any], out: Out) -> None:
        self.drop_worker(str(req.get("w", "")), out)

    def _op_sync(self, worker: str, req: dict[str, Any], out: Out) -> None:
        """A worker re-announces its clients to a hub that restarted (new epoch).

        Each entry is [conn, nick, {room: last seq seen}]. Seq continues from
        the highest seq any worker saw, so no seq is ever handed out twice.
        """
        engine = self.engine
        returning = worker in self.expired  # others saw these clients leave
        self.expired.discard(worker)
        out.append((worker_topic(worker), [None, self.mod.bans_body()]))  # replaces stale ones
        for conn, nick, rooms in req.get("clients", []):
            key = (worker, int(conn))
            if engine.client(key) is not None or not engine.register(
                    ClientRec(worker, key[1], nick)):
                continue
            for name, seq in rooms.items():
                engine.open_room(name, force=True)  # over a budget or not: these members exist
                engine.raise_seq(name, int(seq))
                engine.join(name, key)
                if returning:
                    self.presence.announce(name, key, {"nick": nick, "event": "join"}, out)

    # Views for tests and tools (the memory engine's tables, the counters) ------

    @property
    def memory(self) -> MemoryEngine:
        """The engine, when it is the memory engine (tests look inside it)."""
        assert isinstance(self.engine, MemoryEngine), type(self.engine)
        return self.engine

    @property
    def messages(self) -> int:
        return self.chat.messages

    @property
    def moderation(self) -> Counter[str]:
        return self.mod.actions

    @property
    def rooms(self) -> dict[str, Room]:
        return self.memory.rooms

    @property
    def clients(self) -> dict[ConnKey, ClientRec]:
        return self.memory.clients

    @property
    def nicks(self) -> dict[str, ConnKey]:
        return self.memory.nicks

    @property
    def banned_nicks(self) -> dict[str, Sanction]:
        return self.memory.banned_nicks

    @property
    def history_used(self) -> int:
        return self.memory.table.history_used

    @property
    def history_bytes(self) -> int:
        return self.memory.table.history_bytes

    @history_bytes.setter
    def history_bytes(self, value: int) -> None:
        self.memory.table.history_bytes = value

    @property
    def forgotten(self) -> int:
        return self.memory.table.forgotten

    @property
    def evicted(self) -> int:
        return self.memory.table.evicted

    @property
    def _tombs(self) -> dict[str, int]:
        return self.memory.table._tombs

    @property
    def _pending(self) -> dict[str, PendingPresence]:
        return self.presence._pending

    def _bans_body(self) -> dict[str, Any]:
        return self.mod.bans_body()
