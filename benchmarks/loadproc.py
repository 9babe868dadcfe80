"""One load process: many connections in one epoll loop, no threads.

The parent (`runner.py`) starts several of these with the spawn method and
talks to each over a Pipe whose end sits in the same epoll as the sockets,
so control messages never wait behind a blocking call. Phases:

1. connect every assigned receiver and sender (at most `concurrency` at once)
   and report `ready` with connect times;
2. on `go`, send from an absolute schedule while receiving, reporting
   `progress` (counts and the interval's latencies by HDR bucket) twice a second;
3. report `sent` (messages per room) when the schedule is done, and on
   `expect` (totals per room, from all processes) drain until every receiver
   has everything or the drain deadline passes, then report `final`.

Every wait is bounded by `hard_deadline_ns`.

The receive path is what caps the figures on a machine shared with the
relay, so it is kept lean: `select.epoll` with an fd -> Conn dict instead of
`selectors` (no SelectorKey per event), and `recv_into` one preallocated
buffer, because `recv(RECV_SIZE)` allocates RECV_SIZE bytes per call, which
glibc serves with mmap + mremap + munmap and two page faults (~18 µs).
"""

from __future__ import annotations

import errno
import resource
import select
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from benchmarks import engine, histo, payload
from benchmarks.dialects import LineLoadPeer, LoadPeer, NativeLoadPeer, make_peer
from benchmarks.pacing import Schedule
from benchmarks.seqcheck import StreamChecker, Tally

RECV_SIZE = 256 * 1024
PROGRESS_NS = 500_000_000
SLICE_NS = 50_000_000  # the C engine returns this often to let control messages in
TICK_EVENTS = 32  # ready sockets handled between clock reads and send checks
OPENS_PER_POLL = 64  # connections opened between two polls of the connect phase
REFUSED_RETRIES = 50  # times one client is opened again after a too_many_connections
RETRY_WAIT_S = 0.02  # x its refusals so far: how long a refused client waits to try again
# Level-triggered; HUP and ERR are reported unasked and go to the read path,
# where recv() returns the end of stream or the error.
EV_IN = select.EPOLLIN
EV_OUT = select.EPOLLOUT
EV_READABLE = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR


@dataclass(slots=True)
class ProcPlan:
    """What one load process does; plain data so it pickles under spawn."""

    index: int
    host: str
    port: int
    dialect: str
    size: int
    receivers: list[tuple[str, str]]  # (nick, room)
    senders: list[tuple[int, str, str]]  # (sender id, nick, room)
    concurrency: int = 100
    greeting: bool = True
    connect_timeout: float = 30.0
    hard_limit_s: float = 600.0
    engine: str = "python"  # "c": the timed phase runs in benchmarks/engine (already built)
    retry_refused: bool = False  # a join storm: open again what is refused as too many


@dataclass(slots=True)
class Conn:
    sock: socket.socket
    peer: LoadPeer
    sender_id: int = -1
    fd: int = -1  # kept after close so the epoll entry can be found; -1 once closed
    out: bytearray = field(default_factory=bytearray)
    t_start_ns: int = 0
    counter: int = 0
    connected: bool = False


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class SendPhase:
    """What both timed-phase loops (Python and C) do around the sending phase.

    `sent` is reported once, when the schedule is done. The CPU share is
    taken over the sending phase, not the drain after it (idle waiting); a
    process without senders is busy until the others are done, which it
    learns from `expect`. Every method is safe to call more than once.
    """

    def __init__(self, senders: int, report_sent: Callable[[], None], sched: Schedule) -> None:
        self.senders = senders
        self._report_sent = report_sent
        self._sched = sched
        self._cpu0, self._wall0 = cpu_seconds(), time.monotonic_ns()
        self.sent_reported = False
        self._busy: tuple[float, float] | None = None

    def _take_busy(self) -> None:
        if self._busy is None:
            wall = (time.monotonic_ns() - max(self._wall0, self._sched.t0_ns)) / 1e9
            self._busy = (cpu_seconds() - self._cpu0, max(wall, 1e-9))

    def sending_done(self) -> None:
        if not self.sent_reported:
            self.sent_reported = True
            if self.senders:
                self._take_busy()
            self._report_sent()

    def expect_came(self) -> None:
        if not self.senders:
            self._take_busy()

    def finish(self) -> tuple[float, float]:
        """(CPU s, wall s) of the sending phase, reporting `sent` if it never was."""
        self.sending_done()
        self._take_busy()
        assert self._busy is not None
        return self._busy


class LoadProcess:
    def __init__(self, plan: ProcPlan, ctrl: Connection) -> None:
        self.plan = plan
        self.ctrl = ctrl
        self.ctrl_fd = ctrl.fileno()
        self.ep = select.epoll()
        self.ep.register(self.ctrl_fd, EV_IN)
        self.by_fd: dict[int, Conn] = {}
        self.rbuf = bytearray(RECV_SIZE)
        self.rview = memoryview(self.rbuf)
        self.conns: list[Conn] = []
        self.sched: Schedule | None = None  # set for the timed phase
        self.live_senders: list[Conn] = []
        self.sent_per_room: dict[str, int] = {}
        self.receivers: list[Conn] = []
        self.senders: list[Conn] = []
        self.connect_hist = histo.new_histogram()
        self.connect_failures: list[str] = []
        # The join phase on the shared monotonic clock: the first connect and the
        # last welcome (the parent takes the span over every process).
        self.first_open_ns = 0
        self.last_ready_ns = 0
        self.retried = 0  # connections refused as too many, and opened again
        self.hard_deadline_ns = time.monotonic_ns() + int(plan.hard_limit_s * 1e9)
        self.window_from = 0
        self.window_to = 0
        self.window_deliveries = 0
        self.closed_by_peer = 0
        self.engine: engine.Engine | None = None  # during a C timed phase
        self.engine_conns: list[Conn] = []

    # Connection setup -----------------------------------------------------

    def _open(self, peer: LoadPeer, sender_id: int) -> Conn:
        sock = socket.socket(socket.AF_INET6 if ":" in self.plan.host else socket.AF_INET)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = Conn(sock, peer, sender_id, fd=sock.fileno(), t_start_ns=time.monotonic_ns())
        self.first_open_ns = self.first_open_ns or c.t_start_ns
        err = sock.connect_ex((self.plan.host, self.plan.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            name = errno.errorcode.get(err, str(err))
            raise OSError(err, f"connect to {self.plan.host}:{self.plan.port}: {name}")
        self.by_fd[c.fd] = c
        self.ep.register(c.fd, EV_IN if self._start_now(c) else EV_OUT)
        return c

    def _start_now(self, c: Conn) -> bool:
        """Send the opening bytes at once if the connection is already up.

        On loopback the handshake completes inside connect(), and a busy load
        process may otherwise reach its select() only after PROTOCOL.md's
        300 ms of silence, when the relay has rightly taken it for a text
        client; a remote relay is still connecting here and waits for select.
        """
        try:
            c.sock.getpeername()  # ENOTCONN while the handshake is in flight
            c.sock.sendall(c.peer.start())
        except OSError:
            return False
        c.connected = True
        return True

    def connect_all(self) -> None:
        """Open every assigned connection, at most `concurrency` in flight.

        In a join storm (`retry_refused`), a connection the relay refuses as too
        many (its cap on connections still in their handshake says "try
        again") is opened again after the others, as a client would: after
        RETRY_WAIT_S x its refusals (at most 0.5 s), up to REFUSED_RETRIES
        times; `retried` counts them. Other runs count a refusal as a failure.
        """
        plan = self.plan
        todo: list[tuple[LoadPeer, int]] = [
            (make_peer(plan.dialect, nick, room, plan.size, True, plan.greeting), -1)
            for nick, room in plan.receivers
        ] + [
            (make_peer(plan.dialect, nick, room, plan.size, False, plan.greeting), sid)
            for sid, nick, room in plan.senders
        ]
        todo.reverse()
        tries: Counter[str] = Counter()
        later: list[tuple[int, LoadPeer, int]] = []  # refused: (not before, peer, sender id)
        pending: set[int] = set()
        deadline = time.monotonic_ns() + int(plan.connect_timeout * 1e9)
        while (todo or pending or later) and time.monotonic_ns() < deadline:
            if later:
                now = time.monotonic_ns()
                todo[:0] = [(peer, sid) for due, peer, sid in later if due <= now]
                later = [e for e in later if e[0] > now]
            # A few opens between polls: a connection the relay accepted must get
            # its hello before the relay's sniff timeout takes it for a text client.
            for _ in range(OPENS_PER_POLL):
                if not todo or len(pending) >= plan.concurrency:
                    break
                peer, sid = todo.pop()
                try:
                    c = self._open(peer, sid)
                except OSError as exc:
                    self.connect_failures.append(str(exc))
                    continue
                pending.add(id(c))
                self.conns.append(c)
                if c.connected and c.peer.ready:
                    self._ready(c, pending)
            for fd, _mask in self.ep.poll(0 if todo and len(pending) < plan.concurrency
                                          else 0.05):
                if fd not in self.by_fd:  # the control pipe (read after `ready`), or closed
                    continue
                c = self.by_fd[fd]
                if not c.connected:
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        self._fail(c, pending, f"connect: {errno.errorcode.get(err, err)}")
                        continue
                    c.connected = True
                    self.ep.modify(c.fd, EV_IN)
                    c.sock.sendall(c.peer.start())
                    if c.peer.ready:
                        self._ready(c, pending)
                    continue
                self._read(c, time.monotonic_ns())
                if c.peer.error or c.sock.fileno() < 0:
                    peer = c.peer
                    if plan.retry_refused and peer.error == "too_many_connections" \
                            and tries[peer.nick] < REFUSED_RETRIES:
                        tries[peer.nick] += 1
                        self.retried += 1
                        pending.discard(id(c))
                        self._close(c)
                        self.conns.remove(c)
                        wait = min(RETRY_WAIT_S * tries[peer.nick], 0.5)
                        later.append((time.monotonic_ns() + int(wait * 1e9),
                                      make_peer(plan.dialect, peer.nick, peer.room, plan.size,
                                                peer.checking, plan.greeting), c.sender_id))
                        continue
                    self._fail(c, pending, c.peer.error or "closed during handshake")
                elif c.peer.ready and id(c) in pending:
                    self._ready(c, pending)
        late = ("handshake timed out" if plan.greeting
                else "the probe line never came back (a bare-line server that relays nothing?)")
        for c in list(self.conns):
            if id(c) in pending:
                self._fail(c, pending, late)
        self.connect_failures += ["not opened before the connect timeout"] * (len(todo)
                                                                              + len(later))
        self.receivers = [c for c in self.conns if c.peer.checking]
        self.senders = [c for c in self.conns if not c.peer.checking]

    def _ready(self, c: Conn, pending: set[int]) -> None:
        pending.discard(id(c))
        self.last_ready_ns = now = time.monotonic_ns()
        us = max(1, (now - c.t_start_ns) // 1000)
        self.connect_hist.record_value(min(us, histo.HIGHEST_US))

    def _fail(self, c: Conn, pending: set[int], why: str) -> None:
        pending.discard(id(c))
        self.connect_failures.append(why)
        self._close(c)
        if c in self.conns:
            self.conns.remove(c)

    def _close(self, c: Conn) -> None:
        """Forget, unregister and close; unregister first, while the fd is still ours."""
        if c.fd >= 0:
            self.by_fd.pop(c.fd, None)
            try:
                self.ep.unregister(c.fd)
            except OSError:
                pass
            c.fd = -1
        if c.sock.fileno() >= 0:
            c.sock.close()

    # I/O ------------------------------------------------------------------

    def _read(self, c: Conn, now_ns: int) -> None:
        """Read what is buffered (up to RECV_SIZE) and feed it to the peer."""
        try:
            n = c.sock.recv_into(self.rbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(c, f"recv: {exc}")
            return
        if not n:
            self._lost(c, "closed by relay")
            return
        self._feed(c, n, now_ns)

    def _feed(self, c: Conn, n: int, now_ns: int) -> None:
        """Give the peer the `n` bytes just read into `rbuf`; send any reply."""
        peer = c.peer
        before = peer.delivered
        # A copy: peers keep partial frames and lines across calls.
        reply = peer.feed(self.rview[:n].tobytes(), now_ns)
        if self.window_from <= now_ns <= self.window_to:
            self.window_deliveries += peer.delivered - before
        if reply:
            self._write(c, reply)

    def _lost(self, c: Conn, why: str) -> None:
        """The relay closed the connection or it failed: note why, close it."""
        c.peer.error = c.peer.error or why
        self.closed_by_peer += 1
        self._close(c)

    def _write(self, c: Conn, data: bytes) -> None:
        if c.sock.fileno() < 0:
            return
        if c.out:
            c.out += data
            return
        try:
            n = c.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            c.peer.error = f"send: {exc}"
            self._close(c)
            return
        if n < len(data):
            c.out += data[n:]
            self.ep.modify(c.fd, EV_IN | EV_OUT)

    def _flush(self, c: Conn) -> None:
        try:
            n = c.sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            c.peer.error = f"send: {exc}"
            self._close(c)
            return
        del c.out[:n]
        if not c.out:
            self.ep.modify(c.fd, EV_IN)

    def _poll(self, timeout: float) -> Any:
        """One epoll round; returns the control message if one arrived.

        The hottest loop of a run (one pass per ready socket): `_read` is
        inlined here and its rare outcomes left to `_lost`.
        """
        events = self.ep.poll(timeout)
        if not events:
            return None
        msg = None
        by_fd = self.by_fd
        rbuf = self.rbuf
        feed = self._feed
        for k, (fd, mask) in enumerate(events, 1):
            if not k % TICK_EVENTS:
                # Hundreds of ready sockets take tens of ms on a busy machine:
                # keep the senders on schedule.
                if self.sched is not None:
                    self._send_due(time.monotonic_ns())
            c = by_fd.get(fd)
            if c is None:
                if fd == self.ctrl_fd:
                    msg = self.ctrl.recv()
                continue  # else closed earlier in this batch
            if mask & EV_READABLE:
                try:
                    n = c.sock.recv_into(rbuf)
                except (BlockingIOError, InterruptedError):
                    n = -1
                except OSError as exc:
                    self._lost(c, f"recv: {exc}")
                    continue
                if n > 0:
                    # The time it arrived, not when poll returned: a process
                    # preempted mid-batch would date later reads too early.
                    feed(c, n, time.monotonic_ns())
                elif n == 0:
                    self._lost(c, "closed by relay")
                    continue
            if mask & EV_OUT and c.out and c.fd >= 0:
                self._flush(c)
        return msg

    # Load -----------------------------------------------------------------

    def _flush_latencies(self) -> dict[int, int]:
        """The latencies since the last flush, {HDR bucket floor µs: count}.

        Plain counts, not an encoded histogram: encoding costs 5-15 ms, and
        this runs between engine slices, where no socket is read.
        """
        merged: dict[int, int] = {}
        for c in self.receivers:
            for us, n in c.peer.drain_latencies().items():
                merged[us] = merged.get(us, 0) + n
        out = histo.bucket_counts(merged)
        if self.engine is not None:  # already bucket floors
            for us, n in self.engine.drain_latencies().items():
                out[us] = out.get(us, 0) + n
        return out

    def _counts(self) -> dict[str, Any]:
        self._sync_engine()
        delivered = 0
        gaps = 0
        for c in self.receivers:
            delivered += c.peer.delivered
            t = c.peer.tally()
            gaps += t.gaps
        return {"delivered": delivered, "gaps": gaps, "window_deliveries": self.window_deliveries}

    def _send_due(self, now: int) -> None:
        """Send every message the schedule has due at `now`, one write per sender."""
        sched, senders = self.sched, self.live_senders
        ns = len(senders)
        if sched is None or not ns:
            return
        n = sched.take_due(now)
        if not n:
            return
        batch: dict[int, list[bytes]] = {}
        size = self.plan.size
        sent_per_room = self.sent_per_room
        first = sched.next_index - n
        for i in range(first, first + n):
            c = senders[i % ns]
            c.counter += 1
            # The intended send time, not the actual one: a late
            # generator must not hide queueing (coordinated omission).
            text = payload.make(sched.due_ns(i), c.sender_id, c.counter, size)
            batch.setdefault(i % ns, []).append(c.peer.say(text))
            sent_per_room[c.peer.room] = sent_per_room.get(c.peer.room, 0) + 1
        for k, frames in batch.items():
            self._write(senders[k], b"".join(frames))

    def run_load(self, go: dict[str, Any]) -> None:
        if self.plan.engine == "c":
            self.run_load_c(go)
            return
        measure_from = int(go["measure_from_ns"])
        self.window_from, self.window_to = measure_from, int(go["measure_to_ns"])
        for c in self.receivers:
            c.peer.measure_from_ns = measure_from
        self.live_senders = [c for c in self.senders if c.sock.fileno() >= 0]
        self.sched = sched = Schedule(int(go["t0_ns"]), float(go["rate"]), int(go["count"]),
                                      measure_from_ns=measure_from)
        ns = len(self.live_senders)
        phase = SendPhase(ns, lambda: self._report_sent(sched, ns), sched)
        next_progress = time.monotonic_ns() + PROGRESS_NS
        expect: dict[str, int] | None = None
        drain_deadline = 0
        while True:
            now = time.monotonic_ns()
            if now > self.hard_deadline_ns:
                break
            if ns and not sched.done():
                self._send_due(now)
            else:
                phase.sending_done()
            if expect is not None:
                if now > drain_deadline or self._complete(expect):
                    break
            wait = sched.wait_ns(now) if ns else None
            timeout = 0.05 if wait is None else min(0.05, wait / 1e9)
            msg = self._poll(timeout)
            if msg is not None:
                kind, body = msg
                if kind == "expect":
                    expect = body["per_room"]
                    drain_deadline = time.monotonic_ns() + int(body["drain_s"] * 1e9)
                    phase.expect_came()
                elif kind == "stop":
                    break
            if time.monotonic_ns() >= next_progress:
                next_progress += PROGRESS_NS
                self._report_progress(sched, ns)
        busy_cpu, busy_wall = phase.finish()
        self._final(expect or {}, busy_cpu, busy_wall, sched)

    # The timed phase in C ---------------------------------------------------

    def run_load_c(self, go: dict[str, Any]) -> None:
        """`run_load` with the sending and checking done by benchmarks/engine.

        Python hands over the connected sockets and what each peer knows (the
        next seq, a partial frame), then runs the engine in SLICE_NS slices,
        between which it answers control messages and reports progress from
        the engine's counts; at the end the counts go back into the peers, so
        `_final` reports exactly as for the Python path.
        """
        lib, why = engine.load()
        if lib is None:
            raise RuntimeError(f"the C engine is not available: {why}")
        measure_from = int(go["measure_from_ns"])
        self.window_from, self.window_to = measure_from, int(go["measure_to_ns"])
        self.engine_conns = [c for c in self.receivers + self.senders if c.fd >= 0]
        self.engine = eng = engine.Engine(lib, self.plan.dialect, self.plan.size,
                                          [self._engine_conn(c) for c in self.engine_conns])
        # What the peers counted before (handshake frames): the engine's counts add to it.
        self._bases = [(c.peer.delivered, c.peer.corrupt,
                        dict(c.peer.streams) if isinstance(c.peer, LineLoadPeer) else {})
                       for c in self.engine_conns]
        self.sched = sched = Schedule(int(go["t0_ns"]), float(go["rate"]), int(go["count"]))
        live_senders = sum(1 for c in self.engine_conns if not c.peer.checking)
        eng.schedule(sched.t0_ns, sched.rate, sched.count if live_senders else 0, measure_from,
                     self.window_from, self.window_to)
        phase = SendPhase(live_senders, lambda: self._report_sent(sched, live_senders), sched)
        next_progress = time.monotonic_ns() + PROGRESS_NS
        expect: dict[str, int] | None = None
        drain_deadline = 0
        try:
            while True:
                now = time.monotonic_ns()
                if now > self.hard_deadline_ns:
                    break
                complete = eng.run(min(now + SLICE_NS, next_progress, self.hard_deadline_ns))
                self._engine_totals(sched)
                if sched.done() or not live_senders:
                    phase.sending_done()
                if expect is not None and (complete or time.monotonic_ns() > drain_deadline):
                    break
                stop = False
                while self.ctrl.poll(0):
                    kind, body = self.ctrl.recv()
                    if kind == "expect":
                        expect = body["per_room"]
                        eng.expect(expect)
                        drain_deadline = time.monotonic_ns() + int(body["drain_s"] * 1e9)
                        phase.expect_came()
                    elif kind == "stop":
                        stop = True
                if stop:
                    break
                if time.monotonic_ns() >= next_progress:
                    next_progress += PROGRESS_NS
                    self._report_progress(sched, live_senders)
            busy_cpu, busy_wall = phase.finish()
            self._sync_engine()
            self._final(expect or {}, busy_cpu, busy_wall, sched)
        finally:
            self.engine = None  # the sockets stay ours; close_all closes them
            eng.close()

    @staticmethod
    def _engine_conn(c: Conn) -> engine.EngineConn:
        peer = c.peer
        pending = b""
        next_seq = 1
        if isinstance(peer, NativeLoadPeer):
            next_seq = peer.checker.next
            pending = bytes(peer._buf)
        elif isinstance(peer, LineLoadPeer):
            pending = bytes(peer._buf)
        return engine.EngineConn(fd=c.fd, sender=not peer.checking, room=peer.room,
                                 sender_id=c.sender_id, next_seq=next_seq, counter=c.counter,
                                 pending=pending if peer.checking else b"")

    def _engine_totals(self, sched: Schedule) -> None:
        assert self.engine is not None
        t = self.engine.totals()
        sched.next_index, sched.late, sched.max_lag_ns = t.next_index, t.late, t.max_lag_ns
        self.window_deliveries = t.window_deliveries
        rooms = zip(self.engine.rooms, t.sent_per_room, strict=True)
        self.sent_per_room = {room: n for room, n in rooms if n}

    def _report_sent(self, sched: Schedule, live_senders: int) -> None:
        self.ctrl.send(("sent", {"per_room": self.sent_per_room, "late": sched.late,
                                 "max_lag_ms": sched.max_lag_ns / 1e6,
                                 "sent": sched.next_index if live_senders else 0,
                                 "backlog": self._backlog()}))

    def _backlog(self) -> int:
        """Messages the senders still hold, written but not taken by the server's
        socket: its push-back, read when the schedule ends (whole messages: every
        one of a sender's frames has the same length, the payload being padded)."""
        queued: list[tuple[Conn, int]] = []
        if self.engine is not None:
            for i, c in enumerate(self.engine_conns):
                if not c.peer.checking:
                    st = self.engine.conn_stats(i)
                    queued.append((c, st.queued if st.alive else 0))
        else:
            queued = [(c, len(c.out)) for c in self.senders if c.fd >= 0]
        total = 0
        for c, nbytes in queued:
            if nbytes:
                one = len(c.peer.say(payload.make(0, c.sender_id, 1, self.plan.size)))
                total += -(-nbytes // one)  # a message partly written is still held
        return total

    def _report_progress(self, sched: Schedule, live_senders: int) -> None:
        counts = self._counts()
        counts["sent"] = sched.next_index if live_senders else 0
        self.ctrl.send(("progress", {**counts, "latencies": self._flush_latencies()}))

    def _sync_engine(self) -> None:
        """Copy the engine's counts into the peers (the Python path's bookkeeping)."""
        eng = self.engine
        if eng is None:
            return
        closed = 0
        for i, c in enumerate(self.engine_conns):
            st = eng.conn_stats(i)
            peer = c.peer
            if st.error and not peer.error:
                peer.error = st.error
            if not st.alive and c.fd >= 0:
                closed += 1
                self._close(c)
            if not peer.checking:
                c.counter = st.counter
                continue
            base_delivered, base_corrupt, base_streams = self._bases[i]
            peer.delivered = base_delivered + st.delivered
            peer.corrupt = base_corrupt + st.corrupt
            if isinstance(peer, NativeLoadPeer):
                chk = peer.checker
                chk.next = st.next
            else:
                assert isinstance(peer, LineLoadPeer)
                # Tallies only add streams up: one summary stream carries the engine's.
                chk = StreamChecker()
                peer.streams = {**base_streams, b"(engine)": chk}
            chk.unique, chk.duplicates = st.unique, st.duplicates
            chk.reorders, chk.gaps, chk.overflow = st.reorders, st.gaps, st.overflow
        self.closed_by_peer += closed

    def _complete(self, expect: dict[str, int]) -> bool:
        for c in self.receivers:
            if c.sock.fileno() >= 0 and c.peer.unique() < expect.get(c.peer.room, 0):
                return False
        return True

    def _final(self, expect: dict[str, int], cpu: float, wall: float, sched: Schedule) -> None:
        total = Tally()
        expected = 0
        lost = 0
        errors: dict[str, int] = {}
        for c in self.receivers:
            t = c.peer.tally()
            total.merge(t)
            e = expect.get(c.peer.room, 0)
            expected += e
            lost += c.peer.checker.lost(e) if hasattr(c.peer, "checker") else max(
                0, e - c.peer.unique())
            if c.peer.error:
                errors[c.peer.error] = errors.get(c.peer.error, 0) + 1
        for c in self.senders:
            if c.peer.error:
                errors["sender: " + c.peer.error] = errors.get("sender: " + c.peer.error, 0) + 1
        # Receivers the server cut (an error, or a close, before the end) and, per
        # room, the most any receiver of it got: what none got, the server shed.
        cut = sum(1 for c in self.receivers if c.peer.error or c.fd < 0)
        best: dict[str, int] = {}
        for c in self.receivers:
            best[c.peer.room] = max(best.get(c.peer.room, 0), c.peer.unique())
        self.ctrl.send(("final", {
            "delivered": total.delivered, "unique": total.unique, "expected": expected,
            "lost": lost, "duplicates": total.duplicates, "reorders": total.reorders,
            "corrupt": total.corrupt, "window_deliveries": self.window_deliveries,
            "cpu_s": cpu, "wall_s": wall, "busy": cpu / wall if wall > 0 else 0.0,
            "errors": errors, "latencies": self._flush_latencies(), "cut": cut,
            "room_best": best,
            "late": sched.late, "max_lag_ms": sched.max_lag_ns / 1e6,
            "lags": histo.bucket_counts(self.engine.drain_lags() if self.engine is not None
                                        else sched.drain_lags()),
        }))

    def close_all(self) -> None:
        for c in self.conns:
            self._close(c)
        self.ep.close()


def hold_idle(lp: LoadProcess) -> None:
    """--idle: keep the connections open until the parent says stop (bounded)."""
    while time.monotonic_ns() < lp.hard_deadline_ns:
        msg = lp._poll(0.2)
        if msg is not None and msg[0] == "stop":
            return


def main(plan: ProcPlan, ctrl: Connection) -> None:
    """Entry point of a spawned load process."""
    lp = LoadProcess(plan, ctrl)
    try:
        t0 = time.monotonic()
        lp.connect_all()
        ctrl.send(("ready", {
            "connected": len(lp.conns), "failures": lp.connect_failures[:20],
            "failed": len(lp.connect_failures),
            "failure_reasons": dict(Counter(lp.connect_failures)),
            "connect_s": time.monotonic() - t0,
            "first_open_ns": lp.first_open_ns, "last_ready_ns": lp.last_ready_ns,
            "retried": lp.retried,
            "connect_hist": histo.encode(lp.connect_hist),
        }))
        while time.monotonic_ns() < lp.hard_deadline_ns:
            msg = lp._poll(0.2)  # keep reading (presence, joins) while others connect
            if msg is None:
                continue
            kind, body = msg
            if kind == "go":
                lp.run_load(body)
                break
            if kind == "idle":
                hold_idle(lp)
                break
            if kind == "stop":
                break
    finally:
        lp.close_all()
        ctrl.close()
