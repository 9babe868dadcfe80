"""The memory engine: the relay's state in this one hub process (the default).

One authority per fact: nick ownership (case-insensitive), the clients and
the rooms they are in, each room's seq and ring (rooms.py, under the
budgets), bans and mutes (memory only: a hub restart lifts them), and the
failed-password counts (authguard.py). With --history-db, history and seqs
are also written behind to SQLite (historydb.py) and come back lazily.
Implements relay.hub.engine.Engine; read that for what each method promises.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence

from relay.hub.authguard import AuthGuard
from relay.hub.chathistory import select as select_history
from relay.hub.engine import ClientRec, Sanction, SanctionKind
from relay.hub.history import after as page_after
from relay.hub.history import latest as page_latest
from relay.hub.historydb import HistoryStore
from relay.hub.replies import Body, ConnKey, Out
from relay.hub.rooms import RoomTable
from transports.validate import nick_key

log = logging.getLogger("chat_relay.hub")


def _ignore(name: str) -> None:
    """The default on_forget, until a hub sets its own."""


class MemoryEngine:
    """Every fact the hub decides on, in this process's memory."""

    def __init__(self, *, epoch: int, history_len: int = 1000,
                 store: HistoryStore | None = None, history_bytes: int = 128 * 1024 * 1024,
                 max_rooms: int = 10_000, room_ttl: float = 3600.0,
                 auth: AuthGuard | None = None) -> None:
        self.epoch = epoch
        self.on_forget: Callable[[str], None] = _ignore
        self.clients: dict[ConnKey, ClientRec] = {}
        self.nicks: dict[str, ConnKey] = {}
        self.table = RoomTable(history_len=history_len, history_bytes=history_bytes,
                               max_rooms=max_rooms, room_ttl=room_ttl, store=store,
                               on_forget=lambda name: self.on_forget(name))
        self.rooms = self.table.rooms  # name -> Room, the same dict
        self.store = store
        self.banned_nicks: dict[str, Sanction] = {}  # nick_key -> ban
        self.banned_ips: dict[str, Sanction] = {}    # ip_key -> ban
        self.muted: dict[str, Sanction] = {}         # nick_key -> mute
        self._sanctions: dict[SanctionKind, dict[str, Sanction]] = {
            "nick": self.banned_nicks, "ip": self.banned_ips, "mute": self.muted}
        self.auth = auth if auth is not None else AuthGuard()  # failed passwords, relay-wide

    # Clients and nicks ----------------------------------------------------------

    def client(self, key: ConnKey) -> ClientRec | None:
        return self.clients.get(key)

    def clients_on(self, worker: str) -> list[ConnKey]:
        return [k for k in self.clients if k[0] == worker]

    def clients_at(self, ip: str) -> list[ConnKey]:
        return [k for k, c in self.clients.items() if c.ip == ip]

    def client_count(self) -> int:
        return len(self.clients)

    def register(self, rec: ClientRec) -> bool:
        nick = nick_key(rec.nick)
        if nick in self.nicks:
            return False
        key = (rec.worker, rec.conn)
        self.clients[key] = rec
        self.nicks[nick] = key
        return True

    def unregister(self, key: ConnKey) -> ClientRec | None:
        rec = self.clients.pop(key, None)
        if rec is not None:
            self.nicks.pop(nick_key(rec.nick), None)
        return rec

    def nick_owner(self, nick: str) -> ConnKey | None:
        return self.nicks.get(nick_key(nick))

    def rename(self, key: ConnKey, new: str) -> None:
        rec = self.clients[key]
        del self.nicks[nick_key(rec.nick)]
        self.nicks[nick_key(new)] = key
        rec.nick = new

    def set_away(self, key: ConnKey, text: str) -> None:
        self.clients[key].away = text

    # Rooms and members ----------------------------------------------------------

    def room_count(self) -> int:
        return len(self.rooms)

    def open_room(self, name: str, force: bool = False) -> bool:
        return self.table.open(name, force) is not None

    def join(self, name: str, key: ConnKey) -> bool:
        self.clients[key].rooms[name] = None
        return self.table.add_member(self.rooms[name], key)

    def part(self, name: str, key: ConnKey) -> None:
        self.rooms[name].members.pop(key, None)
        self.clients[key].rooms.pop(name, None)

    def vacated(self, name: str, mono: float) -> None:
        room = self.rooms.get(name)
        if room is not None:
            self.table.vacated(room, mono)

    def members(self, name: str, limit: int | None = None) -> list[ConnKey]:
        members = self.rooms[name].members
        if limit is None or limit >= len(members):
            return list(members)
        return list(itertools.islice(members, limit))

    def member_count(self, name: str) -> int:
        room = self.rooms.get(name)
        return 0 if room is None else len(room.members)

    def is_member(self, name: str, key: ConnKey) -> bool:
        room = self.rooms.get(name)
        return room is not None and key in room.members

    def occupied(self) -> list[tuple[int, str]]:
        return [(len(r.members), r.name) for r in self.rooms.values() if r.members]

    def quiet(self, name: str) -> bool:
        room = self.rooms.get(name)
        return room is not None and room.quiet

    def set_quiet(self, name: str, quiet: bool) -> None:
        self.rooms[name].quiet = quiet

    # Sequencing and history -----------------------------------------------------

    def sequence(self, name: str, bodies: Sequence[Body]) -> Sequence[Body]:
        room = self.rooms[name]
        for body in bodies:
            self.table.append(room, body)
        return bodies

    def seq(self, name: str) -> int | None:
        room = self.rooms.get(name)
        return None if room is None else room.seq

    def raise_seq(self, name: str, seq: int) -> None:
        room = self.rooms[name]
        room.seq = max(room.seq, seq)

    def first_seq(self, name: str) -> int:
        return self.rooms[name].first_seq

    def latest(self, name: str, limit: int) -> tuple[list[Body], bool]:
        return page_latest(self.rooms[name].history, limit)

    def after(self, name: str, seq: int, limit: int | None) -> tuple[list[Body], bool]:
        room = self.rooms[name]
        return page_after(room.history, room.first_seq, seq, limit)

    def select(self, name: str, sub: str, refs: Sequence[tuple[str, int]],
               limit: int) -> list[Body]:
        room = self.rooms[name]
        return select_history(room.history, room.first_seq, sub, refs, limit)

    def last_ts(self, name: str) -> int | None:
        hist = self.rooms[name].history
        return int(hist[-1].get("ts", 0)) if hist else None

    # Moderation and failed passwords -------------------------------------------

    def sanction(self, kind: SanctionKind, key: str, now: int) -> Sanction | None:
        table = self._sanctions[kind]
        found = table.get(key)
        if found is not None and found.until and found.until <= now:
            del table[key]
            return None
        return found

    def sanctions(self, kind: SanctionKind) -> dict[str, Sanction]:
        return self._sanctions[kind]

    def set_sanction(self, kind: SanctionKind, key: str, sanction: Sanction, cap: int,
                     now: int) -> bool:
        table = self._sanctions[kind]
        if key not in table and len(table) >= cap:
            for k in [k for k, s in table.items() if s.until and s.until <= now]:
                del table[k]
            if len(table) >= cap:
                return False
        table[key] = sanction
        return True

    def lift(self, kind: SanctionKind, key: str) -> Sanction | None:
        return self._sanctions[kind].pop(key, None)

    def auth_fail(self, req: Body, now: int) -> Body | None:
        return self.auth.on_fail(req, now)

    def auth_blocks(self, now: int) -> dict[str, int]:
        return self.auth.blocks(now)

    # Upkeep ---------------------------------------------------------------------

    def expire(self, mono: float) -> None:
        self.table.expire(mono)

    def flush(self) -> None:
        """Commit the batch's messages to the history db (one transaction)."""
        store = self.store
        if store is None or (not store.staged and not store.due):
            return
        try:
            store.commit()
        except Exception as exc:
            # Keep serving from memory; the staged messages are retried next batch.
            log.error("history db %s: write failed (%s); %d message(s) waiting",
                      store.path, exc, store.staged)

    wake_fd: int | None = None  # nothing arrives from elsewhere

    def outgoing(self, out: Out) -> Out:
        return out  # this hub publishes everything itself

    def incoming(self) -> Out:
        return []  # one hub sequences everything: nothing comes from elsewhere

    def close(self) -> None:
        if self.store is not None:
            self.flush()
            self.store.close()
