"""Sans-I/O client session: codec + state + handshake + answers to calls.

The sync and asyncio clients differ only in how they wait; everything they
decide lives here, so both behave alike:

- `hello()` starts a handshake on a fresh connection (a new codec each time).
- `send(event)` gives the bytes for a user event and notes it in the state.
- `receive_data(data)` turns bytes into a `Batch`: events to deliver, calls
  that got their answer, bytes to send back (keepalive `pong`s, history
  fills), and how the handshake went.

A call (who, join, history, ...) is a `Request`: the first relay event that
answers it, or an `error` whose `ref` names its type, completes it and is not
delivered to `recv()` as well.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from clients.errors import ConnectionClosed, HandshakeError, RelayError
from clients.state import ClientState, Incoming, RoomState
from transports.errors import ProtocolError
from transports.events import (
    ClientEvent,
    Error,
    Hello,
    HistoryPage,
    Joined,
    KeepalivePing,
    Members,
    Parted,
    Pong,
    PongReply,
    RelayEvent,
    Renamed,
    RoomList,
    Welcome,
)
from transports.native import NativeClientCodec

TRANSPORTS = ("native", "ws", "ws-msgpack")


class ClientCodec(Protocol):
    """What a Session needs of a dialect's client side (native, WebSocket)."""

    def send(self, event: ClientEvent) -> bytes: ...

    def receive_data(self, data: bytes) -> list[RelayEvent | ProtocolError]: ...

    def data_to_send(self) -> bytes: ...


CodecFactory = Callable[[], ClientCodec]


def codec_factory(transport: str, host: str, port: int, tls: bool = False) -> CodecFactory:
    """A fresh codec per connection for `transport` (one of TRANSPORTS).

    Raises:
        ValueError: an unknown transport.
    """
    if transport == "native":
        return NativeClientCodec
    from transports.websocket_client import TRANSPORTS as WS_TRANSPORTS
    from transports.websocket_client import WebSocketClientCodec

    if transport not in WS_TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}; choose one of {', '.join(TRANSPORTS)}")
    subprotocol = WS_TRANSPORTS[transport]
    return lambda: WebSocketClientCodec(host, port, tls, subprotocol)

# Codes that end a handshake attempt; the rest are reported but wait on.
_HELLO_CODES = frozenset(
    {"nick_taken", "nick_invalid", "auth_failed", "bad_field", "room_invalid", "not_ready"}
)
_REPLY_TYPES: dict[str, type[RelayEvent]] = {
    "who": Members,
    "history": HistoryPage,
    "join": Joined,
    "part": Parted,
    "nick": Renamed,
    "ping": PongReply,
    "rooms": RoomList,
}


@dataclass(eq=False, slots=True)
class Request:
    """A call waiting for its answer; `kind` is the type of the frame we sent."""

    kind: str
    room: str | None = None
    key: Any = None
    reply: RelayEvent | None = None
    error: Exception | None = None

    def matches(self, ev: RelayEvent) -> bool:
        if isinstance(ev, Error):
            if ev.code == "history_gap":
                return False  # a notice; the history page still answers the query
            return ev.ref == self.kind and (
                ev.room is None or self.room is None or ev.room == self.room
            )
        if not isinstance(ev, _REPLY_TYPES[self.kind]):
            return False
        if isinstance(ev, HistoryPage) and ev.replay:
            return False  # a join's replay, sent unasked: no answer to a query
        if isinstance(ev, PongReply):
            return bool(ev.id == self.key)
        room = getattr(ev, "room", None)
        return self.room is None or room == self.room

    def fresh(self) -> Request:
        """The same call, unanswered: for sending it again on a new connection."""
        return Request(self.kind, self.room, self.key)

    def result(self) -> RelayEvent:
        """The answer, or raise what the relay said (RelayError) or the loss."""
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        return self.reply


@dataclass(slots=True)
class Batch:
    """What one chunk of received bytes amounted to."""

    deliver: list[Incoming] = field(default_factory=list)
    done: list[Request] = field(default_factory=list)
    out: bytes = b""
    # Fatal codec trouble (the relay sent a frame we cannot read past).
    fatal: str | None = None


class Session:
    """One logical client across connections: the state outlives each socket."""

    def __init__(
        self,
        nick: str,
        rooms: tuple[str, ...] = ("lobby",),
        password: str | None = None,
        resume: dict[str, int] | None = None,
        codec: CodecFactory = NativeClientCodec,
    ) -> None:
        self.state = ClientState(nick)
        # A resume map saved from an earlier session: continue where it stopped.
        for room, seq in (resume or {}).items():
            self.state.rooms[room] = RoomState(last=seq)
        self.wanted_nick = nick
        self.initial_rooms = tuple(dict.fromkeys(rooms))
        self.password = password
        self._new_codec = codec
        self.codec: ClientCodec = codec()
        self.requests: list[Request] = []
        self.welcomed = False
        self.failed: HandshakeError | None = None
        self._awaiting: set[str] = set()
        self._resuming = bool(resume)
        self._ids = itertools.count(1)
        # Keepalive pings answered (visible to tests and curious callers).
        self.keepalives = 0

    # Handshake --------------------------------------------------------------

    def hello(self, *, new_connection: bool = True) -> bytes:
        """Bytes of a `hello` for this session: a resume once we were in rooms.

        `new_connection=False` retries on the same connection (after
        nick_taken), keeping the codec and whatever it buffered.
        """
        if new_connection:
            self.codec = self._new_codec()
        self.welcomed = False
        self.failed = None
        if self.state.nick is None or not self._resuming:
            rooms = self.initial_rooms
            resume = None
        else:
            resume = self.state.resume_map()
            rooms = tuple(resume)
        nick = self.state.nick or self.wanted_nick
        self._awaiting = set(rooms)
        return self.codec.send(Hello(nick=nick, rooms=rooms, password=self.password, resume=resume))

    @property
    def ready(self) -> bool:
        """Welcomed and joined to every room the hello named."""
        return self.welcomed and not self._awaiting

    def connection_lost(self, reason: str) -> list[Request]:
        """The socket is gone: fail the calls in flight, keep state for a resume."""
        self._resuming = self._resuming or self.welcomed or bool(self.state.rooms)
        self.state.connection_lost()
        self.welcomed = False
        failed, self.requests = self.requests, []
        for req in failed:
            req.error = ConnectionClosed(reason)
        return failed

    # Sending ----------------------------------------------------------------

    def next_id(self) -> str:
        return str(next(self._ids))

    def send(self, event: ClientEvent, request: Request | None = None) -> bytes:
        """Bytes for a user event; `request` (if any) will wait for its answer."""
        self.state.sent(event)
        if request is not None:
            self.requests.append(request)
        return self.codec.send(event)

    def cancel(self, request: Request) -> None:
        """Stop waiting for an answer (a timed-out call)."""
        if request in self.requests:
            self.requests.remove(request)

    # Receiving --------------------------------------------------------------

    def receive_data(self, data: bytes) -> Batch:
        batch = Batch()
        out: list[ClientEvent] = []
        for item in self.codec.receive_data(data):
            if isinstance(item, ProtocolError):
                # The relay sent something we cannot read: report it as an error.
                batch.deliver.append(Error(item.code, f"from the relay: {item.text}"))
                if item.fatal:
                    batch.fatal = item.text
                    if not self.welcomed and self.failed is None:
                        # No hello can succeed on this connection (a refused upgrade).
                        self.failed = HandshakeError(Error(item.code, item.text))
                continue
            if isinstance(item, KeepalivePing):
                out.append(Pong(item.id))
                self.keepalives += 1
                continue
            if not self.welcomed and self._handshake_event(item, batch):
                continue
            for ev in self.state.receive(item):
                if isinstance(ev, Joined):
                    self._awaiting.discard(ev.room)
                if isinstance(ev, RelayEvent) and self._complete(ev, batch):
                    continue
                batch.deliver.append(ev)
        out += self.state.outgoing()
        batch.out = self.codec.data_to_send() + b"".join(self.codec.send(e) for e in out)
        return batch

    def _handshake_event(self, ev: RelayEvent, batch: Batch) -> bool:
        """Handle an event before `welcome`; True when it was consumed here."""
        if isinstance(ev, Welcome):
            self.welcomed = True
            self.state.receive(ev)
            return True
        if isinstance(ev, Error) and ev.ref in (None, "hello") and ev.code in _HELLO_CODES:
            self.failed = HandshakeError(ev)
            return True
        return False

    def _complete(self, ev: RelayEvent, batch: Batch) -> bool:
        for req in self.requests:
            if req.matches(ev):
                self.requests.remove(req)
                if isinstance(ev, Error):
                    req.error = RelayError(ev)
                else:
                    req.reply = ev
                batch.done.append(req)
                return True
        return False
