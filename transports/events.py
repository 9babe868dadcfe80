"""The chat's vocabulary: one frozen, slotted dataclass per protocol message.

Every dialect decodes its bytes into these events and encodes these events into
its bytes, so relay logic never sees a dialect. Client -> relay events are
`ClientEvent`s; relay -> client events are `RelayEvent`s. `to_body()` gives
the native msgpack map (PROTOCOL.md keys), `parse_client_body()` and
`parse_relay_body()` go the other way and validate as they go.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Final

from transports.errors import ProtocolError
from transports.validate import (
    DEFAULT_MAX_TEXT,
    HISTORY_DEFAULT_LIMIT,
    HISTORY_MAX_LIMIT,
    MAX_HELLO_ROOMS,
    MAX_MINUTES,
    MAX_REASON,
    VERSION_MAX,
    check_id,
    check_int,
    check_nick,
    check_room,
    check_seq,
    check_text,
    ip_key,
)

PROTOCOL_VERSION = 1

# Python names that differ from wire keys ("from" is a keyword).
_WIRE_KEY = {"sender": "from"}
_PY_KEY = {v: k for k, v in _WIRE_KEY.items()}


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all events; `T` is the wire type name (the "t" key)."""

    T: ClassVar[str] = ""

    def to_body(self) -> dict[str, Any]:
        """The native map for this event, omitting optional keys left at None."""
        body: dict[str, Any] = {"t": self.T}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            body[_WIRE_KEY.get(f.name, f.name)] = value
        return body


# Client -> relay ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientEvent(Event):
    pass


@dataclass(frozen=True, slots=True)
class Hello(ClientEvent):
    T: ClassVar[str] = "hello"
    nick: str | None
    rooms: tuple[str, ...] = ("lobby",)
    v: int = PROTOCOL_VERSION
    password: str | None = None
    resume: dict[str, int] | None = None

    def to_body(self) -> dict[str, Any]:
        body = Event.to_body(self)
        body["rooms"] = list(self.rooms)
        return body


@dataclass(frozen=True, slots=True)
class Join(ClientEvent):
    T: ClassVar[str] = "join"
    room: str


@dataclass(frozen=True, slots=True)
class Part(ClientEvent):
    T: ClassVar[str] = "part"
    room: str


@dataclass(frozen=True, slots=True)
class Say(ClientEvent):
    """`action` (extension): the text is an action (`/me waves`, IRC's CTCP ACTION)."""

    T: ClassVar[str] = "say"
    room: str
    text: str
    id: Any = None
    action: bool | None = None


@dataclass(frozen=True, slots=True)
class Whisper(ClientEvent):
    T: ClassVar[str] = "whisper"
    to: str
    text: str
    id: Any = None
    action: bool | None = None


@dataclass(frozen=True, slots=True)
class NickChange(ClientEvent):
    T: ClassVar[str] = "nick"
    nick: str


@dataclass(frozen=True, slots=True)
class Who(ClientEvent):
    T: ClassVar[str] = "who"
    room: str


@dataclass(frozen=True, slots=True)
class HistoryQuery(ClientEvent):
    T: ClassVar[str] = "history"
    room: str
    after: int | None = None
    limit: int = HISTORY_DEFAULT_LIMIT


@dataclass(frozen=True, slots=True)
class Ping(ClientEvent):
    T: ClassVar[str] = "ping"
    id: Any = None


@dataclass(frozen=True, slots=True)
class Bye(ClientEvent):
    """`reason` (extension): shown to the rooms the client leaves."""

    T: ClassVar[str] = "bye"
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ListRooms(ClientEvent):
    """Extension (docs/protocol.md): `{t:"rooms"}` -> `{t:"rooms", rooms:{name: members}}`."""

    T: ClassVar[str] = "rooms"


@dataclass(frozen=True, slots=True)
class Pong(ClientEvent):
    """A client's answer to the relay's keepalive `ping` (extension)."""

    T: ClassVar[str] = "pong"
    id: Any = None


# IRC-only requests: the IRC codec makes them, the native parser never does
# (a native client sending these types gets unknown_type). `id` carries an
# IRCv3 label back with the answer.


@dataclass(frozen=True, slots=True)
class ChatHistory(ClientEvent):
    """IRCv3 CHATHISTORY on a room: `sub` is latest, before, after, around,
    between or targets; each ref is ("seq", n), ("ts", ms) or ("*", 0)."""

    T: ClassVar[str] = "chathistory"
    room: str
    sub: str
    refs: tuple[tuple[str, int], ...]
    limit: int
    id: Any = None


@dataclass(frozen=True, slots=True)
class Whois(ClientEvent):
    T: ClassVar[str] = "whois"
    nick: str
    id: Any = None


@dataclass(frozen=True, slots=True)
class Away(ClientEvent):
    """Mark the client away with `text`, or back (None)."""

    T: ClassVar[str] = "away"
    text: str | None = None


# Moderation (extension, docs/protocol.md): `oper` makes a connection an
# operator; the others need that and act relay-wide (the hub is the authority).

# MAX_REASON and MAX_MINUTES (transports/validate.py) bound their fields.


@dataclass(frozen=True, slots=True)
class Oper(ClientEvent):
    T: ClassVar[str] = "oper"
    password: str


@dataclass(frozen=True, slots=True)
class Kick(ClientEvent):
    T: ClassVar[str] = "kick"
    nick: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Ban(ClientEvent):
    """Exactly one of `nick` and `ip`."""

    T: ClassVar[str] = "ban"
    nick: str | None = None
    ip: str | None = None
    minutes: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Unban(ClientEvent):
    T: ClassVar[str] = "unban"
    nick: str | None = None
    ip: str | None = None


@dataclass(frozen=True, slots=True)
class Mute(ClientEvent):
    T: ClassVar[str] = "mute"
    nick: str
    minutes: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Unmute(ClientEvent):
    T: ClassVar[str] = "unmute"
    nick: str


MODERATION: Final = (Kick, Ban, Unban, Mute, Unmute)


# Relay -> client -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayEvent(Event):
    pass


@dataclass(frozen=True, slots=True)
class Welcome(RelayEvent):
    T: ClassVar[str] = "welcome"
    nick: str
    server: str
    v: int = PROTOCOL_VERSION
    # Extensions: the relay's history epoch (changes when a restart lost the
    # history) and its text limit in bytes.
    epoch: int | None = None
    max_text: int | None = None


@dataclass(frozen=True, slots=True)
class Joined(RelayEvent):
    """`count` (extension) is set when the relay cut `members` short in a big room:
    the room's real size; `quiet` when joins and parts there are not announced."""

    T: ClassVar[str] = "joined"
    room: str
    members: tuple[str, ...]
    seq: int
    count: int | None = None
    quiet: bool = False

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"t": self.T, "room": self.room, "members": list(self.members),
                                "seq": self.seq}
        if self.count is not None:
            body.update(count=self.count, truncated=True)
        if self.quiet:
            body["quiet"] = True
        return body


@dataclass(frozen=True, slots=True)
class Parted(RelayEvent):
    T: ClassVar[str] = "parted"
    room: str


@dataclass(frozen=True, slots=True)
class Renamed(RelayEvent):
    T: ClassVar[str] = "renamed"
    nick: str


@dataclass(frozen=True, slots=True)
class Msg(RelayEvent):
    T: ClassVar[str] = "msg"
    room: str
    seq: int
    ts: int
    sender: str
    text: str
    id: Any = None
    action: bool | None = None


@dataclass(frozen=True, slots=True)
class WhisperMsg(RelayEvent):
    T: ClassVar[str] = "whisper"
    sender: str
    to: str
    text: str
    ts: int
    id: Any = None
    action: bool | None = None


@dataclass(frozen=True, slots=True)
class Presence(RelayEvent):
    T: ClassVar[str] = "presence"
    room: str
    nick: str
    event: str
    new: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Members(RelayEvent):
    """`more` (extension): a big room's list comes in pages; all but the last say more."""

    T: ClassVar[str] = "members"
    room: str
    members: tuple[str, ...]
    more: bool = False

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"t": self.T, "room": self.room, "members": list(self.members)}
        if self.more:
            body["more"] = True
        return body


@dataclass(frozen=True, slots=True)
class HistoryPage(RelayEvent):
    """A page of a room's history, oldest first.

    `replay` (extension) marks the page the relay sends unasked right after a
    fresh join's `joined`: the room's latest messages, all with seq <=
    `joined.seq`, shown as earlier messages. It answers no query and never
    counts as live traffic (no gap, no duplicate); an old client that reads it
    as an ordinary page and drops seqs it already passed shows nothing.
    """

    T: ClassVar[str] = "history"
    room: str
    messages: tuple[Msg, ...]
    more: bool
    replay: bool = False

    def to_body(self) -> dict[str, Any]:
        body = {
            "t": self.T,
            "room": self.room,
            "messages": [m.to_body() for m in self.messages],
            "more": self.more,
        }
        if self.replay:
            body["replay"] = True
        return body


def hhmm(ts: Any) -> str:
    """`HH:MM` of a relay timestamp (ms) in this process's local time zone: how
    the line dialects (text, plain IRC) stamp replayed messages."""
    if not isinstance(ts, int) or isinstance(ts, bool):
        return "--:--"
    try:
        return time.strftime("%H:%M", time.localtime(ts / 1000))
    except (OverflowError, OSError, ValueError):
        return "--:--"


@dataclass(frozen=True, slots=True)
class PongReply(RelayEvent):
    T: ClassVar[str] = "pong"
    id: Any = None


@dataclass(frozen=True, slots=True)
class KeepalivePing(RelayEvent):
    """The relay's idle check (extension): answer with `pong`."""

    T: ClassVar[str] = "ping"
    id: Any = None


@dataclass(frozen=True, slots=True)
class AwayNotice(RelayEvent):
    """Extension: someone who shares a room with the client went away (`text`)
    or came back (no `text`); the client's own AWAY is answered the same way."""

    T: ClassVar[str] = "away"
    nick: str
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Notice(RelayEvent):
    T: ClassVar[str] = "notice"
    text: str


@dataclass(frozen=True, slots=True)
class RoomList(RelayEvent):
    """Extension: rooms with their member counts, the largest first.

    `total` is set when the relay capped the list: how many rooms it has.
    """

    T: ClassVar[str] = "rooms"
    rooms: dict[str, int] = field(default_factory=dict)
    total: int | None = None


@dataclass(frozen=True, slots=True)
class Error(RelayEvent):
    T: ClassVar[str] = "error"
    code: str
    text: str
    ref: str | None = None
    room: str | None = None
    nick: str | None = None


# Coalesced presence ------------------------------------------------------------
#
# The hub sends a room's presence of one interval as ONE bus item,
#     {t:"presence_batch", room, events:[{nick, event, new?, by?, reason?}...],
#      count, quiet?}
# and each dialect shows it its own way: native and WebSocket clients get the
# v1 bodies below (PROTOCOL.md's `presence` per event, so a v1 client sees
# no change), text one line per kind of event, IRC one line per event.
# `quiet` (when set) says the room stopped or resumed announcing joins/parts.


def quiet_text(room: str, count: Any, quiet: bool) -> str:
    size = f"{count} members" if isinstance(count, int) else "many members"
    if quiet:
        return (f"{room} has {size}: joins and parts there are no longer announced "
                "(who lists the members)")
    return f"{room} has {size}: joins and parts there are announced again"


def presence_bodies(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The v1 bodies a presence_batch stands for: a `presence` per event, then a
    `notice` (with `room`, `count` and `quiet`) when the room turned quiet or loud."""
    room = batch.get("room")
    events = batch.get("events")
    out = [{"t": "presence", "room": room, **e}
           for e in (events if isinstance(events, list | tuple) else ()) if isinstance(e, dict)]
    quiet = batch.get("quiet")
    if isinstance(quiet, bool):
        count = batch.get("count")
        out.append({"t": "notice", "text": quiet_text(str(room), count, quiet), "room": room,
                    "count": count, "quiet": quiet})
    return out


# Parsing ---------------------------------------------------------------------
#
# Every key is read through one of the helpers below, which take what the
# decoder gave (any msgpack or JSON value) and return a value of the field's
# type within its bound (transports/validate.py), or raise ProtocolError.
# An optional key holding nil counts as absent, as JSON clients that write
# `"id": null` expect; any other wrong type is a bad_field, never coerced.


def _int(
    body: dict[str, Any], key: str, ref: str, low: int, high: int, default: int | None = None
) -> int | None:
    """An integer key in [low, high]; `default` when the key is absent."""
    if body.get(key) is None:
        return default
    return check_int(body[key], repr(key), low, high, ref)


def _str(body: dict[str, Any], key: str, ref: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ProtocolError(
            "bad_field", f"{key!r} must be a string, got {type(value).__name__}", ref
        )
    return value


def _opt_str(body: dict[str, Any], key: str, ref: str) -> str | None:
    return _str(body, key, ref) if body.get(key) is not None else None


def _id(body: dict[str, Any], ref: str) -> int | str | None:
    return check_id(body["id"], ref) if body.get("id") is not None else None


def _resume(body: dict[str, Any], ref: str) -> dict[str, int] | None:
    if body.get("resume") is None:
        return None
    resume_raw = body["resume"]
    if not isinstance(resume_raw, dict) or len(resume_raw) > MAX_HELLO_ROOMS:
        raise ProtocolError(
            "bad_field", f"'resume' must map at most {MAX_HELLO_ROOMS} rooms to seqs", ref
        )
    resume: dict[str, int] = {}
    for room, seq in resume_raw.items():
        check_room(room, ref)
        resume[room] = check_seq(seq, f"resume seq for {room!r}", ref)
    return resume


def _hello(body: dict[str, Any], max_text: int) -> Hello:
    ref = "hello"
    nick = check_nick(body.get("nick"), ref)
    rooms_raw = body.get("rooms", ["lobby"])
    if not isinstance(rooms_raw, list) or len(rooms_raw) > MAX_HELLO_ROOMS:
        raise ProtocolError(
            "bad_field", f"'rooms' must be a list of at most {MAX_HELLO_ROOMS} room names", ref
        )
    rooms = tuple(dict.fromkeys(check_room(r, ref) for r in rooms_raw))
    password = _opt_str(body, "password", ref)
    resume = _resume(body, ref)
    # A newer client is welcome: our `welcome` says v1 and it speaks down to us.
    v = _int(body, "v", ref, 1, VERSION_MAX, PROTOCOL_VERSION)
    assert v is not None
    return Hello(nick=nick, rooms=rooms, v=v, password=password, resume=resume)


def _history(body: dict[str, Any], t: str) -> HistoryQuery:
    room = check_room(body.get("room"), t)
    after = check_seq(body["after"], "'after'", t) if body.get("after") is not None else None
    limit = _int(body, "limit", t, 1, HISTORY_MAX_LIMIT, HISTORY_DEFAULT_LIMIT)
    assert limit is not None
    return HistoryQuery(room=room, after=after, limit=limit)


def parse_client_body(body: Any, max_text: int = DEFAULT_MAX_TEXT) -> ClientEvent:
    """Validate one decoded native body into a ClientEvent.

    Raises:
        ProtocolError: `bad_frame` when it is not a map with a string "t",
            `unknown_type`, `bad_field`, `nick_invalid`, `room_invalid` or
            `text_too_long` as PROTOCOL.md says.
    """
    if not isinstance(body, dict) or not isinstance(body.get("t"), str):
        raise ProtocolError("bad_frame", "a frame body must be a msgpack map with a string 't'")
    t: str = body["t"]
    if t == "say":
        return Say(
            room=check_room(body.get("room"), t),
            text=check_text(body.get("text"), max_text, t),
            id=_id(body, t),
            action=_action(body, t),
        )
    if t == "hello":
        return _hello(body, max_text)
    if t in ("join", "part", "who"):
        room = check_room(body.get("room"), t)
        return Join(room) if t == "join" else Part(room) if t == "part" else Who(room)
    if t == "whisper":
        return Whisper(
            to=_whisper_target(body),
            text=check_text(body.get("text"), max_text, t),
            id=_id(body, t),
            action=_action(body, t),
        )
    if t == "nick":
        return NickChange(check_nick(body.get("nick"), t))
    if t == "history":
        return _history(body, t)
    if t == "ping":
        return Ping(_id(body, t))
    if t == "pong":
        return Pong(_id(body, t))
    if t == "bye":
        return Bye(_reason(body, t))
    if t == "rooms":
        return ListRooms()
    if t in _MODERATION_PARSERS:
        return _MODERATION_PARSERS[t](body, t)
    raise ProtocolError("unknown_type", f"unknown frame type {t[:40]!r}", t[:40])


def _action(body: dict[str, Any], ref: str) -> bool | None:
    """The optional `action` flag: True, or None when absent or false."""
    value = body.get("action")
    if value is None or value is False:
        return None
    if value is not True:
        raise ProtocolError("bad_field", f"'action' must be a boolean, got {value!r:.40}", ref)
    return True


def _reason(body: dict[str, Any], ref: str) -> str | None:
    if body.get("reason") is None:
        return None
    return check_text(body["reason"], MAX_REASON, ref, key="'reason'")


def _minutes(body: dict[str, Any], ref: str) -> int | None:
    return _int(body, "minutes", ref, 1, MAX_MINUTES)


def _nick_or_ip(body: dict[str, Any], ref: str) -> tuple[str | None, str | None]:
    if ("nick" in body) == ("ip" in body):
        raise ProtocolError("bad_field", f"{ref} takes exactly one of 'nick' and 'ip'", ref)
    if "ip" in body:
        ip = body["ip"]
        key = ip_key(ip) if isinstance(ip, str) else None
        if key is None:
            raise ProtocolError("bad_field", f"'ip' must be an IP address, got {ip!r:.60}", ref)
        return None, key
    return check_nick(body["nick"], ref), None


def _oper(body: dict[str, Any], t: str) -> ClientEvent:
    return Oper(_str(body, "password", t))


def _kick(body: dict[str, Any], t: str) -> ClientEvent:
    return Kick(check_nick(body.get("nick"), t), _reason(body, t))


def _ban(body: dict[str, Any], t: str) -> ClientEvent:
    nick, ip = _nick_or_ip(body, t)
    return Ban(nick, ip, _minutes(body, t), _reason(body, t))


def _unban(body: dict[str, Any], t: str) -> ClientEvent:
    nick, ip = _nick_or_ip(body, t)
    return Unban(nick, ip)


def _mute(body: dict[str, Any], t: str) -> ClientEvent:
    return Mute(check_nick(body.get("nick"), t), _minutes(body, t), _reason(body, t))


def _unmute(body: dict[str, Any], t: str) -> ClientEvent:
    return Unmute(check_nick(body.get("nick"), t))


_MODERATION_PARSERS: Final = {
    "oper": _oper, "kick": _kick, "ban": _ban, "unban": _unban, "mute": _mute,
    "unmute": _unmute,
}


def _whisper_target(body: dict[str, Any]) -> str:
    to = body.get("to")
    if not isinstance(to, str):
        raise ProtocolError("bad_field", "'to' must be a nick", "whisper")
    return to


def _msg(body: dict[str, Any]) -> Msg:
    return Msg(
        room=body["room"],
        seq=body["seq"],
        ts=body["ts"],
        sender=body["from"],
        text=body["text"],
        id=body.get("id"),
        action=True if body.get("action") is True else None,
    )


def _optional_int(value: Any) -> int | None:
    """An optional integer key; anything else (an old relay's absence, junk) is None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_relay_body(body: Any) -> RelayEvent:
    """Turn a relay -> client map into a RelayEvent (client side; lenient on extras).

    Raises:
        ProtocolError: `bad_frame` when required keys are missing or mistyped.
    """
    if not isinstance(body, dict) or not isinstance(body.get("t"), str):
        raise ProtocolError("bad_frame", "relay frame is not a map with a string 't'")
    t = body["t"]
    try:
        if t == "msg":
            return _msg(body)
        if t == "presence":
            reason = body.get("reason")
            return Presence(body["room"], body["nick"], body["event"], body.get("new"),
                            reason if isinstance(reason, str) else None)
        if t == "joined":
            count = body.get("count") if body.get("truncated") else None
            return Joined(body["room"], tuple(body["members"]), body["seq"],
                          int(count) if count is not None else None, bool(body.get("quiet")))
        if t == "parted":
            return Parted(body["room"])
        if t == "welcome":
            return Welcome(body["nick"], body.get("server", ""), body.get("v", 1),
                           _optional_int(body.get("epoch")), _optional_int(body.get("max_text")))
        if t == "renamed":
            return Renamed(body["nick"])
        if t == "whisper":
            return WhisperMsg(body["from"], body["to"], body["text"], body["ts"], body.get("id"),
                              True if body.get("action") is True else None)
        if t == "members":
            return Members(body["room"], tuple(body["members"]), bool(body.get("more")))
        if t == "history":
            return HistoryPage(
                body["room"], tuple(_msg(m) for m in body["messages"]), bool(body["more"]),
                body.get("replay") is True,
            )
        if t == "pong":
            return PongReply(body.get("id"))
        if t == "ping":
            return KeepalivePing(body.get("id"))
        if t == "notice":
            return Notice(body["text"])
        if t == "away":
            text = body.get("text")
            return AwayNotice(body["nick"], text if isinstance(text, str) else None)
        if t == "rooms":
            total = body.get("total")
            return RoomList(dict(body["rooms"]), int(total) if total is not None else None)
        if t == "error":
            return Error(
                body["code"], body.get("text", ""), body.get("ref"), body.get("room"),
                body.get("nick"),
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("bad_frame", f"relay frame {t!r} is malformed: {exc}") from exc
    raise ProtocolError("unknown_type", f"unknown relay frame type {t!r}")
