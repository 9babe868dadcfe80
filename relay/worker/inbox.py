"""What reader threads hand the bus thread: requests, opens and closes, and write wake-ups.

A deque plus an eventfd: any thread appends and wakes the bus thread, which
drains everything queued in one go (one bus message per wake). The eventfd
is written only when no wake-up is pending, so a burst of requests costs
one syscall. `ReaderLink` is the whole of what a reader may do with the bus
thread, and `Inbox` implements it, with the credit window readers wait on.
"""

from __future__ import annotations

import enum
import os
import threading
from collections import deque
from typing import Protocol

from relay.bus.messages import Request
from relay.worker.pacing import CreditGate, ReaderWeight
from relay.worker.writer import Connection


class Local(enum.Enum):
    """Queued events the bus thread handles itself (never sent as they are)."""

    OPENED = "opened"  # a connection has a codec: count it, take its replies
    CLOSED = "closed"  # its reader is done: forget it, close its socket, tell the hub


Queued = tuple[Connection | None, Request | Local]


class ReaderLink(Protocol):
    """What a reader may ask of its worker's bus thread (reader.py)."""

    def submit(self, conn: Connection | None, request: Request) -> None:
        """Queue a request for the hub, in order with this client's others."""

    def opened(self, conn: Connection) -> None:
        """The connection has a codec: the bus thread takes its replies from now."""

    def closed(self, conn: Connection) -> None:
        """The reader is done: the bus thread forgets it and closes its socket."""

    def want_write(self, conn: Connection) -> None:
        """Output the kernel did not take waits in the outbox: flush it when writable."""

    def admit(self, conn: Connection, weight: ReaderWeight) -> None:
        """Wait while the worker's credit window is full (TCP then pushes back)."""

    def note_rate_limited(self) -> None:
        """Count a frame the flood limit dropped (metrics)."""


class Inbox:
    """The ReaderLink of a worker's bus thread."""

    def __init__(self, max_inflight: int) -> None:
        self.queue: deque[Queued] = deque()
        self.writers: deque[Connection] = deque()  # connections with output waiting
        self.gate = CreditGate(max_inflight)
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_pending = False
        self.stopping = False
        self.rate_limited = 0  # frames dropped by readers' flood limits (under _tally_lock)
        self._tally_lock = threading.Lock()

    # Any thread (the reader link) ------------------------------------------------

    def submit(self, conn: Connection | None, request: Request) -> None:
        """Queue a request for the hub and wake the bus thread."""
        self.queue.append((conn, request))
        self._wake()

    def opened(self, conn: Connection) -> None:
        self.queue.append((conn, Local.OPENED))
        self._wake()

    def closed(self, conn: Connection) -> None:
        self.queue.append((conn, Local.CLOSED))
        self._wake()

    def want_write(self, conn: Connection) -> None:
        """`conn` has output the kernel did not take: watch it for POLLOUT."""
        self.writers.append(conn)
        self._wake()

    def admit(self, conn: Connection, weight: ReaderWeight) -> None:
        """Wait while the credit window is full for this reader's sender."""
        queue, credit = self.queue, self.gate.credit
        if credit.inflight + len(queue) < credit.window // 2:
            return  # the common case: room even for the heaviest
        self.gate.admit(lambda: len(queue), weight,
                        lambda: conn.closing or self.stopping)

    def note_rate_limited(self) -> None:
        with self._tally_lock:
            self.rate_limited += 1

    def stop(self) -> None:
        self.stopping = True
        self._wake()

    def _wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            os.eventfd_write(self.wake_fd, 1)

    # The bus thread --------------------------------------------------------------

    def consume_wake(self) -> None:
        """Take the wake-up; the caller drains the queue right after.

        The eventfd is read *before* the flag is cleared. Cleared first, a
        producer's write in between would be eaten by this read and leave the
        flag set with nothing to read, so later requests would wait for the next
        heartbeat (a lost wake-up: p99 of 500 ms).
        """
        try:
            os.eventfd_read(self.wake_fd)
        except BlockingIOError:
            pass
        self._wake_pending = False
