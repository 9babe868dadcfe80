"""Presence (issue 21): joins, parts and renames, coalesced per room.

Announcing every join to every member costs N^2 deliveries when N clients
join one room. So a room's joins, parts and renames go out at most once per
--presence-interval: the first at once, those that follow within the
interval together as one `presence_batch` item when it ends (or before the
room's next msg, so nobody speaks before their join is told): one bus item
and one fan-out pass instead of one per event. The codecs expand it
(transports/events.py `presence_bodies`): native and WebSocket clients still
get one v1 `presence` per event. A batch of one event is sent as a plain
`presence`. Past --presence-limit members a room turns quiet: joins and
parts are not announced at all (`who` lists the members), `joined` lists
only the first members and says how many there are, and it turns loud again
at 90% of the limit; the batch that changes it carries `quiet`. Renames are
always announced.

The quiet flag is the engine's (every host must agree on it); what was last
told and when is this hub's, and goes when the engine forgets the room.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relay.bus.wire import room_topic
from relay.hub.engine import Engine
from relay.hub.replies import Body, ConnKey, Out

PRESENCE_BATCH_MAX = 100  # events in one presence_batch: bounds the item and each author's own copy


@dataclass(slots=True)
class PendingPresence:
    """A room's presence events waiting for the end of its interval (`due`)."""

    due: float
    events: list[Body] = field(default_factory=list)
    authors: list[ConnKey] = field(default_factory=list)


@dataclass(slots=True)
class Told:
    """What a room's members were last told: its quiet flag, and when (monotonic)."""

    quiet: bool = False
    at: float = float("-inf")


class Presence:
    """Per-room coalescing of presence events into the hub's output."""

    def __init__(self, engine: Engine, limit: int, interval: float) -> None:
        self.engine = engine
        self.limit = limit
        self.interval = interval  # 0: every event on its own, at once
        self.mono = 0.0  # the current request's monotonic time (set by the hub)
        self._pending: dict[str, PendingPresence] = {}  # room -> presence not yet sent
        self._told: dict[str, Told] = {}

    def forget(self, name: str) -> None:
        """The engine dropped the room: nothing of it waits or is remembered."""
        self._pending.pop(name, None)
        self._told.pop(name, None)

    def quiet_now(self, name: str) -> bool:
        """Whether joins and parts go unannounced: on past --presence-limit members,
        off again at 90% of it, so a room at the limit does not flap."""
        engine = self.engine
        n, limit, quiet = engine.member_count(name), self.limit, engine.quiet(name)
        if not quiet and n > limit:
            engine.set_quiet(name, True)
            pending = self._pending.get(name)
            if pending is not None:  # joins and parts not told yet never will be
                kept = [(e, a) for e, a in zip(pending.events, pending.authors, strict=True)
                        if e["event"] == "nick"]
                pending.events = [e for e, _ in kept]
                pending.authors = [a for _, a in kept]
            return True
        if quiet and n <= limit - limit // 10:
            engine.set_quiet(name, False)
            return False
        return quiet

    def announce(self, name: str, key: ConnKey, event: Body, out: Out) -> None:
        """Announce a join, part or rename (`event`: a presence body without t and
        room) now, or with the room's batch when its interval ends."""
        shown = not self.quiet_now(name) or event["event"] == "nick"
        pending = self._pending.get(name)
        if pending is None:
            told = self._told.get(name) or Told()
            if not shown and self.engine.quiet(name) == told.quiet:
                return  # a quiet room, already told so: nothing to send
            pending = self._pending[name] = PendingPresence(told.at + self.interval)
        if shown:
            pending.events.append(event)
            pending.authors.append(key)
        if self.mono >= pending.due or len(pending.events) >= PRESENCE_BATCH_MAX:
            self.flush_room(name, out)

    def flush_room(self, name: str, out: Out) -> None:
        """Send the room's pending presence: one v1 `presence` for a lone event,
        else one `presence_batch` (with `quiet` when that changed)."""
        pending = self._pending.pop(name, None)
        if pending is None:
            return
        told = self._told.setdefault(name, Told())
        quiet, count = self.engine.quiet(name), self.engine.member_count(name)
        if not count:
            told.quiet = quiet  # nobody to tell; the next joiner's `joined` says
        flip = quiet != told.quiet
        if not (pending.events or flip):
            return
        told.at = self.mono
        told.quiet = quiet
        topic = room_topic(name)
        if len(pending.events) == 1 and not flip:
            w, c = pending.authors[0]
            out.append((topic, [{"t": "presence", "room": name, **pending.events[0]},
                                w, c, None]))
            return
        body: dict[str, Any] = {"t": "presence_batch", "room": name,
                                "events": pending.events, "count": count}
        if flip:
            body["quiet"] = quiet
        out.append((topic, [body, pending.authors, None, None]))

    def pending(self, name: str) -> bool:
        """Whether the room has presence waiting (a msg must not overtake it)."""
        return name in self._pending

    def flush(self, mono: float, out: Out) -> None:
        """Send every batch whose interval is over; the hub calls this each wake."""
        if not self._pending:
            return
        self.mono = mono
        for name, pending in list(self._pending.items()):
            if mono >= pending.due:
                if self.engine.seq(name) is None:
                    del self._pending[name]
                else:
                    self.flush_room(name, out)

    def due(self) -> float | None:
        """When the next batch is due (monotonic), or None when none waits."""
        return min((p.due for p in self._pending.values()), default=None)
