"""Hosts sharing one Redis: each keeps a lease alive; a dead one's clients go.

Every heartbeat a host renews its lease (`cr:lease:<host>`, LEASE_MS) and
looks at the other registered hosts. A host whose lease lapsed (kill -9,
power cut, a network split longer than the lease) is cleaned up by exactly
one survivor, the one that wins its `cr:cleanup:<host>` SET NX: its clients
leave their rooms (a `part` presence on each room's channel, so every host
tells its members), their nicks come free and the host is forgotten. The
lease is 10 s and hosts look every heartbeat, so a dead host's users leave
everyone's presence well within 30 s.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from relay.bus.wire import pack, unpack
from relay.hub import redis_scripts as lua
from relay.hub.engine import ClientRec
from relay.hub.redis_link import Link

log = logging.getLogger("chat_relay.hub")

LEASE_MS = 10_000
RENEW = 2.0       # seconds between lease renewals
LOOK = 2.0        # seconds between looks for dead hosts
CLEANUP_MS = 30_000


class Hosts:
    """This host's lease, and the cleanup of hosts that lost theirs."""

    def __init__(self, link: Link, host: str, room_ttl_ms: int = 3_600_000) -> None:
        self.link = link
        self.host = host
        self.room_ttl_ms = room_ttl_ms  # a room it empties expires like any emptied room
        self._renewed = 0.0
        self._looked = 0.0
        self.rooms: Callable[[], Collection[str]] = lambda: ()  # rooms with our members

    def register(self) -> None:
        """Our lease, and our rooms in the rooms set again: `vacate` takes a room out
        before it knows the room is empty, so a racing join elsewhere may leave
        it out for a moment; each renewal (RENEW) puts it back."""
        now = time.time_ns() // 1_000_000
        rooms = sorted(self.rooms())
        self.link.pipe(lambda p: (p.hset(lua.PREFIX + "hosts", self.host, now),
                                  p.set(lua.lease_rkey(self.host), now, px=LEASE_MS),
                                  rooms and p.sadd(lua.PREFIX + "rooms", *rooms)))
        self._renewed = time.monotonic()

    def vacate(self, rooms: Collection[str]) -> None:
        """Rooms whose last member (that we know of) left: out of the rooms set (the
        --max-rooms count) and their history set to expire, unless someone joined
        meanwhile, on any host: then back into the set. The set and a room's
        keys live in different slots of a cluster, so this is two steps, not
        one script; a join racing it is repaired by that host's next renewal."""
        names = sorted(rooms)
        if not names:
            return
        ttl = self.room_ttl_ms

        def fill(p: Any) -> None:
            for room in names:
                p.srem(lua.PREFIX + "rooms", room)
                self.link.vacate(keys=[lua.room_key(room, "mem"), lua.room_key(room, "log")],
                                 args=[ttl], client=p)

        results = self.link.pipe(fill)
        busy = [room for i, room in enumerate(names) if results[2 * i + 1] == 0]
        if busy:
            self.link.run(lambda r: r.sadd(lua.PREFIX + "rooms", *busy))

    def beat(self, mono: float) -> None:
        """Renew our lease; now and then clean up the hosts whose lease is gone."""
        if mono - self._renewed >= RENEW:
            self.register()
        if mono - self._looked >= LOOK:
            self._looked = mono
            for host in self._dead():
                if self.link.run(functools.partial(self._claim, host)):
                    self.remove(host)

    def _claim(self, host: str, r: Any) -> Any:
        return self.link.claim_cleanup(
            keys=[lua.cleanup_rkey(host), lua.lease_rkey(host)],
            args=[self.host, CLEANUP_MS], client=r)

    def rewrite(self, ks: str, rec: ClientRec, blob: bytes) -> None:
        """Write one of our clients again (Redis came back, maybe empty): its nick
        (unless another host took it meanwhile), record and memberships."""
        if not self.link.run(lambda r: r.set(lua.nick_rkey(rec.nick), ks, nx=True)) and \
                self.link.run(lambda r: r.get(lua.nick_rkey(rec.nick))) != ks.encode():
            log.warning("nick %s was taken on another host while redis was away", rec.nick)
        now = time.time_ns() // 1000

        def fill(p: Any) -> None:
            p.hset(lua.PREFIX + "clients", ks, blob)
            p.sadd(lua.host_key(self.host, "clients"), ks)
            p.hset(lua.PREFIX + "workers", rec.worker, self.host)
            if rec.ip:
                p.sadd(lua.ip_rkey(rec.ip), ks)
            for name in rec.rooms:
                p.zadd(lua.room_key(name, "mem"), {ks: now}, nx=True)
                p.sadd(lua.PREFIX + "rooms", name)

        self.link.pipe(fill)

    def _dead(self) -> list[str]:
        hosts = [h.decode() for h in self.link.run(lambda r: r.hkeys(lua.PREFIX + "hosts"))]
        others = [h for h in hosts if h != self.host]
        if not others:
            return []
        alive = self.link.pipe(lambda p: [p.exists(lua.lease_rkey(h)) for h in others])
        return [h for h, up in zip(others, alive, strict=True) if up == 0]

    def remove(self, host: str) -> None:
        """Take a host's clients out of every room (announced) and free their nicks."""
        members = self.link.run(lambda r: r.smembers(lua.host_key(host, "clients")))
        keys = sorted(members)
        blobs = self.link.run(lambda r: r.hmget(lua.PREFIX + "clients", keys)) if keys else []
        workers: set[str] = set()
        rooms_left: set[str] = set()
        gone = 0

        def fill(p: Any) -> None:
            nonlocal gone
            for ks, blob in zip(keys, blobs, strict=True):
                worker, conn = ks.decode().split("\t")
                workers.add(worker)
                if blob is not None:
                    nick, ip, _away, _host, reason, rooms = unpack(blob)
                    gone += 1
                    if ip:
                        p.srem(lua.ip_rkey(ip), ks)
                    rooms_left.update(rooms)
                    for room in rooms:
                        p.zrem(lua.room_key(room, "mem"), ks)
                        event: dict[str, Any] = {"t": "presence", "room": room, "nick": nick,
                                                 "event": "part",
                                                 "reason": reason or "its relay host died"}
                        self.link.publish(p, lua.room_key(room, "ch"),
                                          b"p\n" + pack([[event, worker, int(conn), None]]))
                    self.link.release_nick(keys=[lua.nick_rkey(nick)],
                                           args=[ks], client=p)
                p.hdel(lua.PREFIX + "clients", ks)
            p.delete(lua.host_key(host, "clients"))
            p.hdel(lua.PREFIX + "hosts", host)

        self.link.pipe(fill)
        if workers:
            self.link.run(lambda r: r.hdel(lua.PREFIX + "workers", *workers))
        self.vacate(rooms_left)  # rooms it left empty stop counting
        log.warning("relay host %s lost its lease: removed its %d client(s)", host, gone)

    def leave(self) -> None:
        """A clean stop: our clients go now (announced), not after the lease."""
        self.link.run(lambda r: r.delete(lua.lease_rkey(self.host)))
        self.remove(self.host)
