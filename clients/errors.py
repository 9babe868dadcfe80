"""What the client library raises, on top of the tree in transports/errors.py.

    ChatRelayError
    ├── RelayError           the relay refused a request of ours (an `error` frame);
    │   └── HandshakeError   ... our `hello` (nick_taken, nick_invalid, auth_failed)
    ├── CannotConnect        no TCP/TLS connection could be made (refused, timeout)
    │   └── NotTls           we asked for TLS; the relay speaks plain TCP
    └── ConnectionClosed     (transports) the connection is gone for good

Timeouts waiting for an answer raise the built-in TimeoutError; a bad room or
nick argument raises ValueError before anything is sent.
"""

from __future__ import annotations

import ssl

from transports.errors import ChatRelayError, ConnectionClosed
from transports.events import Error

__all__ = ["CannotConnect", "ConnectionClosed", "HandshakeError", "NotTls", "RelayError"]


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


class NotTls(CannotConnect):
    """We spoke TLS and the relay does not: it answered our ClientHello in plain
    text, or closed the connection at it. `how` says which."""

    def __init__(self, host: str, port: int, how: str) -> None:
        super().__init__(host, port, f"this relay does not use TLS ({how})")
        self.how = how


# OpenSSL's reasons for a first record that is no TLS record: plain text came back.
_PLAIN_REPLY = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG",
                          "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "RECORD_TOO_LARGE"})


def tls_failure(host: str, port: int, exc: BaseException) -> CannotConnect:
    """What a failed TCP connect + TLS handshake means, in words.

    The TCP connect itself failing (refused, timed out) is said as such; a
    reset or EOF once connected, before any ServerHello, is a plain relay
    closing on our ClientHello.
    """
    if isinstance(exc, ssl.SSLError):
        if isinstance(exc, ssl.SSLEOFError):
            return NotTls(host, port, "it closed the connection at our TLS hello")
        if exc.reason in _PLAIN_REPLY:
            return NotTls(host, port, "it answered our TLS hello in plain text")
        return CannotConnect(host, port, f"TLS handshake failed: {exc}")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, EOFError)):
        return NotTls(host, port, "it closed the connection at our TLS hello")
    return CannotConnect(host, port, describe_os_error(exc))


def describe_os_error(exc: BaseException) -> str:
    """A short lowercase cause for a connect failure ("connection refused")."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__
