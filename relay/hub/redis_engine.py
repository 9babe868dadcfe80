"""The Redis engine (`--engine redis://`): the relay's state in Redis, shared by hosts.

Each host runs its own hub; every hub drives this engine against one Redis,
so no host is special. Keys and scripts: redis_scripts.py; msgs and
presence through Redis: redis_traffic.py (one round trip per wake:
redis_batch.py); history and the room facts a join reads in its one round
trip: redis_rooms.py; leases and dead hosts: redis_hosts.py; the
subscription thread: redis_feed.py.

This host's clients are kept in memory too (read without a round trip, and
written through to Redis on every change), so a `say` costs no Redis call
until the wake's one pipeline. Other hosts' clients are read from Redis
when a handler asks (a whisper's target, a member list). When Redis is
unreachable, calls raise EngineUnavailable (the request gets `unavailable`);
when it comes back this host writes its clients, nicks and memberships
again (Redis may have restarted empty) and fills what its rooms missed.
Implements relay.hub.engine.Engine; read that for what each method promises.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from relay.bus.wire import pack, unpack
from relay.hub import redis_scripts as lua
from relay.hub.engine import ClientRec, EngineUnavailable, Sanction, SanctionKind
from relay.hub.redis_hosts import Hosts
from relay.hub.redis_link import Link, connect
from relay.hub.redis_moderation import Bans
from relay.hub.redis_rooms import Facts, RoomReads, join_facts, join_reads
from relay.hub.redis_scripts import ckey, parse_ckey
from relay.hub.redis_traffic import Traffic
from relay.hub.replies import Body, ConnKey, Out

log = logging.getLogger("chat_relay.hub")

CLIENTS = lua.PREFIX + "clients"
WORKERS = lua.PREFIX + "workers"
ROOMS = lua.PREFIX + "rooms"


class RedisEngine(RoomReads):
    """Every fact the hub decides on, in Redis; this host's clients cached here."""

    def __init__(self, url: str, *, password: str = "", history_len: int = 1000,
                 max_rooms: int = 10_000, room_ttl: float = 3600.0, auth_failures: int = 5,
                 auth_window_ms: int = 60_000, auth_block_ms: int = 60_000,
                 host: str | None = None, join_members: int = 500,
                 join_replay: int = 20) -> None:
        client = connect(url, password)
        self.link = Link(client, url, password)
        self.host = host or f"{socket.gethostname()}-{os.getpid()}-{time.time_ns() % 10**6}"
        self.on_forget: Callable[[str], None] = lambda name: None
        self.is_local: Callable[[str], bool] = lambda worker: False  # set by the hub
        self.local: dict[ConnKey, ClientRec] = {}   # this host's clients
        self.local_rooms: dict[str, set[ConnKey]] = {}  # room -> this host's members
        self._remote: dict[ConnKey, ClientRec | None] = {}  # other hosts' clients, this wake
        self._hosts_of: dict[str, str] = {}
        self.bans = Bans(self.link, (max(1, auth_failures), auth_window_ms, auth_block_ms))
        self.max_rooms, self.room_ttl_ms = max_rooms, int(room_ttl * 1000)
        self._relay_rooms = 0  # rooms with members relay-wide, as Redis last said
        self.facts: dict[str, Facts] = {}  # rooms' facts read this wake (redis_rooms.py)
        # What a join reads in its own round trip: the first members (a `joined`
        # list) and the newest msgs (the join replay).
        self.join_members, self.join_replay = join_members, join_replay
        self.epoch = self._epoch()
        self.hosts = Hosts(self.link, self.host, self.room_ttl_ms)
        self.hosts.rooms = lambda: self.local_rooms
        self.hosts.register()
        self.feed = self.link.feed([lua.host_key(self.host, "ch"), lua.ALL_CHANNEL])
        self.wake_fd: int | None = self.feed.wake_fd
        self.traffic = Traffic(self.link, self.feed, self.host, history_len,
                               lambda w: self.is_local(w), self._host_of)
        self.traffic.on_forgotten = self._forgotten

    def _epoch(self) -> int:
        now = time.time_ns() // 1_000_000
        key = lua.PREFIX + "epoch"
        _, got = self.link.pipe(lambda p: (p.set(key, now, nx=True), p.get(key)))
        return int(got)

    # Records ----------------------------------------------------------------------

    def _blob(self, rec: ClientRec) -> bytes:
        return pack([rec.nick, rec.ip, rec.away, self.host, rec.quit_reason, list(rec.rooms)])

    def _save(self, rec: ClientRec, p: Any) -> Any:
        return p.hset(CLIENTS, ckey((rec.worker, rec.conn)), self._blob(rec))

    def _load(self, key: ConnKey, blob: bytes | None) -> ClientRec | None:
        if blob is None:
            return None
        nick, ip, away, host, reason, rooms = unpack(blob)
        self._hosts_of.setdefault(key[0], host)
        return ClientRec(key[0], key[1], nick, dict.fromkeys(rooms), ip, away, reason)

    def _host_of(self, worker: str) -> str | None:
        host = self._hosts_of.get(worker)
        if host is None:
            try:
                raw = self.link.run(lambda r: r.hget(WORKERS, worker))
            except EngineUnavailable:
                return None
            if raw is not None:
                host = self._hosts_of[worker] = raw.decode()
        return host

    def _prefetch(self, keys: Sequence[ConnKey]) -> None:
        want = [k for k in keys if k not in self.local and k not in self._remote]
        if want:
            blobs = self.link.run(lambda r: r.hmget(CLIENTS, [ckey(k) for k in want]))
            for k, blob in zip(want, blobs, strict=True):
                self._remote[k] = self._load(k, blob)

    def _write(self, rec: ClientRec) -> None:
        """Write a record back (a remote one too: a kick from this host parts it)."""
        self.link.run(lambda r: r.hset(CLIENTS, ckey((rec.worker, rec.conn)), pack(
            [rec.nick, rec.ip, rec.away, self._hosts_of.get(rec.worker, self.host),
             rec.quit_reason, list(rec.rooms)])))

    # Clients and nicks ----------------------------------------------------------

    def client(self, key: ConnKey) -> ClientRec | None:
        rec = self.local.get(key)
        if rec is None and key[0] and not self.is_local(key[0]):
            self._prefetch([key])
            rec = self._remote.get(key)
        return rec

    def clients_on(self, worker: str) -> list[ConnKey]:
        return [k for k in self.local if k[0] == worker]

    def clients_at(self, ip: str) -> list[ConnKey]:
        """Relay-wide (the address index): an IP ban cuts every host's clients, the
        other hosts' through their workers' channels like any reply."""
        raw = self.link.run(lambda r: r.smembers(lua.ip_rkey(ip)))
        keys = sorted({parse_ckey(k) for k in raw} | {k for k, c in self.local.items()
                                                      if c.ip == ip})
        self._prefetch(keys)
        found = [k for k in keys if (c := self.client(k)) is not None and c.ip == ip]
        return found

    def client_count(self) -> int:
        return len(self.local)

    def register(self, rec: ClientRec) -> bool:
        key = (rec.worker, rec.conn)
        ks = ckey(key)
        self._hosts_of[rec.worker] = self.host
        # One round trip: the nick (SET NX) and the record behind it; a nick that
        # was taken costs a second one that takes the record back.
        got, *_ = self.link.pipe(lambda p: (p.set(lua.nick_rkey(rec.nick), ks, nx=True),
                                            self._save(rec, p),
                                            p.sadd(lua.host_key(self.host, "clients"), ks),
                                            p.hset(WORKERS, rec.worker, self.host),
                                            rec.ip and p.sadd(lua.ip_rkey(rec.ip), ks)))
        if not got:
            self.link.pipe(lambda p: (p.hdel(CLIENTS, ks),
                                      p.srem(lua.host_key(self.host, "clients"), ks),
                                      rec.ip and p.srem(lua.ip_rkey(rec.ip), ks)))
            return False
        self.local[key] = rec
        return True

    def unregister(self, key: ConnKey) -> ClientRec | None:
        rec = self.local.pop(key, None)
        if rec is None:
            return None
        ks = ckey(key)
        self.link.pipe(lambda p: (
            self.link.release_nick(keys=[lua.nick_rkey(rec.nick)], args=[ks], client=p),
            p.hdel(CLIENTS, ks), p.srem(lua.host_key(self.host, "clients"), ks),
            rec.ip and p.srem(lua.ip_rkey(rec.ip), ks)))
        return rec

    def nick_owner(self, nick: str) -> ConnKey | None:
        raw = self.link.run(lambda r: r.get(lua.nick_rkey(nick)))
        return None if raw is None else parse_ckey(raw)

    def rename(self, key: ConnKey, new: str) -> None:
        rec = self.local[key]
        ks = ckey(key)
        old = rec.nick
        if lua.nick_rkey(old) != lua.nick_rkey(new):
            if not self.link.run(lambda r: r.set(lua.nick_rkey(new), ks, nx=True)):
                raise ValueError(f"nick {new} was taken on another host meanwhile")
        rec.nick = new
        self.link.pipe(lambda p: (
            self._save(rec, p),
            lua.nick_rkey(old) != lua.nick_rkey(new) and self.link.release_nick(
                keys=[lua.nick_rkey(old)], args=[ks], client=p)))

    def set_away(self, key: ConnKey, text: str) -> None:
        rec = self.local[key]
        rec.away = text
        self._write(rec)

    # Rooms and members ----------------------------------------------------------

    def room_count(self) -> int:
        """Rooms with members relay-wide, as last seen (this host's, at least)."""
        return max(self._relay_rooms, len(self.local_rooms))

    def open_room(self, name: str, force: bool = False) -> bool:
        """--max-rooms counts rooms with members on any host (an empty room costs
        only its capped stream, which expires after --room-ttl)."""
        if name in self.local_rooms:
            return True
        ok, count = self.link.run(lambda r: self.link.open_room(
            keys=[ROOMS], args=[name, self.max_rooms, int(force)], client=r))
        self._relay_rooms = int(count)
        return bool(ok)

    def join(self, name: str, key: ConnKey) -> bool:
        """One round trip: the membership, and what the join's replies need
        (redis_rooms.join_reads), kept as the room's facts for this wake."""
        rec = self.client(key)
        assert rec is not None, key
        rec.rooms[name] = None
        ks, now = ckey(key), time.time_ns() // 1000
        replay = self.join_replay

        def fill(p: Any) -> None:
            p.zadd(lua.room_key(name, "mem"), {ks: now}, nx=True)
            p.sadd(ROOMS, name)
            p.persist(lua.room_key(name, "log"))
            p.hset(CLIENTS, ks, pack([rec.nick, rec.ip, rec.away,
                                      self._hosts_of.get(key[0], self.host),
                                      rec.quit_reason, list(rec.rooms)]))
            join_reads(p, name, self.join_members, replay)

        res = self.link.pipe(fill)
        self.facts[name], seq = join_facts(res[4:], replay)
        if key in self.local:
            self.local_rooms.setdefault(name, set()).add(key)
            self.traffic.watch(name, seq)
        return bool(res[0])

    def part(self, name: str, key: ConnKey) -> None:
        rec = self.client(key)
        if rec is not None:
            rec.rooms.pop(name, None)
        mem, ks = lua.room_key(name, "mem"), ckey(key)
        res = self.link.pipe(lambda p: (
            p.zrem(mem, ks), rec is not None and p.hset(CLIENTS, ks, pack(
                [rec.nick, rec.ip, rec.away, self._hosts_of.get(rec.worker, self.host),
                 rec.quit_reason, list(rec.rooms)])),
            p.zcard(mem), p.exists(lua.room_key(name, "quiet"))))
        self.facts[name] = Facts(int(res[-2]), bool(res[-1]))  # members unread
        if rec is not None:
            host = None if key in self.local else self._host_of(key[0])
            if host is not None and host != self.host:  # its host must not part it again
                self.traffic.forget(host, key[0], key[1], name)
        self._drop_local(name, key)

    def _forgotten(self, worker: str, conn: int, name: str) -> None:
        """Another hub took our client out of `name` (and announced it): forget it."""
        rec = self.local.get((worker, conn))
        if rec is not None:
            rec.rooms.pop(name, None)
        self._drop_local(name, (worker, conn))

    def _drop_local(self, name: str, key: ConnKey) -> None:
        here = self.local_rooms.get(name)
        if here is not None:
            here.discard(key)
            if not here:
                del self.local_rooms[name]
                self.traffic.unwatch(name)

    def vacated(self, name: str, mono: float) -> None:
        self.hosts.vacate([name])

    def members(self, name: str, limit: int | None = None) -> list[ConnKey]:
        facts = self.facts.get(name)
        first = None if facts is None else facts.members
        if facts is not None and first is not None and (
                len(first) >= facts.count or (limit is not None and limit <= len(first))):
            keys = first[:limit]
        else:
            end = -1 if limit is None else limit - 1
            raw = self.link.run(lambda r: r.zrange(lua.room_key(name, "mem"), 0, end))
            keys = [parse_ckey(k) for k in raw]
        self._prefetch(keys)
        return [k for k in keys if k in self.local or self._remote.get(k) is not None]

    def member_count(self, name: str) -> int:
        facts = self.facts.get(name)
        if facts is not None:
            return facts.count
        return int(self.link.run(lambda r: r.zcard(lua.room_key(name, "mem"))))

    def is_member(self, name: str, key: ConnKey) -> bool:
        rec = self.local.get(key)
        if rec is not None:
            return name in rec.rooms
        return self.link.run(lambda r: r.zscore(lua.room_key(name, "mem"), ckey(key))) is not None

    def occupied(self) -> list[tuple[int, str]]:
        names = sorted(n.decode() for n in self.link.run(lambda r: r.smembers(ROOMS)))
        counts = self.link.pipe(lambda p: [p.zcard(lua.room_key(n, "mem")) for n in names])
        return [(int(c), n) for c, n in zip(counts, names, strict=True) if c]

    def quiet(self, name: str) -> bool:
        facts = self.facts.get(name)
        if facts is not None:
            return facts.quiet
        return bool(self.link.run(lambda r: r.exists(lua.room_key(name, "quiet"))) == 1)

    def set_quiet(self, name: str, quiet: bool) -> None:
        key = lua.room_key(name, "quiet")
        self.link.run(lambda r: r.set(key, 1) if quiet else r.delete(key))
        facts = self.facts.get(name)
        if facts is not None:
            facts.quiet = quiet

    # Sequencing (history and seq reads: redis_rooms.RoomReads) -------------------

    def sequence(self, name: str, bodies: Sequence[Body]) -> Sequence[Body]:
        if not self.link.up:
            raise EngineUnavailable(f"redis at {self.link.url} is unreachable")
        return bodies  # seqs come from the wake's pipeline (outgoing), atomically

    # Moderation and failed passwords (redis_moderation.py) --------------------

    def sanction(self, kind: SanctionKind, key: str, now: int) -> Sanction | None:
        return self.bans.sanction(kind, key, now)

    def sanctions(self, kind: SanctionKind) -> dict[str, Sanction]:
        return self.bans.sanctions(kind)

    def set_sanction(self, kind: SanctionKind, key: str, sanction: Sanction, cap: int,
                     now: int) -> bool:
        return self.bans.set_sanction(kind, key, sanction, cap, now)

    def lift(self, kind: SanctionKind, key: str) -> Sanction | None:
        return self.bans.lift(kind, key)

    def auth_fail(self, req: Body, now: int) -> Body | None:
        return self.bans.auth_fail(req, now)

    def auth_blocks(self, now: int) -> dict[str, int]:
        return self.bans.auth_blocks(now)

    # Upkeep ---------------------------------------------------------------------

    def expire(self, mono: float) -> None:
        """Each heartbeat: the lease, dead hosts, a returning Redis, missed msgs."""
        self.facts.clear()  # a dead host's cleanup changes rooms
        if self.link.probe():
            self._resync()
        if self.link.up:
            self.hosts.beat(mono)
            self.traffic.check_all()

    def _resync(self) -> None:
        """Redis is back (perhaps empty): write this host's facts again."""
        self.epoch_key_again()
        self.hosts.register()
        for key, rec in self.local.items():
            self.hosts.rewrite(ckey(key), rec, self._blob(rec))
        self.traffic.check_all()

    def epoch_key_again(self) -> None:
        self.link.run(lambda r: r.set(lua.PREFIX + "epoch", self.epoch, nx=True))  # if lost

    def flush(self) -> None:
        self._remote.clear()  # other hosts' records are read afresh next wake
        self.facts.clear()    # and rooms' facts (redis_rooms.py), and sanctions
        self.bans.forget()

    def outgoing(self, out: Out) -> Out:
        return self.traffic.outgoing(out)

    def incoming(self) -> Out:
        return self.traffic.incoming()

    def close(self) -> None:
        try:
            self.traffic.drain()
            self.hosts.leave()
        except EngineUnavailable:
            pass
        self.feed.close()
        self.link.r.close()
