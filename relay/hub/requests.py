"""The chat requests: join, part, say, whisper, nick, who, history and the rest.

Each handler reads and changes the engine's facts and appends its replies
and broadcasts to `out` in the order it decides them. A `say` flushes the
room's pending presence first (who joined is told before what they say),
then the engine sequences the msg and it goes out on the room's topic with
its author and id (only the author gets the id back).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from relay.bus.wire import room_topic, worker_topic
from relay.hub.engine import Engine
from relay.hub.members import Membership
from relay.hub.moderation import Moderation
from relay.hub.presence import Presence
from relay.hub.replies import Body, ConnKey, Out, conn_key, to
from transports.errors import error_body as error
from transports.errors import history_gap
from transports.validate import HISTORY_MAX_LIMIT

FILL_MAX = 1000  # messages resent per fill request
ROOMS_REPLY_MAX = 500  # entries in a `rooms` reply: 500 of the longest names fit 64 KiB frames


class Chat:
    """Handlers of the requests every client may send once it said hello."""

    def __init__(self, engine: Engine, members: Membership, moderation: Moderation,
                 presence: Presence, clock: Callable[[], int]) -> None:
        self.engine = engine
        self.members = members
        self.moderation = moderation
        self.presence = presence
        self.clock = clock
        self.messages = 0  # say requests sequenced, for metrics

    def op_join(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is not None:
            resume = req.get("resume")
            self.members.join(key, req["room"], out,
                              resume=resume if isinstance(resume, int) else None)

    def op_part(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is None or self.members.in_room(key, req, "part", out) is None:
            return
        to(out, key, {"t": "parted", "room": req["room"]})
        self.members.part(key, req["room"], out)

    def op_say(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is None or self.moderation.refuse_muted(key, "say", out, room=req.get("room")):
            return
        name = self.members.in_room(key, req, "say", out)
        if name is None:
            return
        if self.presence.pending(name):
            self.presence.flush_room(name, out)  # who joined is told before what they say
        self.messages += 1
        body: Body = {"t": "msg", "room": name, "seq": 0, "ts": self.clock(),
                      "from": self.members.rec(key).nick, "text": req["text"]}
        if req.get("action"):
            body["action"] = True
        self.engine.sequence(name, [body])
        out.append((room_topic(name), [body, key[0], key[1], req.get("id")]))

    def op_whisper(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is None or self.moderation.refuse_muted(key, "whisper", out, nick=req.get("to")):
            return
        target = self.engine.nick_owner(req["to"])
        if target is None:
            to(out, key, error("no_such_nick", f"no one is called {req['to']}",
                               "whisper", nick=req["to"]))
            return
        body: Body = {"t": "whisper", "from": self.members.rec(key).nick,
                      "to": self.members.rec(target).nick, "text": req["text"],
                      "ts": self.clock()}
        if req.get("action"):
            body["action"] = True
        if target != key:
            to(out, target, body)
        echo = dict(body)
        if req.get("id") is not None:
            echo["id"] = req["id"]
        to(out, key, echo)

    def op_nick(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is None:
            return
        new = req["nick"]
        owner = self.engine.nick_owner(new)
        if owner is not None and owner != key:
            to(out, key, error("nick_taken", f"nick {new} is taken", "nick", nick=new))
            return
        ban = self.moderation.nick_ban(new)
        if ban is not None and owner != key:
            # A banned nick is held by its ban: taken, for anyone who asks.
            left = ban.left(self.clock())
            to(out, key, error("nick_taken", f"nick {new} is banned {left}", "nick", nick=new))
            return
        client = self.members.rec(key)
        old = client.nick
        self.engine.rename(key, new)
        self.moderation.renamed(old, new)
        to(out, key, {"t": "renamed", "nick": new})
        for name in client.rooms:
            self.presence.announce(name, key, {"nick": old, "event": "nick", "new": new}, out)

    def op_who(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is None:
            return
        name = self.members.in_room(key, req, "who", out)
        if name is not None:
            for page in self.members.who_pages(name):
                to(out, key, page)

    def op_history(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is None:
            return
        name = self.members.in_room(key, req, "history", out)
        if name is None:
            return
        limit = max(1, min(int(req.get("limit", 100)), HISTORY_MAX_LIMIT))
        after = req.get("after")
        if after is None:
            page, more = self.engine.latest(name, limit)
        else:
            first = self.engine.first_seq(name)
            if after + 1 < first:
                to(out, key, history_gap(name, first, after, "history"))
                after = first - 1
            page, more = self.engine.after(name, after, limit)
        to(out, key, {"t": "history", "room": name, "messages": page, "more": more})

    def op_rooms(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is not None:
            to(out, key, self._rooms_body())

    def _rooms_body(self) -> Body:
        """Rooms with members, the largest first, at most ROOMS_REPLY_MAX of them;
        a capped reply says so (`truncated`, `total`)."""
        sizes = self.engine.occupied()
        body: Body = {"t": "rooms"}
        if len(sizes) > ROOMS_REPLY_MAX:
            body["truncated"] = True
            body["total"] = len(sizes)
            sizes = heapq.nlargest(ROOMS_REPLY_MAX, sizes, key=lambda s: s[0])
        else:
            sizes.sort(key=lambda s: -s[0])
        body["rooms"] = {name: n for n, name in sizes}
        return body

    def op_fill(self, worker: str, req: dict[str, Any], out: Out) -> None:
        """A worker lost part of a room's stream on the bus: resend it from history."""
        name = str(req.get("room"))
        if self.engine.seq(name) is None:
            return
        msgs, _ = self.engine.after(name, int(req.get("after", 0)), FILL_MAX)
        out.append((worker_topic(worker), [None, {"t": "_fill", "room": name,
                                                  "messages": msgs}]))

    def op_ping(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is not None:
            msg_id = req.get("id")
            to(out, key, {"t": "pong"} if msg_id is None else {"t": "pong", "id": msg_id})

    def op_echo(self, worker: str, req: dict[str, Any], out: Out) -> None:
        """A reply the worker wrote itself (a reader's error about a bad frame), sent
        back down the client's reply stream, so that it comes after the replies to
        every frame before it instead of overtaking them."""
        body = req.get("body")
        if isinstance(body, dict):
            to(out, conn_key(worker, req), body)

    # IRCv3 requests (the IRC dialect's WHOIS, AWAY and CHATHISTORY) ----------

    def op_whois(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is None:
            return
        label = req.get("id")
        target = self.engine.nick_owner(str(req.get("nick")))
        if target is None:
            body = error("no_such_nick", f"no one is called {req.get('nick')}", "whois",
                         nick=req.get("nick"))
        else:
            who = self.members.rec(target)
            body = {"t": "whois", "nick": who.nick, "rooms": list(who.rooms)}
            if who.away:
                body["away"] = who.away
        if label is not None:
            body["id"] = label
        to(out, key, body)

    def op_away(self, worker: str, req: dict[str, Any], out: Out) -> None:
        """Mark a client away (or back) and tell it and everyone who shares a room
        with it, once each: `away{nick, text?}`."""
        key = self.members.client(worker, req, out)
        if key is None:
            return
        self.engine.set_away(key, str(req.get("text") or ""))
        client = self.members.rec(key)
        body: Body = {"t": "away", "nick": client.nick}
        if client.away:
            body["text"] = client.away
        told = {key}
        to(out, key, body)
        for name in client.rooms:
            for member in self.engine.members(name):
                if member not in told:
                    told.add(member)
                    to(out, member, body)

    def op_chathistory(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is None:
            return
        label = req.get("id")
        sub = str(req.get("sub"))
        limit = max(1, min(int(req.get("limit") or 1), HISTORY_MAX_LIMIT))
        refs = [(str(k), int(v)) for k, v in req.get("refs") or ()]
        if sub == "targets":
            body = self._history_targets(key, refs, limit)
        else:
            name = self.members.in_room(key, req, "chathistory", out, label)
            if name is None:
                return
            body = {"t": "chathistory", "room": name, "sub": sub,
                    "messages": self.engine.select(name, sub, refs, limit)}
        if label is not None:
            body["id"] = label
        to(out, key, body)

    def _history_targets(self, key: ConnKey, refs: list[tuple[str, int]],
                         limit: int) -> Body:
        """The client's rooms whose latest message falls between two timestamps."""
        stamps = sorted(v for k, v in refs[:2] if k == "ts")
        low, high = (stamps[0], stamps[-1]) if stamps else (0, 0)
        found = []
        for name in self.members.rec(key).rooms:
            ts = self.engine.last_ts(name)
            if ts is not None and low <= ts <= high:
                found.append((ts, name))
        found.sort()
        return {"t": "chathistory", "sub": "targets",
                "targets": [[name, ts] for ts, name in found[:limit]]}
