"""One client connection's write side: never blocks, never reorders, bounded.

Two threads write to a connection: its own reader thread (errors about the
client's input) and the worker's bus thread (fan-out, hub replies). Both
call `send()`, which tries one non-blocking send and queues only what the
kernel buffer cannot take; the bus thread flushes the queue when the socket is
writable. Past `max_outbox` bytes the client is a slow consumer: what was
queued is dropped, the `slow_consumer` error takes its place, and the
connection is closed after a short grace (PROTOCOL.md).

Client sockets stay in blocking mode: a Python socket with a timeout is
non-blocking underneath, and its send() first *waits* for writability up to
that timeout, MSG_DONTWAIT or not, and the bus thread must never wait on a
client. So readers wait for input with `wait_readable` instead.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from relay.tls import ServerTls
from relay.worker.limits import ErrorBudget
from relay.worker.outbox import Outbox
from transports.codec import ServerCodec
from transports.errors import error_body

_DONTWAIT = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)


def wait_readable(sock: socket.socket, timeout: float) -> bool:
    """True when `sock` has input (or EOF/error) within `timeout` seconds."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(max(0, int(timeout * 1000))))


class Connection:
    def __init__(
        self,
        cid: int,
        sock: socket.socket,
        addr: str,
        codec: ServerCodec,
        max_outbox: int,
        want_write: Callable[[Connection], None],
        tls: ServerTls | None = None,
    ) -> None:
        self.id = cid
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = addr
        self.codec = codec
        self.max_outbox = max_outbox
        self._want_write = want_write
        self.tls = tls
        self.fan_key: tuple[type[ServerCodec], Hashable] | None = None  # cached by fan-out
        self._lock = threading.Lock()
        self._outbox = Outbox()
        self.drained = threading.Condition(self._lock)
        # Set by the bus thread from hub replies:
        self.ready = False
        self.hello_done = threading.Event()
        self.bye_done = threading.Event()
        self.nick: str | None = None
        self.rooms: set[str] = set()      # rooms the hub confirmed (fan-out members)
        self.sub_rooms: set[str] = set()  # rooms this connection holds a subscription for
        # Lifecycle:
        self.closing = False       # no more output accepted
        self.close_reason = ""
        self.close_at: float | None = None  # bus thread closes at this monotonic time
        self.slow = False
        # Errors sent to this client (the reader sets the limit: --max-errors).
        self.errors = ErrorBudget(0)
        self.moved_at = 0.0  # bus thread: when its backlog last moved (fan-out pacing)
        # Requests with paged replies (history, who...) on their way through the
        # hub: the reader waits before asking more (wait_to_ask), so a client
        # that pipelines them without reading is pushed back, not cut.
        self.asking = 0

    # Writing ------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Queue `data` for the client without blocking; False if it was not taken."""
        if not data:
            return True
        with self._lock:
            if self.closing:
                return False
            return self._send_locked(data)

    def _send_locked(self, data: bytes) -> bool:
        if self.tls is not None:
            data = self.tls.encrypt(data)
        if self._outbox:
            self._outbox.append(data)
        else:
            try:
                sent = self.sock.send(data, _DONTWAIT)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._fail("send failed")
                return False
            if sent == len(data):
                return True
            self._outbox.append_after_partial_send(data, sent)
            self._want_write(self)
        if len(self._outbox) > self.max_outbox:
            self._slow_consumer()
            return False
        return True

    def flush(self) -> bool:
        """Send what the kernel takes now (bus thread); True when the outbox is empty."""
        with self._lock:
            while self._outbox:
                try:
                    self._outbox.send_to(self.sock, _DONTWAIT)
                except BlockingIOError:
                    return False
                except OSError:
                    self._outbox.clear()
                    self._fail("send failed")
                    break
            self.drained.notify_all()
            return True

    @property
    def pending(self) -> int:
        return len(self._outbox)

    def decrypt(self, raw: bytes) -> bytes:
        """TLS: wire bytes in, plaintext out (under the send lock: one SSLObject)."""
        if self.tls is None:
            return raw
        with self._lock:
            plain, reply = self.tls.decrypt(raw)
            if reply:
                self._queue_wire(reply)
            return plain

    def _queue_wire(self, wire: bytes) -> None:
        if self._outbox:
            self._outbox.append(wire)
            return
        try:
            sent = self.sock.send(wire, _DONTWAIT)
        except OSError:
            sent = 0
        if sent < len(wire):
            self._outbox.append_after_partial_send(wire, sent)
            self._want_write(self)

    def _slow_consumer(self) -> None:
        queued = len(self._outbox)
        error = self.codec.encode(error_body(
            "slow_consumer", f"you fell {queued} bytes behind (limit {self.max_outbox}); "
            "closing, reconnect and resume from your last seq"))
        if self.tls is None:
            # What was queued is dropped; the error takes its place.
            # (a chunk the kernel took part of keeps its tail: frames stay whole).
            self._outbox.drop_unsent()
            self._outbox.append(error)
        else:
            # TLS records cannot be dropped from the middle of the stream.
            self._outbox.append(self.tls.encrypt(error))
        self.slow = True
        self.closing = True
        self.close_reason = "slow_consumer"
        self.close_at = time.monotonic()  # bus thread adds the grace
        self._want_write(self)

    def _fail(self, reason: str) -> None:
        self.closing = True
        self.close_reason = self.close_reason or reason
        self.close_at = time.monotonic()

    # Closing ------------------------------------------------------------------

    def finish(self, last: dict[str, Any] | None = None, reason: str = "closed") -> None:
        """Send a final body (an error) and accept no more output.

        The caller then closes: a reader thread with `linger_close()`, the bus
        thread (shutdown) once the outbox is flushed.
        """
        if last is not None:
            self.send(self.codec.encode(last))
        with self._lock:
            self.closing = True
            self.close_reason = self.close_reason or reason

    def wait_to_ask(self, most: int, timeout: float) -> None:
        """Reader: wait while `most` paged requests are unanswered or the outbox
        holds over half of --max-outbox, then count one more.

        Its replies then queue at most half the outbox plus `most` replies, so a
        script that asks faster than it reads is slowed by TCP, not cut as a
        slow consumer. Past `timeout` it asks anyway (a hub that restarted
        never answers the requests it lost).
        """
        deadline = time.monotonic() + timeout
        half = self.max_outbox // 2
        with self._lock:
            while (self.asking >= most or len(self._outbox) > half) and not self.closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.asking = 0
                    break
                self.drained.wait(min(left, 0.25))
            self.asking += 1

    def answered(self) -> None:
        """Bus thread: a paged reply went to the socket (or its outbox)."""
        with self._lock:
            self.asking = max(0, self.asking - 1)
            self.drained.notify_all()

    def wait_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._outbox:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.drained.wait(left)
            return True

    def shutdown(self, hard: bool = False) -> None:
        """End our side of the stream: FIN after queued data, or (hard) cut both ways.

        A hard cut also wakes the reader thread blocked in recv(); it is for
        slow consumers, which are not reading anyway.
        """
        with self._lock:
            self.closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR if hard else socket.SHUT_WR)
        except OSError:
            pass

    def linger_close(self, drain: float, linger: float = 1.0) -> None:
        """Flush, half-close, then read until the peer closes (bounded).

        Closing a socket with unread input makes the kernel send RST, which can
        destroy the error line we just sent before the peer reads it.
        """
        self.wait_drained(drain)
        self.shutdown()
        deadline = time.monotonic() + linger
        budget = 1 << 20
        try:
            while budget > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if not wait_readable(self.sock, left):
                    break
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass

