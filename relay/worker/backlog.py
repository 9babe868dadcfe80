"""Connections whose output waits for their socket, and connections being closed.

A send the kernel did not take whole leaves the rest in the connection's
outbox (writer.py) and asks the bus thread to watch the socket for POLLOUT;
this is that watch list: flushed when writable, let go when empty. It is
also the closing list: a connection whose end has come (a slow consumer
after its grace, a cut client once its last words are out) is shut down
here. And it is what fan-out pacing measures (pacing.FanoutPacer): how many
members are behind, and which of them made no progress.
"""

from __future__ import annotations

import logging
import time

import zmq

from relay.worker.pacing import FanoutPacer
from relay.worker.writer import Connection
from transports.errors import CUT_CODES, error_body

log = logging.getLogger("chat_relay.worker")


class Backlog:
    def __init__(self, poller: zmq.Poller, max_outbox: int, grace: float) -> None:
        self.poller = poller
        self.max_outbox = max_outbox
        self.grace = grace  # --slow-consumer-grace
        self.by_fd: dict[int, Connection] = {}  # connections waiting for POLLOUT
        self.closing: dict[int, Connection] = {}  # connections to close once flushed
        self.stuck: set[int] = set()  # ids of members behind that made no progress
        self.slow_cuts = 0

    def want(self, conn: Connection, now: float) -> None:
        """`conn` has output waiting: flush what the kernel takes, watch for the rest."""
        if conn.slow:
            self.closing[conn.id] = conn
        if conn.fd in self.by_fd:
            return
        if conn.pending and not conn.flush():
            self.poller.register(conn.fd, zmq.POLLOUT)
            self.by_fd[conn.fd] = conn
            conn.moved_at = now

    def writable(self, fd: int, now: float) -> None:
        conn = self.by_fd.get(fd)
        if conn is None:
            return
        if conn.flush():
            self._unwatch(conn)
        else:
            conn.moved_at = now

    def _unwatch(self, conn: Connection) -> None:
        if self.by_fd.pop(conn.fd, None) is not None:
            self.poller.unregister(conn.fd)
        self.stuck.discard(conn.id)

    def release(self, conn: Connection) -> None:
        """Forget `conn` before its socket closes (fds get reused)."""
        self._unwatch(conn)
        self.closing.pop(conn.id, None)

    def close_soon(self, conn: Connection, now: float) -> None:
        conn.close_at = now
        self.closing[conn.id] = conn

    def next_close(self) -> float:
        if not self.closing:
            return float("inf")
        return min((c.close_at or 0.0) + self.grace for c in self.closing.values())

    def close_due(self, now: float) -> None:
        """Close connections that flushed their last words or ran out of grace."""
        for cid, conn in list(self.closing.items()):
            if conn.pending and now < (conn.close_at or now) + self.grace:
                continue
            if conn.slow:
                self.slow_cuts += 1
                log.info("cut %s (%s): slow consumer", conn.nick or conn.id, conn.addr)
            # Hard (both ways) also wakes the reader thread blocked in recv().
            conn.shutdown(hard=conn.slow or conn.close_reason in CUT_CODES)
            self._unwatch(conn)
            del self.closing[cid]

    def pending(self) -> tuple[int, int]:
        """(outbox bytes behind, connections behind), for metrics."""
        behind = list(self.by_fd.values())
        return sum(c.pending for c in behind), len(behind)

    def shutdown_all(self, conns: list[Connection], grace: float) -> None:
        """SIGTERM: tell everyone, flush what we can within the grace, close."""
        for conn in conns:
            conn.finish(
                error_body("shutting_down", "the relay is shutting down"),
                "shutting_down",
            )
        deadline = time.monotonic() + grace
        pending = [c for c in conns if c.pending and not c.flush()]
        while pending and time.monotonic() < deadline:
            flusher = zmq.Poller()
            for conn in pending:
                flusher.register(conn.fd, zmq.POLLOUT)
            flusher.poll(int((deadline - time.monotonic()) * 1000) + 1)
            pending = [c for c in pending if not c.flush()]
        for conn in conns:
            conn.shutdown()  # FIN after the flushed data; readers see the peers close

    # Pacing --------------------------------------------------------------------------

    def over_marks(self) -> tuple[int, int]:
        """Members held for, with over half / over an eighth of --max-outbox queued."""
        high = low = 0
        if self.by_fd:
            half, eighth = self.max_outbox // 2, self.max_outbox // 8
            stuck = self.stuck
            for conn in self.by_fd.values():
                pending = conn.pending
                if pending > eighth and conn.id not in stuck:
                    low += 1
                    high += pending > half
        return high, low

    def give_up_waiting(self, since: float, last_round: int) -> None:
        """After --max-pause: stop holding fan-out for members that made no
        progress, or that are a minority still far behind the others."""
        half = self.max_outbox // 2
        high = [c for c in self.by_fd.values() if c.pending > half and c.id not in self.stuck]
        minority = FanoutPacer.minority(len(high), last_round)
        for conn in self.by_fd.values():
            if conn.moved_at <= since or (minority and conn.pending > half):
                self.stuck.add(conn.id)

    def pace(self, pacer: FanoutPacer, now: float, last_round: int) -> bool:
        """Whether fan-out pauses now; after --max-pause, stop waiting for the stuck."""
        paused = pacer.paused(*self.over_marks(), now)
        deadline = pacer.stuck_deadline()
        if paused and deadline is not None and now >= deadline:
            self.give_up_waiting(deadline - pacer.max_pause, last_round)
            pacer.since = now
            paused = pacer.paused(*self.over_marks(), now)
        return paused
