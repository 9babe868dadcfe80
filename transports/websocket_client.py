"""The client side of the WebSocket dialect, sans-I/O: `GET /ws`, then native bodies.

Same interface as `transports.native.NativeClientCodec`, so `clients.core.Session`
(and through it the sync and asyncio clients and chat-client) speaks either:

- `send(event)` returns the bytes of one client frame; the first call also
  carries the HTTP upgrade request in front of it. The relay holds pipelined
  frames until it has answered the request, so `hello` needs no round trip
  of its own.
- `receive_data(data)` (b"" means EOF) returns `RelayEvent`s and
  `ProtocolError`s in order; a refused upgrade is one fatal `ProtocolError`.
- `data_to_send()` returns what the codec must send by itself: pongs for the
  relay's WebSocket pings, the answer to its close frame.

`websockets.client.ClientProtocol` does the RFC 6455 work (handshake checks,
frame parsing, control frames). Data frames are built here, masked, because
a `hello` may go out before the 101 arrives, when ClientProtocol would still
refuse to send. The bodies are the ones the native dialect carries
(transports/events.py), as JSON text or msgpack binary messages.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from transports.errors import FatalProtocolError, ProtocolError
from transports.events import ClientEvent, RelayEvent, parse_relay_body
from transports.native import pack_body, unpack_body
from transports.websocket import (
    DEFAULT_MAX_FRAGMENTS,
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Reassembler,
    encode_json,
)
from transports.ws_http import WS_PATH

# transport= names the client library accepts, and the subprotocol each asks for.
TRANSPORTS: Final = {"ws": JSON_SUBPROTOCOL, "ws-msgpack": MSGPACK_SUBPROTOCOL}
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024  # like the native client: history pages are big

_log = logging.getLogger("transports.websocket_client")


def ws_uri(host: str, port: int, tls: bool) -> str:
    """`ws://host:port/ws` (`wss://` with TLS; an IPv6 address in brackets)."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{'wss' if tls else 'ws'}://{shown}:{port}{WS_PATH}"


class WebSocketClientCodec:
    """One WebSocket connection to the relay's /ws, as bytes in and events out."""

    def __init__(
        self,
        host: str,
        port: int,
        tls: bool = False,
        subprotocol: str = JSON_SUBPROTOCOL,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        if subprotocol not in (JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL):
            raise ValueError(f"unknown subprotocol {subprotocol!r}")
        self.binary = subprotocol == MSGPACK_SUBPROTOCOL
        self._ws = ClientProtocol(
            parse_uri(ws_uri(host, port, tls)),
            subprotocols=[subprotocol],  # type: ignore[list-item]
            max_size=max_message,
            logger=_log,
        )
        self._ws.send_request(self._ws.connect())
        self.open = False  # True once the relay answered 101
        self.failed: str | None = None
        # A fragmented message so far (its bytes are bounded by max_message,
        # its frames by DEFAULT_MAX_FRAGMENTS: the relay never fragments).
        self._fragments = Reassembler(DEFAULT_MAX_FRAGMENTS)

    # Bytes out ----------------------------------------------------------------

    def send(self, event: ClientEvent) -> bytes:
        return self.data_to_send() + self.encode(event.to_body())

    def encode(self, body: dict[str, Any]) -> bytes:
        """One masked client message carrying `body`."""
        if self.binary:
            return Frame(Opcode.BINARY, pack_body(body)).serialize(mask=True)
        return Frame(Opcode.TEXT, encode_json(body)).serialize(mask=True)

    def data_to_send(self) -> bytes:
        # b"" in the list means "half-close now"; the socket shim closes on EOF anyway.
        return b"".join(self._ws.data_to_send())

    # Bytes in -----------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[RelayEvent | ProtocolError]:
        out: list[RelayEvent | ProtocolError] = []
        if data:
            self._ws.receive_data(data)
        else:
            self._ws.receive_eof()
        for event in self._ws.events_received():
            if isinstance(event, Response):
                self._handshake(event, out)
            elif isinstance(event, Frame) and self.failed is None:
                self._frame(event, out)
        if self._ws.handshake_exc is not None and self.failed is None:
            self._fail(f"WebSocket upgrade failed: {self._ws.handshake_exc}", out)
        return out

    def _handshake(self, response: Response, out: list[RelayEvent | ProtocolError]) -> None:
        exc = self._ws.handshake_exc
        if exc is None:
            self.open = True
            return
        if isinstance(exc, InvalidStatus):
            body = (response.body or b"").decode("utf-8", "replace").strip()[:200]
            self._fail(f"{WS_PATH} answered HTTP {response.status_code}: {body}", out)
        else:
            self._fail(f"WebSocket upgrade refused: {exc}", out)

    def _fail(self, why: str, out: list[RelayEvent | ProtocolError]) -> None:
        self.failed = why
        out.append(FatalProtocolError("bad_frame", why))

    def _frame(self, frame: Frame, out: list[RelayEvent | ProtocolError]) -> None:
        # Ping, pong and close are handled by ClientProtocol (see data_to_send).
        message = self._fragments.add(frame)
        if message is not None:
            self._message(*message, out)
        elif self._fragments.over:
            self._fail(f"relay sent a message in more than {DEFAULT_MAX_FRAGMENTS} "
                       "fragments", out)

    def _message(self, opcode: Opcode, data: bytes, out: list[RelayEvent | ProtocolError]
                 ) -> None:
        try:
            if opcode is Opcode.BINARY:
                body = unpack_body(data)
            else:
                body = json.loads(data.decode("utf-8"))
        except Exception as exc:  # msgpack and json raise many types; all mean the same
            out.append(ProtocolError(
                "bad_frame", f"relay message of {len(data)} bytes did not decode: {exc}"))
            return
        try:
            out.append(parse_relay_body(body))
        except ProtocolError as err:
            out.append(err)
