"""asyncio client: `await connect()` returns an `AsyncClient`, the sync API with awaits.

Same `Session` as clients/sync.py, so dedup, gap fills, keepalive answers and
resume behave identically. One reader task per client receives, completes
waiting calls (futures) and queues the rest for `recv()`; with
`reconnect=True` it also reconnects with backoff and resumes every room.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

from clients.core import Batch, Request
from clients.errors import (
    CannotConnect,
    ConnectionClosed,
    HandshakeError,
    describe_os_error,
    tls_failure,
)
from clients.state import ConnectionLost, Incoming, Reconnected
from clients.sync import (
    DEFAULT_TIMEOUT,
    GHOST_WAIT,
    GUEST_TRIES,
    ClientBase,
    backoff_delays,
    guest_nick,
    validate_nick,
    validate_room,
)
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
    Renamed,
    RoomList,
    Say,
    Who,
)
from transports.events import Whisper as WhisperEvent
from transports.validate import HISTORY_DEFAULT_LIMIT

_RECV_SIZE = 65536


class _Closed:
    """Queue sentinel: the connection is gone for good."""


_CLOSED = _Closed()


class _Retry(Exception):
    """A call met a broken connection; try it again on the next one."""


async def connect(
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
) -> AsyncClient:
    """Connect, say `hello`, wait until every room is joined (see sync.connect)."""
    client = AsyncClient(
        host, port, nick, tuple(rooms), password, timeout, tls, reconnect, resume, transport
    )
    await client.open()
    return client


class AsyncClient(ClientBase):
    """A connected asyncio chat client. Usable as an async context manager."""

    _connected: asyncio.Event

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
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._send_lock = asyncio.Lock()
        self._queue: asyncio.Queue[Incoming | _Closed] = asyncio.Queue()
        self._waiters: dict[Request, asyncio.Future[None]] = {}
        # Clear only while a reconnect is under way: callers wait on it.
        self._connected = asyncio.Event()
        self._closing = asyncio.Event()
        self._acked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.closed_reason: str | None = None
        # Hellos repeated while our previous session still held the nick.
        self.ghost_retries = 0

    # Connecting -------------------------------------------------------------

    async def open(self) -> None:
        """First connection: raise on failure instead of retrying."""
        for attempt in range(GUEST_TRIES):
            reader, writer = await self._open_stream()
            try:
                for ev in await self._handshake(reader, writer, ghost_wait=0.0):
                    self._queue.put_nowait(ev)
                break
            except HandshakeError as err:
                writer.close()
                if not (self._guest and err.code == "nick_taken" and attempt + 1 < GUEST_TRIES):
                    raise
                self.session.state.nick = self.session.wanted_nick = guest_nick()
            except BaseException:
                writer.close()
                raise
        self._reader, self._writer = reader, writer
        self._connected.set()
        self._task = asyncio.create_task(self._read_loop(), name=f"chat-client-{self.nick_name}")

    async def _open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                    limit=_RECV_SIZE * 4,
                )
        except (OSError, TimeoutError, EOFError) as exc:  # ssl.SSLError is an OSError
            if self.tls is not None:
                raise tls_failure(self.host, self.port, exc) from exc
            raise CannotConnect(self.host, self.port, describe_os_error(exc)) from exc
        return reader, writer

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ghost_wait: float
    ) -> list[Incoming]:
        """Say hello and read until welcomed and joined everywhere."""
        ghost_until = time.monotonic() + ghost_wait
        delivered: list[Incoming] = []
        try:
            async with asyncio.timeout(self.timeout + ghost_wait):
                writer.write(self.session.hello())
                await writer.drain()
                while not self.session.ready:
                    data = await reader.read(_RECV_SIZE)
                    if not data:
                        raise ConnectionClosed(
                            "the relay closed the connection during the handshake"
                        )
                    batch = self.session.receive_data(data)
                    if batch.out:
                        writer.write(batch.out)
                    delivered += batch.deliver
                    failed = self.session.failed
                    if failed is None:
                        continue
                    if failed.code == "nick_taken" and time.monotonic() < ghost_until:
                        self.ghost_retries += 1
                        await asyncio.sleep(0.25)  # our ghost frees the nick soon
                        writer.write(self.session.hello(new_connection=False))
                        continue
                    raise failed
        except TimeoutError:
            raise TimeoutError(
                f"no welcome from {self.host}:{self.port} within {self.timeout:g} s"
            ) from None
        return delivered

    # Reading ----------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            reader, writer = self._reader, self._writer
            assert reader is not None and writer is not None
            reason = "the relay closed the connection"
            try:
                data = await reader.read(_RECV_SIZE)
            except (OSError, ssl.SSLError) as exc:
                data = b""
                reason = describe_os_error(exc)
            if data:
                batch = self.session.receive_data(data)
                self._dispatch(batch)
                if batch.out and not await self._send_raw(batch.out):
                    reason = "send failed"
                elif batch.fatal is None:
                    continue
                else:
                    reason = batch.fatal
            if not await self._lost(writer, reason):
                return

    def _dispatch(self, batch: Batch) -> None:
        for ev in batch.deliver:
            self._queue.put_nowait(ev)
        for req in batch.done:
            self._wake(req)
        if batch.deliver:
            self._acked.set()

    def _wake(self, req: Request) -> None:
        fut = self._waiters.pop(req, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _lost(self, writer: asyncio.StreamWriter, reason: str) -> bool:
        """Handle a lost connection; True when a new one is up."""
        self._connected.clear()
        writer.close()
        for req in self.session.connection_lost(reason):
            self._wake(req)
        self._acked.set()
        if self._closing.is_set() or not self.reconnect:
            return self._finish(reason)
        self._queue.put_nowait(ConnectionLost(reason))
        for delay in backoff_delays():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()
            if self._closing.is_set():
                return self._finish("closed")
            try:
                reader, new = await self._open_stream()
            except CannotConnect:
                continue
            try:
                delivered = await self._handshake(reader, new, ghost_wait=GHOST_WAIT)
            except HandshakeError as err:
                new.close()
                if err.code != "nick_taken":
                    return self._finish(f"reconnect refused: {err}")
                return self._finish(f"reconnect refused: nick still taken after {GHOST_WAIT:g} s")
            except (OSError, ConnectionClosed, ssl.SSLError):
                new.close()
                continue
            self._reader, self._writer = reader, new
            self._queue.put_nowait(Reconnected(self.nick_name))
            for ev in delivered:
                self._queue.put_nowait(ev)
            self._connected.set()
            return True
        return False  # pragma: no cover - backoff_delays never ends

    def _finish(self, reason: str) -> bool:
        self.closed_reason = reason
        self._connected.set()  # wakes callers waiting out a reconnect; they see the close
        self._queue.put_nowait(_CLOSED)
        self._acked.set()
        return False

    # Sending ----------------------------------------------------------------

    async def _send_raw(self, data: bytes) -> bool:
        async with self._send_lock:
            writer = self._writer
            if writer is None or writer.is_closing():
                return False
            try:
                writer.write(data)
                await writer.drain()
            except (OSError, ssl.SSLError):
                return False
        return True

    async def _call(
        self, event: ClientEvent, request: Request | None = None, timeout: float | None = None
    ) -> Any:
        """Send `event`; with a request, wait for and return its answer.

        With auto-reconnect a call that met a broken connection is tried again
        on the next one, within `timeout` (see sync.Client._call).
        """
        timeout = self.timeout if timeout is None else timeout
        attempt: Request | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    attempt = request.fresh() if request is not None else None
                    try:
                        return await self._call_once(event, attempt)
                    except _Retry:
                        continue
        except TimeoutError:
            if attempt is not None:
                self.session.cancel(attempt)
                self._waiters.pop(attempt, None)
            if self.closed_reason is not None:
                raise ConnectionClosed(self.closed_reason) from None
            raise TimeoutError(f"no answer to {event.T!r} within {timeout:g} s") from None

    async def _call_once(self, event: ClientEvent, request: Request | None) -> Any:
        if self.closed_reason is not None:
            raise ConnectionClosed(self.closed_reason)
        await self._connected.wait()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        async with self._send_lock:
            writer = self._writer
            if self.closed_reason is not None or writer is None:
                raise ConnectionClosed(self.closed_reason or "not connected")
            data = self.session.send(event, request)
            if request is not None:
                self._waiters[request] = fut
            try:
                if writer.is_closing():
                    raise ConnectionResetError("connection lost")
                writer.write(data)
                await writer.drain()
            except (OSError, ssl.SSLError) as exc:
                if request is not None:
                    self.session.cancel(request)
                    self._waiters.pop(request, None)
                if self._may_retry():
                    if writer is self._writer:
                        self._connected.clear()  # the reader sees the loss and reconnects
                    raise _Retry() from exc
                raise ConnectionClosed(f"send failed: {describe_os_error(exc)}") from exc
        if request is None:
            return None
        await fut
        try:
            return request.result()
        except ConnectionClosed:
            if self._may_retry():
                raise _Retry() from None
            raise

    def _may_retry(self) -> bool:
        return self.reconnect and not self._closing.is_set() and self.closed_reason is None

    async def send(self, event: ClientEvent) -> None:
        """Send any client event as is; its answer arrives through `recv()`."""
        await self._call(event)

    async def say(self, room: str, text: str, id: Any = None, action: bool = False) -> Any:
        """Say `text` in `room` (as an action, `/me`, with `action`); returns the id
        the relay will echo on our copy."""
        msg_id = self.session.next_id() if id is None else id
        await self._call(Say(validate_room(room), text, msg_id, action=action or None))
        return msg_id

    async def whisper(self, to: str, text: str, id: Any = None, action: bool = False) -> Any:
        msg_id = self.session.next_id() if id is None else id
        await self._call(WhisperEvent(to, text, msg_id, action=action or None))
        return msg_id

    async def join(self, room: str, timeout: float | None = None) -> tuple[str, ...]:
        room = validate_room(room)
        reply: Joined = await self._call(Join(room), Request("join", room), timeout)
        return reply.members

    async def part(self, room: str, timeout: float | None = None) -> None:
        room = validate_room(room)
        await self._call(Part(room), Request("part", room), timeout)

    async def nick(self, new: str, timeout: float | None = None) -> str:
        reply: Renamed = await self._call(NickChange(validate_nick(new)), Request("nick"), timeout)
        return reply.nick

    async def who(self, room: str, timeout: float | None = None) -> tuple[str, ...]:
        room = validate_room(room)
        reply: Members = await self._call(Who(room), Request("who", room), timeout)
        return reply.members

    async def history(
        self,
        room: str,
        after: int | None = None,
        limit: int = HISTORY_DEFAULT_LIMIT,
        timeout: float | None = None,
    ) -> HistoryPage:
        room = validate_room(room)
        query = HistoryQuery(room, after, limit)
        reply: HistoryPage = await self._call(query, Request("history", room), timeout)
        return reply

    async def ping(self, timeout: float | None = None) -> float:
        """Round trip to the relay, in seconds."""
        key = self.session.next_id()
        start = time.monotonic()
        await self._call(Ping(key), Request("ping", key=key), timeout)
        return time.monotonic() - start

    async def rooms(self, timeout: float | None = None) -> dict[str, int]:
        reply: RoomList = await self._call(ListRooms(), Request("rooms"), timeout)
        return dict(reply.rooms)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every say came back from the relay; False on timeout."""
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                while self.session.state.unacked and self.closed_reason is None:
                    self._acked.clear()
                    await self._acked.wait()
        except TimeoutError:
            return False
        return not self.session.state.unacked

    # Receiving --------------------------------------------------------------

    async def recv(self, timeout: float | None = None) -> Incoming | None:
        """The next event, or None after `timeout` seconds.

        Raises:
            ConnectionClosed: the connection is gone and nothing is left to read.
        """
        try:
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        except TimeoutError:
            return None
        if isinstance(item, _Closed):
            self._queue.put_nowait(item)
            raise ConnectionClosed(self.closed_reason or "closed")
        return item

    async def __aiter__(self) -> AsyncIterator[Incoming]:
        while True:
            try:
                item = await self.recv()
            except ConnectionClosed:
                return
            if item is not None:
                yield item

    # State ------------------------------------------------------------------

    @property
    def local_port(self) -> int | None:
        """Our end's TCP port (None while disconnected): names the connection."""
        writer = self._writer
        name = writer.get_extra_info("sockname") if writer is not None else None
        return int(name[1]) if name else None

    # Closing ----------------------------------------------------------------

    async def close(self, timeout: float = 2.0) -> None:
        """Say `bye`, wait (bounded) for the relay to close, then close."""
        if self._closing.is_set():
            return
        self._closing.set()
        if self.connected:
            await self._send_raw(self.session.codec.send(Bye()))
        if self._task is not None and self._task is not asyncio.current_task():
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await self._writer.wait_closed()
        if self.closed_reason is None:
            self._finish("closed")

    bye = close

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
