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

from typing import Any, Final

# Every code PROTOCOL.md names, plus the extensions docs/protocol.md records.
ERROR_CODES: Final = frozenset(
    {
        "bad_frame",
        "frame_too_large",
        "unknown_type",
        "bad_field",
        "not_ready",
        "nick_taken",
        "nick_invalid",
        "room_invalid",
        "not_in_room",
        "no_such_nick",
        "text_too_long",
        "rate_limited",
        "auth_failed",
        "history_gap",
        "slow_consumer",
        "shutting_down",
        "too_many_connections",
        # Budgets (docs/protocol.md, extension): a join refused, the connection stays.
        "too_many_rooms",
        "too_many_errors",
        # --engine redis:// with the store out of reach: not done, try again (not fatal).
        "unavailable",
        # Moderation (docs/protocol.md, extension):
        "not_operator",
        "kicked",
        "banned",
        "muted",
    }
)

# The one table of codes after which the relay closes the connection, with
# the WebSocket close code each one ends with (RFC 6455 section 7.4.1). The IRC
# codec ends each with an `ERROR :Closing Link` line.
WS_CLOSE_CODES: Final[dict[str, int]] = {
    "frame_too_large": 1009,       # message too big
    "shutting_down": 1001,         # going away
    "slow_consumer": 1008,         # policy violation
    "too_many_connections": 1013,  # try again later
    "kicked": 1008,
    "banned": 1008,
    "too_many_errors": 1008,
}
FATAL_CODES: Final = frozenset(WS_CLOSE_CODES)
# The closing codes the hub decides (not the reader): the worker's bus thread
# cuts the client once the error is written.
CUT_CODES: Final = frozenset({"kicked", "banned", "too_many_errors"})


class ChatRelayError(Exception):
    """Root of every error this project raises on purpose."""


class ProtocolError(ChatRelayError):
    """The peer broke the protocol; `code` is the PROTOCOL.md error code.

    Args:
        code: one of ERROR_CODES.
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
        body: dict[str, Any] = {"t": "error", "code": self.code, "text": self.text}
        if self.ref is not None:
            body["ref"] = self.ref
        body.update(self.context)
        return body


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
