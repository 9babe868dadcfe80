"""Bans, mutes and failed-password blocks of the Redis engine, relay-wide and durable.

Sanctions are hashes (`cr:ban:<kind>`, key -> msgpack [until, by, reason]);
failed passwords count in `cr:af:{cr:blocks}:<ip_key>` and blocks live in `cr:blocks`
(the AUTH_FAIL script counts and blocks atomically), so every host refuses
the same addresses and a restart forgets nothing. The hub announces changes
as `_bans`/`_block` items, which the engine sends to every host (`cr:all`).
A table read is kept for the rest of the wake (a mute check per say costs
no round trip); the next wake reads it again.
"""

from __future__ import annotations

import logging

from relay.bus.wire import pack, unpack
from relay.hub import redis_scripts as lua
from relay.hub.engine import Sanction, SanctionKind
from relay.hub.redis_link import Link
from relay.hub.replies import Body
from transports.validate import auth_key

log = logging.getLogger("chat_relay.hub")


class Bans:
    """The Engine's moderation and failed-password methods, against Redis."""

    def __init__(self, link: Link, auth: tuple[int, int, int]) -> None:
        self.link = link
        self.auth = auth  # failures, window ms, block ms
        # Each table as read this wake: every say asks whether its author is
        # muted, which must not cost a round trip per say. Our own changes
        # drop the copy; another host's are seen from the next wake on.
        self._read: dict[str, dict[str, Sanction]] = {}

    def forget(self) -> None:
        """The wake is over: read the tables afresh next time."""
        self._read.clear()

    def sanction(self, kind: SanctionKind, key: str, now: int) -> Sanction | None:
        held = self._read.get(kind)
        if held is not None:
            found = held.get(key)
        else:
            raw = self.link.run(lambda r: r.hget(lua.PREFIX + "ban:" + kind, key))
            found = None if raw is None else Sanction(*unpack(raw))
        if found is None:
            return None
        if found.until and found.until <= now:
            self.link.run(lambda r: r.hdel(lua.PREFIX + "ban:" + kind, key))
            self._read.pop(kind, None)
            return None
        return found

    def sanctions(self, kind: SanctionKind) -> dict[str, Sanction]:
        held = self._read.get(kind)
        if held is None:
            raw = self.link.run(lambda r: r.hgetall(lua.PREFIX + "ban:" + kind))
            held = self._read[kind] = {k.decode(): Sanction(*unpack(v)) for k, v in raw.items()}
        return held

    def set_sanction(self, kind: SanctionKind, key: str, sanction: Sanction, cap: int,
                     now: int) -> bool:
        table = lua.PREFIX + "ban:" + kind
        if self.link.run(lambda r: r.hlen(table)) >= cap and self.sanction(kind, key, now) is None:
            held = self.sanctions(kind)
            stale = [k for k, s in held.items() if s.until and s.until <= now]
            if stale:
                self.link.run(lambda r: r.hdel(table, *stale))
            if len(held) - len(stale) >= cap:
                return False
        value = pack([sanction.until, sanction.by, sanction.reason])
        self._read.pop(kind, None)
        self.link.run(lambda r: r.hset(table, key, value))
        return True

    def lift(self, kind: SanctionKind, key: str) -> Sanction | None:
        found = self.sanction(kind, key, 0)
        if found is not None:
            self._read.pop(kind, None)
            self.link.run(lambda r: r.hdel(lua.PREFIX + "ban:" + kind, key))
        return found

    def auth_fail(self, req: Body, now: int) -> Body | None:
        key = auth_key(str(req.get("ip") or ""))
        if key is None:
            return None
        failures, window, block = self.auth
        until = int(self.link.run(lambda r: self.link.auth_fail(
            keys=[lua.af_rkey(key), lua.BLOCKS],
            args=[key, failures, window, block, now], client=r)))
        if not until:
            return None
        log.warning("blocking %s for %.0f s: %d failed passwords within %.0f s", key,
                    block / 1000, failures, window / 1000)
        return {"t": "_block", "key": key, "until": until}

    def auth_blocks(self, now: int) -> dict[str, int]:
        raw = self.link.run(lambda r: r.hgetall(lua.PREFIX + "blocks"))
        blocks = {k.decode(): int(v) for k, v in raw.items()}
        stale = [k for k, u in blocks.items() if u <= now]
        if stale:
            self.link.run(lambda r: r.hdel(lua.PREFIX + "blocks", *stale))
        return {k: u for k, u in blocks.items() if u > now}
