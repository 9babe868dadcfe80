"""Blocking client: `connect()` returns a `Client`; one reader thread per client.

The reader thread owns receiving: it feeds bytes to the sans-I/O `Session`,
answers keepalive pings, completes waiting calls, queues the rest for
`recv()`, and (with `reconnect=True`) reconnects with backoff and resumes
every room. Any thread may send; a lock keeps frames whole and in order.

Locks: `_send_lock` (socket writes) may be taken before `_lock` (session
state), never the other way round; the reader never holds both.
"""

from __future__ import annotations

import queue
import random
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

from clients.core import Batch, Request, Session, codec_factory
from clients.errors import (
    CannotConnect,
    ConnectionClosed,
    HandshakeError,
    describe_os_error,
    tls_failure,
)
from clients.state import ConnectionLost, Incoming, Reconnected
from transports.events import (
    Bye,
    ClientEvent,
    HistoryPage,
    HistoryQuery,
    Join,
    Joined,
    ListRooms,
    Members,
    NickChange,
    Part,
    Ping,
    PongReply,
    Renamed,
    RoomList,
    Say,
    Who,
)
from transports.events import Whisper as WhisperEvent
from transports.validate import HISTORY_DEFAULT_LIMIT, check_nick, check_room

DEFAULT_TIMEOUT = 10.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
# How long a reconnect waits for our own ghost session to free the nick.
GHOST_WAIT = 10.0
GUEST_TRIES = 5
_RECV_SIZE = 65536


class _Closed:
    """Queue sentinel: the connection is gone for good."""


_CLOSED = _Closed()


class _Retry(Exception):
    """A call met a broken connection; try it again on the next one."""


def guest_nick() -> str:
    return f"guest{random.randint(1000, 99999)}"


def backoff_delays(first: float = BACKOFF_FIRST, cap: float = BACKOFF_MAX) -> Iterator[float]:
    """0.1 s doubling to 5 s, each with +-25 % jitter so clients do not stampede."""
    delay = first
    while True:
        yield delay * random.uniform(0.75, 1.25)
        delay = min(delay * 2, cap)


def validate_nick(nick: str) -> str:
    try:
        return check_nick(nick)
    except Exception as exc:
        raise ValueError(str(exc)) from None


def validate_room(room: str) -> str:
    try:
        return check_room(room)
    except Exception as exc:
        raise ValueError(str(exc)) from None


def connect(
    host: str,
    port: int,
    nick: str | None = None,
    rooms: tuple[str, ...] | list[str] = ("lobby",),
    password: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    tls: ssl.SSLContext | None = None,
    *,
    reconnect: bool = False,
    resume: dict[str, int] | None = None,
    transport: str = "native",
) -> Client:
    """Connect, say `hello`, and wait until every room is joined.

    Args:
        nick: None asks for a guest nick (guestNNNN, retried if taken).
        timeout: bounds the connect, the handshake and every call's wait.
        tls: an SSLContext to speak TLS (server_hostname is `host`).
        reconnect: reconnect with backoff and resume after a connection loss.
        resume: `resume_map()` of an earlier session: its rooms are joined and
            what was said since is replayed (or reported as `Missed`).
        transport: "native" (msgpack frames), "ws" (WebSocket, JSON bodies on
            /ws) or "ws-msgpack" (WebSocket, msgpack bodies); the same events
            and calls over each.

    Raises:
        CannotConnect: the TCP/TLS connection failed.
        HandshakeError: nick_taken, nick_invalid, auth_failed (see `.code`).
        TimeoutError: the relay did not finish the handshake in `timeout`.
        ValueError: a bad nick, room or transport name.
    """
    client = Client(
        host, port, nick, tuple(rooms), password, timeout, tls, reconnect, resume, transport
    )
    client.open()
    return client


class _Flag(Protocol):
    def is_set(self) -> bool: ...


class ClientBase:
    """What the sync and asyncio clients share: settings and the sans-I/O session."""

    def __init__(
        self,
        host: str,
        port: int,
        nick: str | None = None,
        rooms: tuple[str, ...] = ("lobby",),
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        tls: ssl.SSLContext | None = None,
        reconnect: bool = False,
        resume: dict[str, int] | None = None,
        transport: str = "native",
    ) -> None:
        """Validate the settings and build the session; no I/O happens here."""
        for room in rooms:
            validate_room(room)
        codec = codec_factory(transport, host, port, tls is not None)
        self.transport = transport
        self.host = host
        self.port = port
        self.timeout = timeout
        self.tls = tls
        self.reconnect = reconnect
        self._guest = nick is None
        self.session = Session(
            validate_nick(nick) if nick else guest_nick(), rooms, password, resume, codec
        )


    # Set by the I/O subclasses: their "connected" event and why they closed.
    _connected: _Flag
    closed_reason: str | None

    @property
    def nick_name(self) -> str:
        return self.session.state.nick or self.session.wanted_nick

    @property
    def joined_rooms(self) -> list[str]:
        return list(self.session.state.rooms)

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and self.closed_reason is None


class Client(ClientBase):
    """A connected chat client; see `connect()`. Usable as a context manager."""

    _connected: threading.Event

    def __init__(
        self,
        host: str,
        port: int,
        nick: str | None = None,
        rooms: tuple[str, ...] = ("lobby",),
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        tls: ssl.SSLContext | None = None,
        reconnect: bool = False,
        resume: dict[str, int] | None = None,
        transport: str = "native",
    ) -> None:
        super().__init__(host, port, nick, rooms, password, timeout, tls, reconnect, resume,
                         transport)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._acked = threading.Condition(self._lock)
        self._queue: queue.Queue[Incoming | _Closed] = queue.Queue()
        self._waiters: dict[Request, threading.Event] = {}
        # Clear only while a reconnect is under way: callers wait on it.
        self._connected = threading.Event()
        self._closing = threading.Event()
        self._reader: threading.Thread | None = None
        self.closed_reason: str | None = None
        # Hellos repeated while our previous session still held the nick.
        self.ghost_retries = 0

    # Connecting -------------------------------------------------------------

    def open(self) -> None:
        """First connection: raise on failure instead of retrying."""
        for attempt in range(GUEST_TRIES):
            sock = self._open_socket()
            try:
                for ev in self._handshake(sock, ghost_wait=0.0):
                    self._queue.put(ev)
                break
            except HandshakeError as err:
                sock.close()
                if not (self._guest and err.code == "nick_taken" and attempt + 1 < GUEST_TRIES):
                    raise
                self.session.state.nick = self.session.wanted_nick = guest_nick()
            except BaseException:
                sock.close()
                raise
        self._sock = sock
        self._connected.set()
        self._reader = threading.Thread(
            target=self._read_loop, name=f"chat-client-{self.nick_name}", daemon=True
        )
        self._reader.start()

    def _open_socket(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise CannotConnect(self.host, self.port, describe_os_error(exc)) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is None:
            return sock
        try:
            return self.tls.wrap_socket(sock, server_hostname=self.host)
        except OSError as exc:  # ssl.SSLError included
            sock.close()
            raise tls_failure(self.host, self.port, exc) from exc

    def _handshake(self, sock: socket.socket, ghost_wait: float) -> list[Incoming]:
        """Say hello on `sock` and read until welcomed and joined everywhere."""
        deadline = time.monotonic() + self.timeout + ghost_wait
        ghost_until = time.monotonic() + ghost_wait
        with self._lock:
            hello = self.session.hello()
        delivered: list[Incoming] = []
        try:
            sock.settimeout(self.timeout)
            sock.sendall(hello)
            while True:
                with self._lock:
                    if self.session.ready:
                        break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no welcome from {self.host}:{self.port} in time")
                sock.settimeout(remaining)
                data = sock.recv(_RECV_SIZE)
                if not data:
                    raise ConnectionClosed("the relay closed the connection during the handshake")
                with self._lock:
                    batch = self.session.receive_data(data)
                    failed = self.session.failed
                if batch.out:
                    sock.sendall(batch.out)
                delivered += batch.deliver
                if failed is None:
                    continue
                if failed.code == "nick_taken" and time.monotonic() < ghost_until:
                    # Our own ghost still holds the nick; the relay frees it soon.
                    self.ghost_retries += 1
                    if self._closing.wait(0.25):
                        raise ConnectionClosed("closed while reconnecting")
                    with self._lock:
                        sock.sendall(self.session.hello(new_connection=False))
                    continue
                raise failed
        except TimeoutError as exc:
            raise TimeoutError(
                f"no welcome from {self.host}:{self.port} within {self.timeout:g} s"
            ) from exc
        sock.settimeout(None)
        return delivered

    # Reading ----------------------------------------------------------------

    def _read_loop(self) -> None:
        while True:
            sock = self._sock
            assert sock is not None
            reason = "the relay closed the connection"
            try:
                data = sock.recv(_RECV_SIZE)
            except OSError as exc:
                data = b""
                reason = describe_os_error(exc)
            if data:
                with self._lock:
                    batch = self.session.receive_data(data)
                    self._acked.notify_all()
                self._dispatch(batch)
                if batch.out and not self._send_raw(batch.out):
                    reason = "send failed"
                elif batch.fatal is None:
                    continue
                else:
                    reason = batch.fatal
            if not self._lost(sock, reason):
                return

    def _dispatch(self, batch: Batch) -> None:
        for ev in batch.deliver:
            self._queue.put(ev)
        for req in batch.done:
            waiter = self._waiters.pop(req, None)
            if waiter is not None:
                waiter.set()

    def _lost(self, sock: socket.socket, reason: str) -> bool:
        """Handle a lost connection; True when a new one is up."""
        self._connected.clear()
        sock.close()
        with self._lock:
            failed = self.session.connection_lost(reason)
            self._acked.notify_all()
        for req in failed:
            waiter = self._waiters.pop(req, None)
            if waiter is not None:
                waiter.set()
        if self._closing.is_set() or not self.reconnect:
            return self._finish(reason)
        self._queue.put(ConnectionLost(reason))
        for delay in backoff_delays():
            if self._closing.wait(delay):
                return self._finish("closed")
            try:
                new = self._open_socket()
            except CannotConnect:
                continue
            try:
                delivered = self._handshake(new, ghost_wait=GHOST_WAIT)
            except HandshakeError as err:
                new.close()
                if err.code != "nick_taken":
                    return self._finish(f"reconnect refused: {err}")
                return self._finish(f"reconnect refused: nick still taken after {GHOST_WAIT:g} s")
            except (OSError, ConnectionClosed):
                new.close()
                continue
            with self._send_lock:
                self._sock = new
            self._queue.put(Reconnected(self.nick_name))
            for ev in delivered:
                self._queue.put(ev)
            self._connected.set()
            return True
        return False  # pragma: no cover - backoff_delays never ends

    def _finish(self, reason: str) -> bool:
        self.closed_reason = reason
        self._connected.set()  # wakes callers waiting out a reconnect; they see the close
        self._queue.put(_CLOSED)
        return False

    # Sending ----------------------------------------------------------------

    def _send_raw(self, data: bytes) -> bool:
        with self._send_lock:
            sock = self._sock
            if sock is None:
                return False
            try:
                sock.sendall(data)
            except OSError:
                return False
        return True

    def _call(
        self, event: ClientEvent, request: Request | None = None, timeout: float | None = None
    ) -> Any:
        """Send `event`; with a request, wait for and return its answer.

        With auto-reconnect, a send that fails because the connection broke,
        or a call whose answer the broken connection took along, is tried
        again on the next connection (within `timeout`): each frame is sent
        whole or not at all, and the calls are safe to repeat.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            attempt = request.fresh() if request is not None else None
            try:
                return self._call_once(event, attempt, deadline, timeout)
            except _Retry:
                continue

    def _call_once(
        self, event: ClientEvent, request: Request | None, deadline: float, timeout: float
    ) -> Any:
        if not self._connected.wait(max(0.0, deadline - time.monotonic())):
            if self.closed_reason is not None:
                raise ConnectionClosed(self.closed_reason)
            raise TimeoutError(f"not connected to {self.host}:{self.port} within {timeout:g} s")
        waiter = threading.Event()
        with self._send_lock:
            sock = self._sock
            if self.closed_reason is not None or sock is None:
                raise ConnectionClosed(self.closed_reason or "not connected")
            with self._lock:
                data = self.session.send(event, request)
                if request is not None:
                    self._waiters[request] = waiter
            try:
                sock.sendall(data)
            except OSError as exc:
                with self._lock:
                    if request is not None:
                        self.session.cancel(request)
                        self._waiters.pop(request, None)
                if self._may_retry():
                    self._connected.clear()  # the reader sees the loss and reconnects
                    raise _Retry() from exc
                raise ConnectionClosed(f"send failed: {describe_os_error(exc)}") from exc
        if request is None:
            return None
        if not waiter.wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                self.session.cancel(request)
                self._waiters.pop(request, None)
            raise TimeoutError(f"no answer to {event.T!r} within {timeout:g} s")
        try:
            return request.result()
        except ConnectionClosed:
            if self._may_retry():
                raise _Retry() from None
            raise

    def _may_retry(self) -> bool:
        return self.reconnect and not self._closing.is_set() and self.closed_reason is None

    def send(self, event: ClientEvent) -> None:
        """Send any client event as is; its answer arrives through `recv()`."""
        self._call(event)

    def say(self, room: str, text: str, id: Any = None, action: bool = False) -> Any:
        """Say `text` in `room` (as an action, `/me`, with `action`); returns the id
        the relay will echo on our copy."""
        msg_id = self.session.next_id() if id is None else id
        self._call(Say(validate_room(room), text, msg_id, action=action or None))
        return msg_id

    def whisper(self, to: str, text: str, id: Any = None, action: bool = False) -> Any:
        msg_id = self.session.next_id() if id is None else id
        self._call(WhisperEvent(to, text, msg_id, action=action or None))
        return msg_id

    def join(self, room: str, timeout: float | None = None) -> tuple[str, ...]:
        """Join `room`; returns its members (us included)."""
        room = validate_room(room)
        reply: Joined = self._call(Join(room), Request("join", room), timeout)
        return reply.members

    def part(self, room: str, timeout: float | None = None) -> None:
        room = validate_room(room)
        self._call(Part(room), Request("part", room), timeout)

    def nick(self, new: str, timeout: float | None = None) -> str:
        """Change nick; returns the nick the relay confirmed (RelayError if taken)."""
        reply: Renamed = self._call(NickChange(validate_nick(new)), Request("nick"), timeout)
        return reply.nick

    def who(self, room: str, timeout: float | None = None) -> tuple[str, ...]:
        room = validate_room(room)
        reply: Members = self._call(Who(room), Request("who", room), timeout)
        return reply.members

    def history(
        self,
        room: str,
        after: int | None = None,
        limit: int = HISTORY_DEFAULT_LIMIT,
        timeout: float | None = None,
    ) -> HistoryPage:
        """Up to `limit` messages with seq > `after` (the latest when None), oldest first."""
        room = validate_room(room)
        query = HistoryQuery(room, after, limit)
        reply: HistoryPage = self._call(query, Request("history", room), timeout)
        return reply

    def ping(self, timeout: float | None = None) -> float:
        """Round trip to the relay, in seconds."""
        key = self.session.next_id()
        start = time.monotonic()
        reply: PongReply = self._call(Ping(key), Request("ping", key=key), timeout)
        del reply
        return time.monotonic() - start

    def rooms(self, timeout: float | None = None) -> dict[str, int]:
        """Every room on the relay with its member count (extension)."""
        reply: RoomList = self._call(ListRooms(), Request("rooms"), timeout)
        return dict(reply.rooms)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every say came back from the relay; False on timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._acked:
            while self.session.state.unacked and self.closed_reason is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._acked.wait(remaining)
            return not self.session.state.unacked

    # Receiving --------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> Incoming | None:
        """The next event, or None after `timeout` seconds.

        Raises:
            ConnectionClosed: the connection is gone and nothing is left to read.
        """
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, _Closed):
            self._queue.put(item)  # every later recv() raises too
            raise ConnectionClosed(self.closed_reason or "closed")
        return item

    def __iter__(self) -> Iterator[Incoming]:
        while True:
            try:
                item = self.recv()
            except ConnectionClosed:
                return
            if item is not None:
                yield item

    # State ------------------------------------------------------------------

    @property
    def local_port(self) -> int | None:
        """Our end's TCP port (None while disconnected): names the connection."""
        sock = self._sock
        try:
            return int(sock.getsockname()[1]) if sock is not None else None
        except OSError:
            return None

    # Closing ----------------------------------------------------------------

    def close(self, timeout: float = 2.0) -> None:
        """Say `bye`, wait (bounded) for the relay to close, then close."""
        if self._closing.is_set():
            return
        self._closing.set()
        sock = self._sock
        if sock is not None and self.connected:
            with self._lock:
                data = self.session.codec.send(Bye())
            self._send_raw(data)
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout)
            if self._reader.is_alive() and sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._reader.join(timeout)
        if sock is not None:
            sock.close()
        if self.closed_reason is None:
            self._finish("closed")

    bye = close

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

