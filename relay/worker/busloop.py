"""A worker's bus thread: the only owner of the worker's zmq socket.

It does three jobs in one poll loop, so none of them needs a lock on zmq:
- upstream: drains requests queued by client threads (a deque plus an
  eventfd wake-up) and sends them to the hub as ONE bus message per wake;
- downstream: receives every pending bus message and fans each room batch
  out to local members, encoding it once per (dialect, variant), then one
  non-blocking send per member;
- flushes outboxes whose sockets became writable, and closes connections
  whose end has come (slow consumers after their grace, finished ones).

Subscriptions follow local membership: a room's topic is subscribed when the
first local connection asks to be in it, before its request goes upstream
(XSUB keeps that order), and unsubscribed when the last one leaves.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import zmq

from relay import curve
from relay.bus import (
    ANNOUNCE,
    REQUEST,
    GapCounter,
    log_contained,
    pack,
    pack_batch,
    room_topic,
    topic_room,
    tune,
    unpack,
    worker_topic,
)
from relay.config import Settings
from relay.connection import Connection
from relay.overload import CreditWindow, FanoutPacer, ReaderWeight
from relay.rounds import SendRounds
from transports.base import ServerCodec
from transports.errors import CUT_CODES
from transports.ircv3_tags import set_hub_epoch

if TYPE_CHECKING:
    from relay.metrics import WorkerMetrics

log = logging.getLogger("chat_relay.worker")


def _joined(pending: bytes | list[bytes]) -> bytes:
    return pending if isinstance(pending, bytes) else b"".join(pending)

HEARTBEAT = 0.5
FILL_WAIT = 2.0  # seconds a room's live traffic may wait behind a fill from history
# Errors after which we close the client.


class WorkerBus:
    def __init__(self, ctx: zmq.Context[Any], worker_id: str, hub: str, settings: Settings) -> None:
        self.ctx = ctx
        self.id = worker_id
        self.hub = hub
        self.settings = settings
        self.my_topic = worker_topic(worker_id)
        self.conns: dict[int, Connection] = {}
        self.rooms: dict[str, dict[int, Connection]] = {}  # confirmed local members
        self.subs: dict[str, int] = {}  # room -> local connections holding a subscription
        self._fresh: set[str] = set()  # subscribed rooms not yet confirmed by a `joined`
        self._filling: set[str] = set()  # rooms with a fill request on its way
        # Rooms whose live batches wait behind a fill: (give-up time, batches).
        self._held: dict[str, tuple[float, list[list[list[Any]]]]] = {}
        self.room_seq: dict[str, int] = {}  # last msg seq seen per room (for a hub resync)
        self._queue: deque[tuple[Connection | None, dict[str, Any]]] = deque()
        self._writers: deque[Connection] = deque()
        self._by_fd: dict[int, Connection] = {}  # connections waiting for POLLOUT
        # Bytes due per client this drain: one chunk, or a list once there are more.
        self._out: dict[Connection, bytes | list[bytes]] = {}
        self._after_flush: list[threading.Event] = []
        self._rounds = SendRounds(settings.max_linger)
        # Overload (relay/overload.py): the credit window readers wait on, and
        # the pacing of fan-out to what members read.
        self.credit = CreditWindow(settings.max_inflight)
        self._credit_cv = threading.Condition()
        self._credit_waiters = 0
        self.pushed_back = 0  # reader waits for credit (under _credit_cv)
        self._pacer = FanoutPacer(settings.max_pause)
        self._round_budget = max(4096, settings.max_outbox // 4)  # bytes a member gets per round
        self._round_bytes = 0  # of one member's share held in _out now (at most)
        self._last_round = 0  # members the last send round wrote to
        self._stuck: set[int] = set()  # ids of members behind that made no progress
        self._bus_polled = True
        # Room batches (their tails) waiting for the next round: a hub batch can
        # hold thousands of messages, more than one round may hand a member.
        self._carry: deque[tuple[str, list[list[Any]]]] = deque()
        self._closing: dict[int, Connection] = {}  # connections to close once flushed
        self._watched: set[int] = set()
        self._poller = zmq.Poller()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_pending = False
        self.ready = threading.Event()
        self.stopping = False
        self.stopped = threading.Event()
        self.hub_epoch: int | None = None
        self.gaps = GapCounter()
        self._up_seq = 0
        self._seen_failures: set[tuple[str, str]] = set()  # for log_contained
        self.contained = 0  # requests and items dropped because handling them raised
        self._epoch = time.time_ns() // 1_000_000
        self.thread = threading.Thread(target=self._run, name="bus", daemon=True)
        # Counters for logs and metrics (plain ints: the metrics heartbeat reads them).
        self.delivered = 0
        self.slow_cuts = 0
        self.says = 0
        self.rate_limited = 0  # bumped by client threads, under _tally_lock
        self._tally_lock = threading.Lock()
        self.dialects: Counter[str] = Counter()  # open connections by dialect
        self.opened: Counter[str] = Counter()
        self.metrics: WorkerMetrics | None = None
        # Operator IP bans from the hub (ip -> until, wall-clock ms, 0 = no expiry).
        # Replaced whole, never mutated, so client threads read it without a lock.
        self.banned_ips: dict[str, int] = {}
        # Addresses blocked after failed passwords (auth_key -> until, wall-clock ms),
        # from the hub's AuthGuard; replaced whole like banned_ips.
        self.auth_blocks: dict[str, int] = {}
        if settings.metrics:
            from relay.metrics import WorkerMetrics

            self.metrics = WorkerMetrics(worker_id)

    # Called from any thread ----------------------------------------------------

    def submit(self, conn: Connection | None, req: dict[str, Any]) -> None:
        """Queue a request for the hub (or a local op) and wake the bus thread."""
        self._queue.append((conn, req))
        self._wake()

    def admit(self, conn: Connection, weight: ReaderWeight) -> None:
        """A reader calls this before it reads: it waits while the credit window
        has no room for what its sender sent recently (TCP then pushes back)."""
        credit = self.credit
        queue = self._queue
        if credit.inflight + len(queue) < credit.window // 2:
            return  # the common case: room even for the heaviest, no clock read
        need = weight.value(time.monotonic())
        if not credit.must_wait(len(queue), need):
            return
        with self._credit_cv:
            self.pushed_back += 1
            self._credit_waiters += 1
            try:
                while credit.must_wait(len(queue), need) and not conn.closing \
                        and not self.stopping:
                    self._credit_cv.wait(0.25)
            finally:
                self._credit_waiters -= 1

    def note_rate_limited(self) -> None:
        with self._tally_lock:
            self.rate_limited += 1

    def backlog(self) -> tuple[int, int, int]:
        """(requests queued, outbox bytes behind, connections behind), for metrics."""
        behind = list(self._by_fd.values())
        return len(self._queue), sum(c.pending for c in behind), len(behind)

    def want_write(self, conn: Connection) -> None:
        self._writers.append(conn)
        self._wake()

    def _wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            os.eventfd_write(self._wake_fd, 1)

    def _consume_wake(self) -> None:
        """Take the wake-up; the caller drains the queue right after.

        The eventfd is read *before* the flag is cleared. Cleared first, a
        producer's write in between would be eaten by this read and leave the
        flag set with nothing to read, so later requests would wait for the next
        heartbeat (a lost wake-up: p99 of 500 ms).
        """
        try:
            os.eventfd_read(self._wake_fd)
        except BlockingIOError:
            pass
        self._wake_pending = False

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping = True
        self._wake()

    # The loop ------------------------------------------------------------------

    def _run(self) -> None:
        sock: zmq.Socket[bytes] = self.ctx.socket(zmq.XSUB)
        tune(sock, self.settings.bus_hwm)
        if curve.is_tcp(self.hub):  # across hosts: CURVE, and say why a handshake fails
            curve.make_client(sock, self.settings.keys)
            curve.watch_handshakes(sock, "node")
        sock.connect(self.hub)
        self.sock = sock
        sock.send(b"\x01" + self.my_topic)
        sock.send(b"\x01" + ANNOUNCE)
        poller = self._poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_fd, zmq.POLLIN)
        watched = self._watched
        next_beat = 0.0
        try:
            while True:
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + HEARTBEAT
                    beat: list[dict[str, Any]] = [{"op": "hb", "hello": not self.ready.is_set()}]
                    if self.credit.overdue():  # a receipt may have been lost: ask again
                        beat.append({"op": "credit", "n": self.credit.ask()})
                    self._send_up(beat)
                    if self.metrics is not None:
                        self.metrics.update(self)
                    if self._held:
                        self._release_stale_holds()
                due = self._rounds.due
                if due is not None and now >= due:
                    self._flush_out()
                    due = None
                timeout = max(0.0, min(next_beat, self._next_close(), due or next_beat,
                                       self._pacer.stuck_deadline() or next_beat) - now)
                carried = bool(self._carry) and self._bus_polled
                if carried:
                    timeout = 0.0  # the next round's share is ready
                events = poller.poll(int(timeout * 1000) + 1)
                ev = dict(events)
                if self._wake_fd in ev:
                    self._consume_wake()
                if sock in ev or carried:
                    self._drain_bus(sock)
                for fd, mask in events:
                    if isinstance(fd, int) and fd != self._wake_fd and mask & zmq.POLLOUT:
                        conn = self._by_fd.get(fd)
                        if conn is None:
                            continue
                        if conn.flush():
                            poller.unregister(fd)
                            watched.discard(fd)
                            del self._by_fd[fd]
                            self._stuck.discard(conn.id)
                        else:
                            conn.moved_at = now
                self._drain_queue()
                while self._writers:
                    conn = self._writers.popleft()
                    if conn.id not in self.conns:
                        continue  # already released; its fd may belong to someone else now
                    if conn.slow:
                        self._closing[conn.id] = conn
                    if conn.fd in watched:
                        continue
                    if conn.pending and not conn.flush():
                        poller.register(conn.fd, zmq.POLLOUT)
                        watched.add(conn.fd)
                        self._by_fd[conn.fd] = conn
                        conn.moved_at = now
                self._close_due(poller, watched)
                self._pace(poller, sock)
                if self.stopping:
                    self._shutdown_clients(poller)
                    break
        except Exception:
            # Only a broken invariant of this process gets here: a client's
            # request or a bus item that raises is contained where it is
            # handled (_send_up, _drain_queue, _on_bus_message). A worker
            # without its bus thread would accept clients it cannot serve:
            # exit, and let the supervisor start a fresh one.
            log.exception("bus thread crashed; exiting so the supervisor replaces this worker")
            logging.shutdown()
            os._exit(70)
        finally:
            sock.close(linger=0)
            self.stopped.set()

    # Upstream --------------------------------------------------------------------

    def _send_up(self, batch: list[dict[str, Any]]) -> None:
        """One bus message for the batch; a request that cannot be packed is
        dropped with an error to its sender, never raised (bus.pack_batch)."""
        body = pack_batch(batch, self._refuse_up, limit_nesting=True)
        if body is None:
            return
        self._up_seq += 1
        self.sock.send_multipart(
            [REQUEST, pack([self.id, self._epoch, self._up_seq]), body], copy=False
        )

    def _refuse_up(self, req: Any, exc: Exception) -> None:
        op = req.get("op") if isinstance(req, dict) else None
        conn = self.conns.get(req.get("c", -1)) if isinstance(req, dict) else None
        self._drop(conn, str(op), exc)

    def _drop(self, conn: Connection | None, what: str, exc: Exception) -> None:
        """A request or reply whose handling raised: one log line, an error to
        the client it was for (charged to its error budget), nothing else."""
        self.contained += 1
        who = f"connection {conn.id} ({conn.addr})" if conn is not None else "the worker"
        log_contained(log, self._seen_failures, f"{what} for {who}", exc)
        if conn is None or conn.closing:
            return
        error = conn.codec.encode({
            "t": "error", "code": "bad_field", "ref": what,
            "text": f"the relay could not handle this {what} ({type(exc).__name__}); "
                    "it was dropped"})
        pending = self._out.pop(conn, None)  # what was due before it goes first
        conn.send(_joined(pending) + error if pending else error)
        self._charge_error(conn)

    def _charge_error(self, conn: Connection) -> None:
        """An error went to `conn`: past its budget, it is closed (too_many_errors)."""
        if conn.errors.charge() or conn.closing:
            return
        log.info("cut %s (%s): too many errors", conn.nick or conn.id, conn.addr)
        self._emit(conn, conn.codec.encode(conn.errors.error()))
        self._cut(conn, "too_many_errors")

    def _drain_queue(self) -> None:
        batch: list[dict[str, Any]] = []
        queue = self._queue
        while queue:
            conn, req = queue.popleft()
            try:
                up = self._take_request(conn, req)
            except Exception as exc:
                self._drop(conn, str(req.get("op")), exc)
                continue
            if up is not None:
                batch.append(up)
        if batch:
            receipt = self.credit.add(len(batch))
            if receipt is not None:
                batch.append({"op": "credit", "n": receipt})
            self._send_up(batch)

    def _take_request(self, conn: Connection | None, req: dict[str, Any]
                      ) -> dict[str, Any] | None:
        """Local bookkeeping for one queued request; returns what goes to the hub."""
        op = req["op"]
        if conn is None:
            return req
        if op == "_open":
            self.conns[conn.id] = conn
            self.dialects[conn.codec.name] += 1
            self.opened[conn.codec.name] += 1
            return None
        if op == "_close":
            self.dialects[conn.codec.name] -= 1
            self._forget(conn)
            self._release(conn)
            return {"op": "gone", "c": conn.id}
        if op == "hello":
            for room in list(req.get("rooms", ())) + list(req.get("resume") or ()):
                self._subscribe(conn, room)
        elif op == "join":
            self._subscribe(conn, req["room"])
        elif op == "say":
            self.says += 1
        req["c"] = conn.id
        return req

    def _pace(self, poller: zmq.Poller, sock: zmq.Socket[bytes]) -> None:
        """Pull room traffic off the bus only while members keep up (FanoutPacer).

        While fan-out waits, the traffic waits upstream, the credit window
        fills, and the readers of the heaviest senders stop reading.
        """
        now = time.monotonic()
        pacer = self._pacer
        paused = pacer.paused(*self._over_marks(), now)
        deadline = pacer.stuck_deadline()
        if paused and deadline is not None and now >= deadline:
            self._give_up_waiting(deadline - pacer.max_pause)
            pacer.since = now
            paused = pacer.paused(*self._over_marks(), now)
        if paused == self._bus_polled:
            if paused:
                poller.unregister(sock)
            else:
                poller.register(sock, zmq.POLLIN)
            self._bus_polled = not paused

    def _over_marks(self) -> tuple[int, int]:
        """Members held for, with over half / over an eighth of --max-outbox queued."""
        high = low = 0
        if self._by_fd:
            half, eighth = self.settings.max_outbox // 2, self.settings.max_outbox // 8
            stuck = self._stuck
            for conn in self._by_fd.values():
                pending = conn.pending
                if pending > eighth and conn.id not in stuck:
                    low += 1
                    high += pending > half
        return high, low

    def _give_up_waiting(self, since: float) -> None:
        """After --max-pause: stop holding fan-out for members that made no
        progress, or that are a minority still far behind the others."""
        half = self.settings.max_outbox // 2
        high = [c for c in self._by_fd.values() if c.pending > half and c.id not in self._stuck]
        minority = FanoutPacer.minority(len(high), self._last_round)
        for conn in self._by_fd.values():
            if conn.moved_at <= since or (minority and conn.pending > half):
                self._stuck.add(conn.id)

    def _subscribe(self, conn: Connection, room: str) -> None:
        if room in conn.sub_rooms:
            return
        conn.sub_rooms.add(room)
        count = self.subs.get(room, 0)
        if count == 0:
            self.sock.send(b"\x01" + room_topic(room))
            self._fresh.add(room)
        self.subs[room] = count + 1

    def _unsubscribe(self, conn: Connection, room: str) -> None:
        if room not in conn.sub_rooms:
            return
        conn.sub_rooms.discard(room)
        count = self.subs.get(room, 0) - 1
        if count <= 0:
            self.subs.pop(room, None)
            self.sock.send(b"\x00" + room_topic(room))
            self.gaps.forget(room_topic(room))
            self._fresh.discard(room)
            self._filling.discard(room)
            self._held.pop(room, None)
            self.room_seq.pop(room, None)
        else:
            self.subs[room] = count

    def _forget(self, conn: Connection) -> None:
        self.conns.pop(conn.id, None)
        self._leave_all(conn)

    def _leave_all(self, conn: Connection) -> None:
        """Take `conn` out of every room's fan-out and drop its subscriptions."""
        for room in list(conn.rooms):
            members = self.rooms.get(room)
            if members is not None:
                members.pop(conn.id, None)
                if not members:
                    del self.rooms[room]
        conn.rooms.clear()
        for room in list(conn.sub_rooms):
            self._unsubscribe(conn, room)

    def _release(self, conn: Connection) -> None:
        """Close the socket here, after the poller let go of its fd (fds get reused)."""
        if conn.fd in self._watched:
            self._poller.unregister(conn.fd)
            self._watched.discard(conn.fd)
        self._by_fd.pop(conn.fd, None)
        self._stuck.discard(conn.id)
        self._closing.pop(conn.id, None)
        self._out.pop(conn, None)  # output held for a linger has nowhere to go now
        conn.sock.close()

    # Downstream ------------------------------------------------------------------

    def _emit(self, conn: Connection, data: bytes) -> None:
        """Queue bytes for `conn` until the end of this drain (one send per client)."""
        if data:
            pending = self._out.get(conn)
            if pending is None:
                self._out[conn] = data
            elif isinstance(pending, list):
                pending.append(data)
            else:
                self._out[conn] = [pending, data]

    def _flush_full_or_soon(self) -> None:
        """A round that reached its byte budget goes at once (it cannot grow)."""
        if self._round_bytes >= self._round_budget:
            self._flush_out()
        else:
            self._flush_soon()

    def _flush_soon(self) -> None:
        """Send what this drain produced now, or hold it while the worker is busy
        (relay/rounds.py). A reader waiting on a handshake or a bye never waits."""
        if not self._rounds.hold(time.monotonic(), urgent=bool(self._after_flush)):
            self._flush_out()

    def _flush_out(self) -> None:
        """One send round: every client gets its share of the held output in one send."""
        out, self._out = self._out, {}
        self._round_bytes = 0
        t0 = time.monotonic()
        for conn, pending in out.items():
            conn.send(_joined(pending))
        if out:
            self._last_round = len(out)
            self._rounds.sent(t0, time.monotonic())
        else:
            self._rounds.due = None
        # Readers waiting on a handshake or a bye barrier go on only once what
        # came before it is on its way (an error about a later frame must not overtake a welcome).
        events, self._after_flush = self._after_flush, []
        for event in events:
            event.set()

    def _drain_bus(self, sock: zmq.Socket[bytes]) -> None:
        """Handle every pending bus message, then send each client its share at once."""
        try:
            self._drain_bus_messages(sock)
        finally:
            self._flush_full_or_soon()

    def _drain_bus_messages(self, sock: zmq.Socket[bytes]) -> None:
        """Take bus messages until none is left or a round's byte budget is used:
        a worker that is behind must not hand its members its whole backlog at once."""
        budget = self._round_budget
        for _ in range(10000):
            carry = self._carry
            while carry and self._round_bytes < budget:
                room, items = carry.popleft()
                self._fan_out_some(room, items)
            if carry or self._round_bytes >= budget:
                return
            try:
                topic, header, body = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue
            try:
                self._on_bus_message(topic, header, body)
            except Exception as exc:  # a bus message we cannot read costs itself only
                self._drop(None, f"bus message on {topic[:40]!r}", exc)

    def _on_bus_message(self, topic: bytes, header: bytes, body: bytes) -> None:
        """One bus message; a reply that raises costs its own client only."""
        origin, epoch, seq = unpack(header)
        kind = topic[:1]
        if kind == b"r":
            room = topic_room(topic)
            if room not in self.subs:
                return  # still in flight when we left the room: not ours, not a gap
            # Until a `joined` proves our subscription is in place, messages
            # may be stale ones from an earlier subscription: no baseline yet.
            fresh = room in self._fresh
        else:
            fresh = False
        missed = 0 if fresh else self.gaps.check(topic, origin, epoch, seq)
        if missed:
            log.warning("bus gap on %r: %d message(s) from %s lost", topic, missed, origin)
        if kind == b"r":
            self._room_batch(topic_room(topic), unpack(body))
        elif kind == b"w":
            for conn_id, reply in unpack(body):
                try:
                    self._reply(conn_id, reply)
                except Exception as exc:
                    what = reply.get("t") if isinstance(reply, dict) else "reply"
                    self._drop(self.conns.get(conn_id), f"{what} reply", exc)
        elif topic == ANNOUNCE:
            for item in unpack(body):
                self._announce(item, origin, epoch)

    def _announce(self, item: dict[str, Any], origin: str, bus_epoch: int) -> None:
        if item.get("t") == "_bans":
            self._take_bans(item)
            return
        if item.get("t") == "_block":
            now = time.time_ns() // 1_000_000
            blocks = {k: u for k, u in self.auth_blocks.items() if u > now}
            blocks[str(item.get("key"))] = int(item.get("until") or 0)
            self.auth_blocks = blocks
            return
        self._check_tails(item.get("seqs") or {}, origin, bus_epoch)
        epoch = item.get("epoch")
        if self.hub_epoch is not None and epoch != self.hub_epoch:
            log.warning("hub restarted (epoch %s -> %s)", self.hub_epoch, epoch)
        self.hub_epoch = epoch
        if isinstance(epoch, int):
            set_hub_epoch(epoch)  # IRC msgids name the hub's epoch

    def _take_bans(self, body: dict[str, Any]) -> None:
        self.banned_ips = dict(body.get("ips") or {})
        self.auth_blocks = dict(body.get("blocks") or {})

    def _check_tails(self, seqs: dict[bytes, list[Any]], origin: str, epoch: int) -> None:
        """Count bus messages that never came, and ask the hub to resend a room's."""
        fills = []
        for topic, (bus_seq, msg_seq) in seqs.items():
            if topic == self.my_topic:
                mine = True
            elif topic[:1] == b"r":
                room = topic_room(topic)
                if room not in self.subs or room in self._fresh:
                    continue
                mine = False
            else:
                continue
            missed = self.gaps.catch_up(topic, origin, epoch, bus_seq)
            if missed:
                log.warning("bus gap on %r: the last %d message(s) from %s were dropped",
                            topic, missed, origin)
            if mine or msg_seq is None:
                continue
            last = self.room_seq.get(room)
            if last is not None and msg_seq > last and room in self.rooms \
                    and room not in self._filling:
                self._filling.add(room)
                fills.append({"op": "fill", "room": room, "after": last})
        if fills:
            self._send_up(fills)

    def _room_batch(self, room: str, items: list[list[Any]]) -> None:
        """A room batch off the bus: deliver it, or hold it behind a gap being filled.

        A batch whose first msg skips seqs (the bus dropped some, or a restarted
        hub published before our subscription was back) is held, the hub is
        asked for the missing messages from history, and the fill is delivered
        first, so members still see every seq in order. A hold lasts at most
        FILL_WAIT; then what is held goes out with the gap in it.
        """
        held = self._held.get(room)
        if held is not None:
            held[1].append(items)
            return
        last = self.room_seq.get(room)
        first = next((i[0]["seq"] for i in items if i[0].get("t") == "msg"), None)
        if (last is not None and first is not None and first > last + 1
                and room in self.rooms and room not in self._filling):
            log.warning("%s jumped from seq %d to %d on the bus; filling from history",
                        room, last, first)
            self._held[room] = (time.monotonic() + FILL_WAIT, [items])
            self._filling.add(room)
            self._send_up([{"op": "fill", "room": room, "after": last}])
            return
        self._fan_out(room, items)

    def _fill(self, body: dict[str, Any]) -> None:
        """Messages the bus dropped, resent from history: deliver only what is newer
        than what members already have (so nothing is ever out of order), then
        whatever was held behind the gap."""
        room = str(body.get("room"))
        self._filling.discard(room)
        last = self.room_seq.get(room, 0)
        missing = [[m, None, None, None] for m in body.get("messages", []) if m["seq"] > last]
        if missing and room in self.rooms:
            log.warning("refilled %d message(s) of %s the bus dropped", len(missing), room)
            self._fan_out(room, missing)
        self._release_held(room)

    def _release_held(self, room: str) -> None:
        held = self._held.pop(room, None)
        if held is None:
            return
        for items in held[1]:
            last = self.room_seq.get(room, 0)
            # The fill may already have delivered the first messages held here.
            fresh = [i for i in items if i[0].get("t") != "msg" or i[0]["seq"] > last]
            if fresh:
                self._fan_out(room, fresh)

    def _release_stale_holds(self) -> None:
        """A fill that never came (the hub died again) must not stall a room."""
        now = time.monotonic()
        for room, (deadline, _) in list(self._held.items()):
            if now >= deadline:
                log.warning("no fill for %s within %.1f s; delivering with the gap", room,
                            FILL_WAIT)
                self._filling.discard(room)
                self._release_held(room)
                self._flush_out()

    def _reply(self, conn_id: int | None, body: dict[str, Any]) -> None:
        t = body.get("t")
        if conn_id is None:
            if t == "_ready":
                self.hub_epoch = body["epoch"]
                set_hub_epoch(int(body["epoch"]))  # IRC msgids name the hub's epoch
                self.ready.set()
            elif t == "_resync":
                self._resync()
            elif t == "_fill":
                self._fill(body)
            elif t == "_bans":
                self._take_bans(body)
            elif t == "_credit":
                self._take_credit(int(body.get("n") or 0))
            return
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        if t == "_bye":
            self._after_flush.append(conn.bye_done)
            return
        if t == "joined":
            room = body["room"]
            if room in self._fresh:
                self._fresh.discard(room)
                self.gaps.forget(room_topic(room))  # counting starts after this point
            conn.rooms.add(room)
            self.rooms.setdefault(room, {})[conn.id] = conn
            self.room_seq.setdefault(room, body["seq"])
        elif t == "parted":
            room = body["room"]
            conn.rooms.discard(room)
            members = self.rooms.get(room)
            if members is not None:
                members.pop(conn.id, None)
                if not members:
                    del self.rooms[room]
            self._unsubscribe(conn, room)
        elif t == "welcome":
            conn.ready = True
            conn.nick = body["nick"]
            self._after_flush.append(conn.hello_done)
            # `max_text` (extension): this worker's limit, so the web page can
            # refuse an over-long line before sending it.
            body = {**body, "max_text": self.settings.max_text}
        elif t == "renamed":
            conn.nick = body["nick"]
        elif t == "error" and body.get("code") == "too_many_rooms":
            room = body.get("room")
            if isinstance(room, str) and room not in conn.rooms:
                self._unsubscribe(conn, room)  # the join was refused: no fan-out for it
        elif t == "error" and body.get("ref") == "hello" and not conn.ready:
            for room in list(conn.sub_rooms):
                self._unsubscribe(conn, room)
            self._after_flush.append(conn.hello_done)
        if t != "error":
            self._emit(conn, conn.codec.encode(body))
            return
        # A reader's own error (echoed through the hub to keep its place in
        # line) was charged to the error budget when it was made.
        charged = body.pop("_charged", False)
        self._emit(conn, conn.codec.encode(body))
        if body.get("code") in CUT_CODES:
            self._cut(conn, str(body["code"]))
        elif not charged:
            self._charge_error(conn)

    def _take_credit(self, receipt: int) -> None:
        """The hub's receipt: our fan-out of everything before it is done."""
        if self.credit.receipt(receipt) and self._credit_waiters:
            with self._credit_cv:
                self._credit_cv.notify_all()

    def _cut(self, conn: Connection, reason: str) -> None:
        """An operator removed this client (the hub forgot it already): send what is
        due with the error last, take no more output, and close once it is out."""
        pending = self._out.pop(conn, None)
        if pending:
            conn.send(_joined(pending))
        conn.finish(None, reason)
        conn.close_at = time.monotonic()
        self._closing[conn.id] = conn
        self._leave_all(conn)
        self._after_flush.append(conn.hello_done)  # a reader waiting on its hello goes on

    def _resync(self) -> None:
        """The hub forgot us (it restarted): tell it who is here and in which rooms."""
        clients = [
            [c.id, c.nick, {room: self.room_seq.get(room, 0) for room in c.rooms}]
            for c in self.conns.values()
            if c.ready and c.nick
        ]
        log.warning("hub asked for a resync; re-announcing %d client(s)", len(clients))
        self._send_up([{"op": "sync", "clients": clients}, {"op": "hb"}])

    def _fan_out(self, room: str, items: list[list[Any]]) -> None:
        """Deliver one room batch, or queue it behind the tail of an earlier one."""
        if self._carry:
            self._carry.append((room, items))
        else:
            self._fan_out_some(room, items)

    def _fan_out_some(self, room: str, items: list[list[Any]]) -> None:
        """Deliver what of a room batch fits this round's byte budget; carry the rest.

        Sizes are guessed from the texts (one len() per message, not per member).
        """
        left = self._round_budget - self._round_bytes
        size = 0
        for n, item in enumerate(items):
            size += len(item[0].get("text") or "") + 64
            if size > left and n:
                self._carry.appendleft((room, items[n:]))
                items = items[:n]
                break
        self._deliver(room, items)

    def _deliver(self, room: str, items: list[list[Any]]) -> None:
        """Deliver room items: encode once per (dialect, variant), send once per member."""
        for body, _w, _c, _id in items:
            if body.get("t") == "msg":
                self.room_seq[room] = body["seq"]
        members = self.rooms.get(room)
        if not members:
            return
        authored: dict[int, list[int]] = {}
        for idx, item in enumerate(items):
            if item[1] == self.id and item[2] is not None:
                authored.setdefault(item[2], []).append(idx)
            elif type(item[1]) is list:  # a presence_batch: each author sees it its own way
                for worker, conn_id in item[1]:
                    if worker == self.id:
                        own = authored.setdefault(conn_id, [])
                        if not own or own[-1] != idx:  # a rename after a join: once
                            own.append(idx)
        cache: dict[tuple[type[ServerCodec], Hashable], tuple[list[bytes], bytes]] = {}
        out = self._out
        # The per-member loop is the relay's hottest code: one dict lookup for
        # the encoding, one for the outgoing bytes, nothing else in the common case.
        for conn in members.values():
            key = conn.fan_key
            if key is None:
                codec = conn.codec
                key = (type(codec), codec.fanout_key(room))
                if codec.fixed_fanout_key:
                    conn.fan_key = key
            encoded = cache.get(key)
            if encoded is None:
                try:
                    chunks = [key[0].encode_fanout(item[0], key[1]) for item in items]
                except Exception:
                    chunks = self._encode_each(key, items)
                encoded = cache[key] = (chunks, b"".join(chunks))
            if authored and conn.id in authored:
                chunks = list(encoded[0])
                for idx in authored[conn.id]:
                    try:
                        chunks[idx] = conn.codec.encode_own(items[idx][0], items[idx][3])
                    except Exception as exc:  # the author sees it as everyone does
                        self._drop(None, f"own copy of a {room} item", exc)
                data = b"".join(chunks)
            else:
                data = encoded[1]
            if not data:
                continue
            pending = out.get(conn)
            if pending is None:
                out[conn] = data
            elif isinstance(pending, list):
                pending.append(data)
            else:
                out[conn] = [pending, data]
        self.delivered += len(members) * len(items)
        if cache:
            self._round_bytes += max(len(e[1]) for e in cache.values())

    def _encode_each(self, key: tuple[type[ServerCodec], Hashable], items: list[list[Any]]
                     ) -> list[bytes]:
        """A room batch one dialect could not encode: item by item, so only the
        item that raises is left out (logged), never the batch."""
        chunks = []
        for item in items:
            try:
                chunks.append(key[0].encode_fanout(item[0], key[1]))
            except Exception as exc:
                self._drop(None, f"{item[0].get('t')} item for {key[0].name} members", exc)
                chunks.append(b"")
        return chunks

    # Closing -----------------------------------------------------------------------

    def _next_close(self) -> float:
        if not self._closing:
            return float("inf")
        grace = self.settings.slow_consumer_grace
        return min((c.close_at or 0.0) + grace for c in self._closing.values())

    def _close_due(self, poller: zmq.Poller, watched: set[int]) -> None:
        """Close connections that flushed their last words or ran out of grace."""
        if not self._closing:
            return
        now = time.monotonic()
        grace = self.settings.slow_consumer_grace
        for cid, conn in list(self._closing.items()):
            if conn.pending and now < (conn.close_at or now) + grace:
                continue
            if conn.slow:
                self.slow_cuts += 1
                log.info("cut %s (%s): slow consumer", conn.nick or conn.id, conn.addr)
            # Hard (both ways) also wakes the reader thread blocked in recv().
            conn.shutdown(hard=conn.slow or conn.close_reason in CUT_CODES)
            if conn.fd in watched:
                poller.unregister(conn.fd)
                watched.discard(conn.fd)
                self._by_fd.pop(conn.fd, None)
                self._stuck.discard(conn.id)
            del self._closing[cid]

    def _shutdown_clients(self, poller: zmq.Poller) -> None:
        """SIGTERM: tell everyone, flush what we can within the grace, close."""
        self._flush_out()  # output held for a linger goes before the goodbye
        conns = list(self.conns.values())
        for conn in conns:
            conn.finish(
                {"t": "error", "code": "shutting_down", "text": "the relay is shutting down"},
                "shutting_down",
            )
        deadline = time.monotonic() + self.settings.shutdown_grace
        pending = [c for c in conns if c.pending and not c.flush()]
        while pending and time.monotonic() < deadline:
            flusher = zmq.Poller()
            for conn in pending:
                flusher.register(conn.fd, zmq.POLLOUT)
            flusher.poll(int((deadline - time.monotonic()) * 1000) + 1)
            pending = [c for c in pending if not c.flush()]
        for conn in conns:
            conn.shutdown()  # FIN after the flushed data; readers see the peers close
