"""Who is in which room, as clients see it: join, part, leave, and the lists.

A join answers `joined` (the room's seq and its members), then what a
resuming client missed (or `history_gap`), then the join's presence, then
for a fresh join the room's latest messages as a `history` page marked
`replay`. All of it goes on the joiner's topic in that order, before any
live message after `joined.seq` (the hub never reorders its output).
The facts live in the engine; this module decides what is said about them.
"""

from __future__ import annotations

from typing import Any

from relay.bus import messages as m
from relay.hub.engine import ClientRec, Engine
from relay.hub.presence import Presence
from relay.hub.replies import Body, ConnKey, Out, conn_key, to
from transports.errors import error_body as error
from transports.errors import history_gap

MEMBERS_PAGE = 1500  # nicks in one `members` frame (or `joined`): 1,500 of 32 bytes fit 64 KiB


class Membership:
    """Joins and parts of clients, with the replies and presence they cause."""

    def __init__(self, engine: Engine, presence: Presence, *, max_rooms_per_client: int,
                 join_replay: int, join_replay_rooms: int) -> None:
        self.engine = engine
        self.presence = presence
        self.max_rooms_per_client = max_rooms_per_client
        self.join_replay = join_replay  # latest msgs replayed after a fresh join; 0 = off
        self.join_replay_rooms = join_replay_rooms  # rooms of one hello that get a replay

    # Lookups ------------------------------------------------------------------

    def rec(self, key: ConnKey) -> ClientRec:
        """A client the caller knows is registered."""
        rec = self.engine.client(key)
        assert rec is not None, key
        return rec

    def client(self, worker: str, req: dict[str, Any], out: Out) -> ConnKey | None:
        """The registered client a request comes from, or None (told `not_ready`)."""
        key = conn_key(worker, req)
        if self.engine.client(key) is not None:
            return key
        if m.op_of(req) != m.Gone.OP:
            # Never drop a request silently: the hub lost this client (restart).
            to(out, key, error("not_ready", "the relay's hub restarted; say hello again",
                               str(m.op_of(req))))
        return None

    def in_room(self, key: ConnKey, req: dict[str, Any], ref: str, out: Out,
                label: Any = None) -> str | None:
        """The request's room if `key` is in it; else None, with `not_in_room`."""
        name = req.get("room", "")
        if not self.engine.is_member(name, key):
            body = error("not_in_room", f"you are not in {name}", ref, room=name)
            if label is not None:
                body["id"] = label
            to(out, key, body)
            return None
        return str(name)

    def nicks(self, name: str) -> list[str]:
        return [self.rec(k).nick for k in self.engine.members(name)]

    def joined_body(self, name: str, key: ConnKey) -> Body:
        """`joined`; in a quiet room its list is cut (the joiner stays in it) and
        `count` and `truncated` say so, since the full list costs O(N) per join."""
        engine = self.engine
        cap = min(self.presence.limit, MEMBERS_PAGE)
        body: Body = {"t": "joined", "room": name, "seq": engine.seq(name)}
        count = engine.member_count(name)
        if count <= cap:
            body["members"] = self.nicks(name)
        else:
            first = engine.members(name, cap)
            if key not in first:
                first.append(key)
            body["members"] = [self.rec(k).nick for k in first]
            body["count"] = count
            body["truncated"] = True
        if engine.quiet(name):
            body["quiet"] = True
        return body

    def who_pages(self, name: str) -> list[Body]:
        """The `members` reply: one page, or pages that fit a 64 KiB frame."""
        names = self.nicks(name)
        if len(names) <= MEMBERS_PAGE:
            return [{"t": "members", "room": name, "members": names}]
        return [{"t": "members", "room": name, "members": names[i:i + MEMBERS_PAGE],
                 "more": i + MEMBERS_PAGE < len(names)}
                for i in range(0, len(names), MEMBERS_PAGE)]

    # Changes ------------------------------------------------------------------

    def join(self, key: ConnKey, name: str, out: Out, resume: int | None = None,
             ref: str = "join", replay: bool = True) -> bool:
        """Join `key` to `name`: `joined`, the resume's missed messages, the join's
        presence, then (a fresh join, if `replay`) the join replay. True when a join
        replay was sent."""
        engine, client = self.engine, self.rec(key)
        if name not in client.rooms and len(client.rooms) >= self.max_rooms_per_client:
            to(out, key, error(
                "too_many_rooms", f"you are in {len(client.rooms)} rooms, the most one client "
                f"may be in; part one before joining {name}", ref, room=name))
            return False
        if not engine.open_room(name):
            to(out, key, error(
                "too_many_rooms", f"the relay holds {engine.room_count()} rooms, all with "
                f"members, its limit; {name} cannot be opened now (join an existing room)",
                ref, room=name))
            return False
        fresh = engine.join(name, key)
        self.presence.quiet_now(name)
        to(out, key, self.joined_body(name, key))
        if resume is not None:
            self.replay(key, name, resume, out)
        if fresh:
            self.presence.announce(name, key, {"nick": client.nick, "event": "join"}, out)
            if replay and resume is None:
                return self._join_replay(key, name, out)
        return False

    def _join_replay(self, key: ConnKey, name: str, out: Out) -> bool:
        """The room's latest messages, as an unasked `history` page marked `replay`.

        Every seq in it is <= `joined.seq`: clients show it as earlier messages,
        not as live traffic. An empty room sends nothing.
        """
        if self.join_replay <= 0:
            return False
        page, more = self.engine.latest(name, self.join_replay)
        if not page:
            return False
        to(out, key, {"t": "history", "room": name, "messages": page, "more": more,
                      "replay": True})
        return True

    def replay(self, key: ConnKey, name: str, after: int, out: Out) -> None:
        """Send what a resuming client missed, or say honestly that history is gone."""
        seq, first = self.engine.seq(name) or 0, self.engine.first_seq(name)
        if after > seq:
            to(out, key, error(
                "history_gap",
                f"{name} is at seq {seq}, before your {after}: the relay restarted "
                "and its history of this room is gone",
                "hello", room=name))
            return
        if after + 1 < first:
            to(out, key, history_gap(name, first, after, "hello"))
            after = first - 1
        for body in self.engine.after(name, after, None)[0]:
            to(out, key, body)

    def part(self, key: ConnKey, name: str, out: Out, extra: Body | None = None) -> None:
        """Take `key` out of `name` and announce it (`extra`: an operator's by, reason)."""
        nick = self.rec(key).nick
        self.engine.part(name, key)
        event = {"nick": nick, "event": "part"}
        if extra:
            event.update(extra)
        self.presence.announce(name, key, event, out)
        if not self.engine.member_count(name):
            self.engine.vacated(name, self.presence.mono)

    def leave(self, key: ConnKey, out: Out, extra: Body | None = None) -> None:
        """A client is gone (closed, cut, its worker died): part every room, free its nick."""
        client = self.engine.client(key)
        if client is None:
            return
        if extra is None and client.quit_reason:
            extra = {"reason": client.quit_reason}
        for name in list(client.rooms):
            self.part(key, name, out, extra)
        self.engine.unregister(key)
