"""WebSocket dialect: native bodies as JSON text or msgpack binary messages.

The RFC 6455 work (HTTP upgrade, masking, fragmentation, ping/pong, the
closing handshake) is done by `websockets.server.ServerProtocol`, which is
sans-I/O like every codec here: this module only routes the HTTP request
(`/ws` upgrades, the web page, 404), turns complete messages into
`ClientEvent`s and bodies into frames.

Three subprotocols, chosen in the handshake:

- `chat-relay.v1.json` (also when the client asks for none): one JSON object
  per text message;
- `chat-relay.v1.msgpack`: one msgpack map per binary message;
- `text.ircv3.net` (IRCv3 "WebSocket" spec, gamja and Kiwi IRC): one IRC
  line per text message, without CR LF, handed to the IRC codec
  (transports/irc.py) that this connection then wraps.

Server frames are built here from the body and the subprotocol alone, never
by the per-connection `ServerProtocol`: fan-out encodes a batch once per
subprotocol and sends the same bytes to every member. That is also why
permessage-deflate is never negotiated (its compressor state is per
connection).
"""

from __future__ import annotations

import http
import json
import logging
import re
from collections.abc import Hashable, Sequence
from typing import Any, Final, Self

from websockets.exceptions import NegotiationError, PayloadTooBig
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from transports.codec import CodecSettings, Decoded, ServerCodec
from transports.errors import WS_CLOSE_CODES, FatalProtocolError, ProtocolError
from transports.events import Bye, parse_client_body, presence_bodies
from transports.irc import DEFAULT_MAX_PENDING, IrcServerCodec
from transports.native import pack_body, unpack_body
from transports.validate import MAX_DEPTH, json_depth_exceeds
from transports.ws_http import (
    WS_PATH,
    origin_allowed,
    page_response,
    parse_allowed_origins,
    route,
    text_response,
)

JSON_SUBPROTOCOL: Final = Subprotocol("chat-relay.v1.json")
MSGPACK_SUBPROTOCOL: Final = Subprotocol("chat-relay.v1.msgpack")
IRC_SUBPROTOCOL: Final = Subprotocol("text.ircv3.net")
SUBPROTOCOLS: Final = (JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, IRC_SUBPROTOCOL)
MAX_REQUEST_HEAD: Final = 65536  # request line + headers we hold before parsing
# Frames one message may arrive in. websockets bounds a message's bytes
# (max_size) but not its frames, and an empty continuation frame adds none.
DEFAULT_MAX_FRAGMENTS: Final = 1024

_log = logging.getLogger("transports.websocket")

# A \\uD800-\\uDFFF escape may leave a lone surrogate that no encoder accepts.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")



def _select_subprotocol(
    protocol: ServerProtocol, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """The client's first supported choice; None (meaning JSON) when it asks for none.

    Answering a subprotocol the client did not offer would make browsers fail
    the handshake, so the default is implicit.
    """
    if not offered:
        return None
    for name in offered:
        if name in SUBPROTOCOLS:
            return name
    raise NegotiationError(
        f"no supported subprotocol among {len(offered)} offered; "
        f"this relay speaks {', '.join(SUBPROTOCOLS)}"
    )


def _json_default(value: object) -> object:
    # Bodies come from msgpack, which may carry bin; JSON has no bytes.
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def encode_json(body: dict[str, Any]) -> bytes:
    """The compact UTF-8 JSON text of one body."""
    return json.dumps(
        body, ensure_ascii=False, separators=(",", ":"), default=_json_default
    ).encode("utf-8", "surrogatepass")


def decode_json(data: bytes) -> Any:
    """One JSON text message's value.

    Raises:
        ProtocolError: `bad_frame` when it is not UTF-8, nests deeper than
            MAX_DEPTH (checked on the text, before the recursive decoder runs),
            is not JSON, or holds a lone surrogate (no encoder accepts one).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            "bad_frame", f"text message is not UTF-8 at byte {exc.start} of {len(data)}"
        ) from None
    if json_depth_exceeds(text, MAX_DEPTH):
        raise ProtocolError(
            "bad_frame", f"message nests arrays and objects more than {MAX_DEPTH} levels deep"
        )
    try:
        body = json.loads(text)
        if _SURROGATE_ESCAPE.search(text):
            encode_json(body).decode("utf-8")  # rejects lone surrogates
    except (ValueError, RecursionError) as exc:  # RecursionError: belt and braces
        raise ProtocolError("bad_frame", f"text message is not JSON: {str(exc)[:80]}") from None
    return body


def server_frame(opcode: Opcode, payload: bytes) -> bytes:
    """One unmasked, unfragmented server frame (the same bytes for every receiver)."""
    return Frame(opcode, payload).serialize(mask=False)


def irc_frames(lines: bytes) -> bytes:
    """IRC lines (CR LF ended) as text frames, one line each, without the CR LF."""
    return b"".join(server_frame(Opcode.TEXT, line)
                    for line in lines.split(b"\r\n") if line)


def close_frame(code: int, reason: str = "") -> bytes:
    return server_frame(Opcode.CLOSE, Close(code, reason[:120]).serialize())


class Reassembler:
    """Joins a fragmented message (RFC 6455 section 5.4) for either side's codec.

    Decode state: only the thread that decodes uses it. A message in more
    than `max_fragments` frames is dropped and sets `over`; the caller says
    so and stops reading.
    """

    def __init__(self, max_fragments: int) -> None:
        self.max_fragments = max_fragments
        self.over = False
        self._data = bytearray()  # the message so far
        self._count = 0  # the frames it came in
        self._opcode: Opcode | None = None  # its type; None: no message under way

    def add(self, frame: Frame) -> tuple[Opcode, bytes] | None:
        """The whole message once `frame` ends one; None until then, for control
        frames, for a continuation of no message, and past the limit."""
        if frame.opcode is Opcode.TEXT or frame.opcode is Opcode.BINARY:
            if frame.fin:
                return frame.opcode, bytes(frame.data)
            self._opcode, self._count = frame.opcode, 1
            self._data[:] = frame.data
            return None
        if frame.opcode is not Opcode.CONT or self._opcode is None:
            return None
        self._count += 1
        if self._count > self.max_fragments:
            self.over = True
            self._reset()
            return None
        self._data += frame.data
        if not frame.fin:
            return None
        whole = self._opcode, bytes(self._data)
        self._reset()
        return whole

    @property
    def held(self) -> int:
        """Bytes kept for a message under way."""
        return len(self._data)

    @property
    def frames(self) -> int:
        """Frames of a message under way (0: none)."""
        return self._count

    def _reset(self) -> None:
        self._opcode, self._count = None, 0
        self._data.clear()


class WebSocketServerCodec(ServerCodec):
    """The relay side of `GET /` and `GET /ws` (one HTTP request per connection)."""

    name = "ws"

    def __init__(
        self,
        max_frame: int = 65536,
        max_text: int = 4096,
        *,
        allowed_origins: str = "",
        max_fragments: int = DEFAULT_MAX_FRAGMENTS,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_rooms: int = 100,
    ) -> None:
        super().__init__(max_frame, max_text)
        # For a text.ircv3.net connection: the IRC codec it wraps, made at the
        # upgrade (before any fan-out, so encoders see it set or never use it).
        self.irc: IrcServerCodec | None = None
        self._irc_limits = (max_pending, max_rooms)
        self.allowed_origins = parse_allowed_origins(allowed_origins)
        self.max_fragments = max_fragments
        # max_size bounds a whole (possibly fragmented) message, not one frame.
        self._ws = ServerProtocol(
            subprotocols=list(SUBPROTOCOLS),
            select_subprotocol=_select_subprotocol,
            max_size=max_frame,
            logger=_log,
        )
        self.subprotocol: Subprotocol = JSON_SUBPROTOCOL
        self.is_open = False  # True once the 101 response went out
        self._out = bytearray()
        # A fragmented message so far (its bytes are at most max_frame, which
        # ServerProtocol enforces).
        self._fragments = Reassembler(max_fragments)
        self._close_sent = False
        self._too_big = False
        # The request head is held back until it is complete: ServerProtocol
        # would otherwise parse what follows it as frames before we answer
        # (sending pongs ahead of the 101, or failing on a pipelined request).
        self._head = bytearray()
        self._head_done = False

    @classmethod
    def configured(cls, settings: CodecSettings) -> Self:
        return cls(
            settings.max_frame,
            settings.max_text,
            allowed_origins=settings.allowed_origins,
            max_fragments=settings.max_fragments,
            max_pending=settings.max_pending,
            max_rooms=settings.max_rooms_per_client,
        )

    # Bytes in -----------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Decoded]:
        out: list[Decoded] = []
        if self.closed:
            return out
        try:
            if not data:
                self._ws.receive_eof()
                self.closed = True
            elif self._head_done:
                self._ws.receive_data(data)
            else:
                self._receive_head(data, out)
            self._handle_events(out)
            self._collect_writes(out)
        except Exception:  # a bug here costs this connection only
            _log.exception("websocket codec failed; closing the connection")
            self.closed = True
        return out

    def _receive_head(self, data: bytes, out: list[Decoded]) -> None:
        """Feed ServerProtocol the request head alone, then (if it upgraded) the rest."""
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) <= MAX_REQUEST_HEAD:
                return
            head, rest = bytes(self._head), b""  # websockets' own limits answer it
        else:
            head, rest = bytes(self._head[: end + 4]), bytes(self._head[end + 4 :])
        self._head.clear()
        self._head_done = True
        self._ws.receive_data(head)
        self._handle_events(out)
        if rest and self.is_open:
            self._ws.receive_data(rest)
        # After a page or an error response, anything pipelined is ignored.

    def _handle_events(self, out: list[Decoded]) -> None:
        for event in self._ws.events_received():
            if isinstance(event, Request):
                self._answer_request(event)
            elif isinstance(event, Frame) and self.is_open and not self.closed:
                self._receive_frame(event, out)

    def _answer_request(self, request: Request) -> None:
        if self._ws.eof_sent:
            # What followed the request in the same read was not a WebSocket
            # frame (a pipelined second request, garbage), and ServerProtocol
            # has already failed the connection: answering would trip its
            # assertion that EOF goes out once. Close without an answer.
            self.closed = True
            return
        if route(request) == WS_PATH and not origin_allowed(request, self.allowed_origins):
            # A page on another site opening the relay through a visitor's
            # browser: refused before it is a WebSocket (ws_http.py).
            origin = ", ".join(request.headers.get_all("Origin"))[:200]
            response = text_response(
                http.HTTPStatus.FORBIDDEN,
                f"403: origin {origin} may not open this relay's WebSocket "
                "(chat-relay start --allowed-origins admits it)\n",
            )
        elif route(request) == WS_PATH:
            response = self._ws.accept(request)
            if response.status_code == 426:
                # A browser opening /ws as a page: say what the path is for.
                response = text_response(
                    http.HTTPStatus.UPGRADE_REQUIRED,
                    "426: /ws is the relay's WebSocket endpoint; open / for the web chat\n",
                )
                response.headers["Upgrade"] = "websocket"
        else:
            response = page_response(request)
        if response.status_code == 101:
            # Published before is_open: the encoder reads them in that order.
            self.subprotocol = self._ws.subprotocol or JSON_SUBPROTOCOL
            if self.subprotocol == IRC_SUBPROTOCOL:
                self.irc = IrcServerCodec(self.max_frame, self.max_text,
                                          max_pending=self._irc_limits[0],
                                          max_rooms=self._irc_limits[1])
        self._ws.send_response(response)
        if response.status_code == 101:
            self.is_open = True

    def _receive_frame(self, frame: Frame, out: list[Decoded]) -> None:
        # Control frames (ping, pong, close) are answered by ServerProtocol.
        message = self._fragments.add(frame)
        if message is not None:
            self._receive_message(*message, out)
        elif self._fragments.over and not self.closed:
            self._too_many_fragments(out)

    def _too_many_fragments(self, out: list[Decoded]) -> None:
        """Fatal, like a message over max_frame: the error, then a 1009 close."""
        out.append(
            FatalProtocolError(
                "frame_too_large",
                f"message in more than {self.max_fragments} fragments; "
                f"the limit is {self.max_fragments} frames per message",
            )
        )
        self.closed = True

    def _receive_message(self, opcode: Opcode, data: bytes, out: list[Decoded]) -> None:
        if self.irc is not None:
            # One IRC line per message; a CR LF at its end is allowed.
            out.extend(self.irc.receive_data(data.rstrip(b"\r\n") + b"\r\n"))
            if self.irc.closed:
                self.closed = True  # a QUIT: read nothing more
            return
        try:
            body = self._decode_body(opcode, data)
            event = parse_client_body(body, self.max_text)
        except ProtocolError as err:
            out.append(err)
            return
        out.append(event)
        if isinstance(event, Bye):
            self.closed = True  # read nothing more; the Close frame is the farewell

    def farewell(self) -> bytes:
        if self._close_sent or not self.is_open:
            return b""
        self._close_sent = True
        self.closed = True
        last = irc_frames(self.irc.farewell()) if self.irc is not None else b""
        return last + close_frame(CloseCode.NORMAL_CLOSURE, "bye")

    def _decode_body(self, opcode: Opcode, data: bytes) -> Any:
        """One message's body; raises ProtocolError(bad_frame) saying what is wrong."""
        if self.subprotocol == MSGPACK_SUBPROTOCOL:
            if opcode is not Opcode.BINARY:
                raise ProtocolError(
                    "bad_frame", f"{MSGPACK_SUBPROTOCOL} carries binary messages, got text"
                )
            body = unpack_body(data)  # bad_frame if not msgpack or too deep
            what = "a msgpack map"
        else:
            if opcode is not Opcode.TEXT:
                raise ProtocolError(
                    "bad_frame", f"{JSON_SUBPROTOCOL} carries text messages, got binary"
                )
            body = decode_json(data)
            what = "a JSON object"
        if not isinstance(body, dict) or not isinstance(body.get("t"), str):
            raise ProtocolError("bad_frame", f"a message must be {what} with a string 't'")
        return body

    def _collect_writes(self, out: list[Decoded]) -> None:
        writes = self._ws.data_to_send()
        if isinstance(self._ws.parser_exc, PayloadTooBig) and not self._too_big:
            # ServerProtocol already queued its close frame; drop it so the
            # error frame goes first (encode() of the error adds the close).
            while writes and (writes[-1] == b"" or writes[-1][:1] == b"\x88"):
                writes.pop()
            out.append(
                FatalProtocolError(
                    "frame_too_large",
                    f"message exceeds the limit of {self.max_frame} bytes",
                )
            )
            self._too_big = True
            self.closed = True
        for chunk in writes:
            if chunk:
                self._out += chunk
            else:  # SEND_EOF: ServerProtocol is done with this connection
                self.closed = True

    def data_to_send(self) -> bytes:
        if self.irc is not None:
            self._out += irc_frames(self.irc.data_to_send())
        data = bytes(self._out)
        self._out.clear()
        return data

    # Bodies out ---------------------------------------------------------------

    def encode(self, body: dict[str, Any]) -> bytes:
        if not self.is_open or self._close_sent:
            return b""
        t = body.get("t")
        if t in ("welcome", "renamed"):
            self.nick = body.get("nick", self.nick)
        if self.irc is not None:
            data = irc_frames(self.irc.encode(body))
        else:
            data = self.encode_fanout(body, self.subprotocol)
        if t == "error":
            code = WS_CLOSE_CODES.get(str(body.get("code")))
            if code is None and self.irc is not None and self.irc.closed:
                code = CloseCode.POLICY_VIOLATION  # the IRC codec ended it (ERROR line)
            if code is not None:
                self._close_sent = True
                self.closed = True
                data += close_frame(code, str(body.get("code")))
        return data

    # The subprotocol is settled before the first fan-out; so are an IRC
    # client's caps (they are negotiated before registration, thus any join).
    fixed_fanout_key = True

    def fanout_key(self, room: str) -> Hashable:
        if self.irc is not None:
            return (IRC_SUBPROTOCOL, self.irc.fanout_key(room))
        return self.subprotocol

    @classmethod
    def encode_fanout(cls, body: dict[str, Any], key: Hashable) -> bytes:
        if isinstance(key, tuple):  # (text.ircv3.net, the IRC codec's key)
            return irc_frames(IrcServerCodec.encode_fanout(body, key[1]))
        if body.get("t") == "presence_batch":  # the hub's form; clients get v1 bodies
            return b"".join(cls.encode_fanout(b, key) for b in presence_bodies(body))
        if key == MSGPACK_SUBPROTOCOL:
            return server_frame(Opcode.BINARY, pack_body(body))
        return server_frame(Opcode.TEXT, encode_json(body))

    def encode_own(self, body: dict[str, Any], msg_id: Any) -> bytes:
        if self._close_sent:
            return b""
        if self.irc is not None:
            return irc_frames(self.irc.encode_own(body, msg_id))
        if msg_id is not None:
            body = dict(body)
            body["id"] = msg_id
        return self.encode_fanout(body, self.subprotocol)
