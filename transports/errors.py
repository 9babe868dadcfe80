"""Errors, drawn as one tree so every caller knows who is at fault.

    ChatRelayError
    ├── ProtocolError          the peer sent something we refuse; carries a
    │   │                      PROTOCOL.md error code and becomes an `error` frame
    │   └── FatalProtocolError the same, but the protocol says close afterwards
    │                          (frame_too_large, slow_consumer, shutting_down, ...)
    ├── LocalProtocolError     we misused a codec (a bug on our side)
    └── ConnectionClosed       client side: the relay went away or closed us

A `ProtocolError` never escapes into an I/O loop as an exception: codecs return
it as a value next to the events they decoded, so one bad frame costs one error
reply and the connection goes on (unless it is fatal).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal


@dataclass(frozen=True, slots=True)
class IrcNumeric:
    """The RFC 2812 numeric reply an IRC client reads an error as.

    `names` is what the numeric names before its text: the room's channel, the
    nick the error is about, or nothing; `{text}` in `text` is the error's own.
    """

    numeric: str
    text: str = "{text}"
    names: Literal["", "channel", "nick"] = ""


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """What one error code does to the connection, in every dialect.

    Args:
        ws_close: set for the codes after which the relay closes the
            connection: the WebSocket close code it ends with (RFC 6455
            section 7.4.1). IRC ends those with an `ERROR :Closing Link` line.
        cut: the hub decides the close, not the reader: the worker's bus
            thread cuts the client once the error is written.
        irc: the numeric the IRC codec answers with when the error needs no
            more context than its body; None: a server NOTICE (or a reply the
            IRC codec builds from the command that asked, see transports/irc.py).
    """

    ws_close: int | None = None
    cut: bool = False
    irc: IrcNumeric | None = None

    @property
    def closes(self) -> bool:
        return self.ws_close is not None


_POLICY = 1008  # WebSocket close code: policy violation

# The one table of error codes: every code PROTOCOL.md names, plus the
# extensions docs/protocol.md records. Nowhere else lists codes by what they do.
ERRORS: Final = MappingProxyType({
    "bad_frame": ErrorRule(),
    "frame_too_large": ErrorRule(ws_close=1009),  # message too big
    "unknown_type": ErrorRule(),
    "bad_field": ErrorRule(),
    "not_ready": ErrorRule(irc=IrcNumeric("451", "You have not registered")),
    "nick_taken": ErrorRule(irc=IrcNumeric("433", "Nickname is already in use", "nick")),
    "nick_invalid": ErrorRule(
        irc=IrcNumeric("432", "Erroneous nickname: 1-32 of A-Z a-z 0-9 _ -", "nick")),
    "room_invalid": ErrorRule(irc=IrcNumeric("479", "Illegal channel name: {text}", "channel")),
    "not_in_room": ErrorRule(irc=IrcNumeric("442", "You're not on that channel", "channel")),
    "no_such_nick": ErrorRule(irc=IrcNumeric("401", "No such nick/channel", "nick")),
    "text_too_long": ErrorRule(irc=IrcNumeric("417")),
    "rate_limited": ErrorRule(),
    "auth_failed": ErrorRule(irc=IrcNumeric("464", "Password incorrect: {text}")),
    "history_gap": ErrorRule(),
    "slow_consumer": ErrorRule(ws_close=_POLICY),
    "shutting_down": ErrorRule(ws_close=1001),  # going away
    "too_many_connections": ErrorRule(ws_close=1013),  # try again later
    # Budgets (docs/protocol.md, extension): a join refused, the connection stays;
    # too many errors close it.
    "too_many_rooms": ErrorRule(
        irc=IrcNumeric("405", "You have joined too many channels ({text})", "channel")),
    "too_many_errors": ErrorRule(ws_close=_POLICY, cut=True),
    # --engine redis:// with the store out of reach: not done, try again (not fatal).
    "unavailable": ErrorRule(),
    # Moderation (docs/protocol.md, extension):
    "not_operator": ErrorRule(irc=IrcNumeric("481", "Permission Denied- {text}")),
    "kicked": ErrorRule(ws_close=_POLICY, cut=True),
    "banned": ErrorRule(ws_close=_POLICY, cut=True, irc=IrcNumeric("465")),
    "muted": ErrorRule(),  # IRC: 404 for a refused PRIVMSG (it names the channel)
})

# Views of the table, for the codecs and the worker.
ERROR_CODES: Final = frozenset(ERRORS)
WS_CLOSE_CODES: Final[dict[str, int]] = {
    code: rule.ws_close for code, rule in ERRORS.items() if rule.ws_close is not None}
FATAL_CODES: Final = frozenset(code for code, rule in ERRORS.items() if rule.closes)
CUT_CODES: Final = frozenset(code for code, rule in ERRORS.items() if rule.cut)


def error_body(code: str, text: str, ref: str | None = None, **context: Any) -> dict[str, Any]:
    """The `error` body (PROTOCOL.md) every part of the relay sends.

    Args:
        code: one of ERRORS.
        text: a human sentence that names the numbers involved.
        ref: the offending request's type, when there is one.
        context: keys that name the error's context (`room`, `nick`, `by`).
    """
    body: dict[str, Any] = {"t": "error", "code": code, "text": text}
    if ref is not None:
        body["ref"] = ref
    body.update(context)
    return body


def history_gap(room: str, first: int, after: int, ref: str) -> dict[str, Any]:
    """`history_gap`: the messages of `room` after seq `after` and before
    `first` (where its history now starts) are gone."""
    return error_body(
        "history_gap",
        f"history of {room} starts at seq {first}; messages {after + 1}-{first - 1} are gone",
        ref, room=room)


class ChatRelayError(Exception):
    """Root of every error this project raises on purpose."""


class ProtocolError(ChatRelayError):
    """The peer broke the protocol; `code` is the PROTOCOL.md error code.

    Args:
        code: one of ERRORS.
        text: a human sentence that names the numbers involved.
        ref: the offending frame's type, when known.
        context: extra keys for the error frame (`room`, `nick`).
    """

    def __init__(
        self, code: str, text: str, ref: str | None = None, **context: Any
    ) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.ref = ref
        self.context = context

    @property
    def fatal(self) -> bool:
        return self.code in FATAL_CODES

    def body(self) -> dict[str, Any]:
        """The `error` frame body this error becomes on the wire."""
        return error_body(self.code, self.text, self.ref, **self.context)


class FatalProtocolError(ProtocolError):
    """A ProtocolError after which the connection is closed."""

    @property
    def fatal(self) -> bool:
        return True


class LocalProtocolError(ChatRelayError):
    """Our own code asked a codec for something impossible: a bug, not the peer."""


class ConnectionClosed(ChatRelayError):
    """The connection is gone; `reason` says why (EOF, error code, reset)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
