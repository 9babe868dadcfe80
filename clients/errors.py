"""What the client library raises, on top of the tree in transports/errors.py.

    ChatRelayError
    ├── RelayError           the relay refused a request of ours (an `error` frame);
    │   └── HandshakeError   ... our `hello` (nick_taken, nick_invalid, auth_failed)
    ├── CannotConnect        no TCP/TLS connection could be made (refused, timeout)
    └── ConnectionClosed     (transports) the connection is gone for good

Timeouts waiting for an answer raise the built-in TimeoutError; a bad room or
nick argument raises ValueError before anything is sent.
"""

from __future__ import annotations

from transports.errors import ChatRelayError, ConnectionClosed
from transports.events import Error

__all__ = ["CannotConnect", "ConnectionClosed", "HandshakeError", "RelayError"]


class RelayError(ChatRelayError):
    """The relay answered a request with `error{code}`; `code` is the PROTOCOL.md code."""

    def __init__(self, error: Error) -> None:
        where = f" (room {error.room})" if error.room else ""
        super().__init__(f"{error.code}: {error.text}{where}")
        self.error = error
        self.code = error.code
        self.text = error.text


class HandshakeError(RelayError):
    """The relay refused our `hello`: nick_taken, nick_invalid, auth_failed, ..."""


class CannotConnect(ChatRelayError):
    """Opening the connection failed; the message names the address and the cause."""

    def __init__(self, host: str, port: int, cause: str) -> None:
        super().__init__(f"cannot connect to {host}:{port}: {cause}")
        self.host = host
        self.port = port
        self.cause = cause


def describe_os_error(exc: BaseException) -> str:
    """A short lowercase cause for a connect failure ("connection refused")."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__
