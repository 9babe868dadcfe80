"""The Redis engine's reads of a room: history from its stream, and one wake's facts.

A join needs many facts of its room (member count, quiet flag, the first
members, the seq, the newest msgs for the join replay); read one by one
they cost a round trip each. The join's own pipeline reads them all
(`JOIN_READS`), and they are kept as the room's `Facts` for the rest of the
wake, updated by this host's own writes (a join, a part, the quiet flag) and
forgotten when the wake ends (`RedisEngine.flush`): what other hosts change
meanwhile is seen next wake, as if it had happened a moment later.
`RoomReads` is the engine's history half (a mixin: it reads the engine's
link, traffic and facts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from relay.hub import redis_scripts as lua
from relay.hub.chathistory import select as select_history
from relay.hub.redis_link import Link
from relay.hub.redis_scripts import parse_ckey
from relay.hub.redis_traffic import Traffic, entry_body
from relay.hub.replies import Body, ConnKey


@dataclass(slots=True)
class Facts:
    """What this wake knows of a room without asking Redis again."""

    count: int                          # members, relay-wide
    quiet: bool
    members: list[ConnKey] | None = None  # the first ones in join order (None: unread)
    newest: list[Body] | None = None    # newest msgs, oldest first (None: unread)
    whole: bool = False                 # `newest` is the room's whole stream


def join_reads(p: Any, name: str, members: int, newest: int) -> None:
    """Queue a join's reads on pipeline `p` (after its writes): count, quiet,
    first members, seq, and (newest > 0) that many + 1 newest msgs."""
    mem = lua.room_key(name, "mem")
    p.zcard(mem)
    p.exists(lua.room_key(name, "quiet"))
    p.zrange(mem, 0, max(1, members) - 1)
    p.get(lua.room_key(name, "seq"))
    if newest > 0:
        p.xrevrange(lua.room_key(name, "log"), "+", "-", count=newest + 1)


def join_facts(res: list[Any], newest: int) -> tuple[Facts, int]:
    """The facts and the seq that `join_reads` got (its results, in order)."""
    count, quiet, first, seq = res[:4]
    facts = Facts(int(count), bool(quiet), [parse_ckey(k) for k in first])
    if newest > 0:
        entries = res[4]
        facts.newest = [entry_body(e) for e in reversed(entries)]
        facts.whole = len(entries) <= newest
    return facts, int(seq or 0)


class RoomReads:
    """Seq and history of rooms (the stream is the history), for RedisEngine."""

    link: Link
    traffic: Traffic
    facts: dict[str, Facts]

    def seq(self, name: str) -> int | None:
        done = self.traffic.delivered.get(name)
        if done is not None:
            return done
        return int(self.link.run(lambda r: r.get(lua.room_key(name, "seq"))) or 0)

    def raise_seq(self, name: str, seq: int) -> None:
        self.link.run(lambda r: self.link.raise_seq(
            keys=[lua.room_key(name, "seq"), lua.room_key(name, "epoch")], args=[seq],
            client=r))
        if name in self.traffic.delivered:
            self.traffic.delivered[name] = max(self.traffic.delivered[name], seq)

    def _range(self, name: str, low: int, high: int, count: int | None,
               newest: bool = False) -> list[Body]:
        stream = lua.room_key(name, "log")
        lo, hi = f"{low}-0", f"{high}-0"
        if newest:
            entries = self.link.run(lambda r: r.xrevrange(stream, hi, lo, count=count))
            entries.reverse()
        else:
            entries = self.link.run(lambda r: r.xrange(stream, lo, hi, count=count))
        return [entry_body(e) for e in entries]

    def first_seq(self, name: str) -> int:
        top = self.seq(name) or 0
        first = self._range(name, 1, top, 1)
        return first[0]["seq"] if first else top + 1

    def latest(self, name: str, limit: int) -> tuple[list[Body], bool]:
        top = self.seq(name) or 0
        facts = self.facts.get(name)
        if facts is not None and facts.newest is not None:  # read by the join already
            page = [b for b in facts.newest if b["seq"] <= top]
            if facts.whole or len(page) > limit:
                return page[-limit:], len(page) > limit
        page = self._range(name, 1, top, limit + 1, newest=True)
        return page[-limit:], len(page) > limit

    def after(self, name: str, seq: int, limit: int | None) -> tuple[list[Body], bool]:
        top = self.seq(name) or 0
        if seq >= top:
            return [], False
        page = self._range(name, seq + 1, top, None if limit is None else limit + 1)
        if limit is not None and len(page) > limit:
            return page[:limit], True
        return page, False

    def select(self, name: str, sub: str, refs: Sequence[tuple[str, int]],
               limit: int) -> list[Body]:
        ring = self._range(name, 1, self.seq(name) or 0, None)
        return select_history(ring, ring[0]["seq"] if ring else 1, sub, refs, limit)

    def last_ts(self, name: str) -> int | None:
        page = self._range(name, 1, self.seq(name) or 0, 1, newest=True)
        return int(page[-1].get("ts", 0)) if page else None
