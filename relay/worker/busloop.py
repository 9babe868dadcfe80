"""A worker's bus thread: the only owner of the worker's zmq socket.

One poll loop does every job that touches the bus or writes for the hub, so
none of them needs a lock on zmq:
- upstream: drains what readers queued (inbox.py) and sends it to the hub
  as ONE bus message per wake, with a credit request now and then (pacing.py);
- downstream: takes every pending bus message (busdrain.py: and room batches
  in the middle of a long round); room batches go through room sync
  (roomsync.py: subscriptions, gaps held and filled) to the fan-out
  (fanout.py: encode once per dialect, send rounds with a linger); replies
  for one client update its state and go out in the same round;
- flushes outboxes whose sockets became writable, and closes connections
  whose end has come (backlog.py), and stops pulling room traffic while
  members fall behind (pacing.FanoutPacer).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import zmq

from relay.bus import messages as m
from relay.bus.link import BusLink
from relay.bus.wire import ANNOUNCE, GapCounter, log_contained, unpack, worker_topic
from relay.config import Settings
from relay.worker.admission import Admission
from relay.worker.backlog import Backlog
from relay.worker.busdrain import BusDrain
from relay.worker.fanout import Fanout
from relay.worker.inbox import Inbox, Local
from relay.worker.pacing import FanoutPacer
from relay.worker.requests import ANSWERED
from relay.worker.roomsync import RoomSync
from relay.worker.stats import WorkerStats
from relay.worker.writer import Connection
from transports.errors import CUT_CODES, error_body
from transports.ircv3_tags import set_hub_epoch

if TYPE_CHECKING:
    from relay.metrics import WorkerMetrics

log = logging.getLogger("chat_relay.worker")

HEARTBEAT = 0.5


class BusLoop:
    def __init__(self, ctx: zmq.Context[Any], worker_id: str, hub: str, settings: Settings,
                 admission: Admission, inbox: Inbox) -> None:
        self.ctx, self.id, self.hub, self.settings = ctx, worker_id, hub, settings
        self.admission = admission
        self.inbox = inbox
        self.my_topic = worker_topic(worker_id)
        self.conns: dict[int, Connection] = {}
        self.gaps = GapCounter()
        self.fanout = Fanout(worker_id, {}, {}, settings.max_outbox, settings.max_linger,
                             lambda what, exc: self._drop(None, what, exc))
        self.sync = RoomSync(self.my_topic, self.gaps, self.fanout,
                             lambda t: self.link.subscribe(t), lambda t: self.link.unsubscribe(t),
                             lambda reqs: self._send_up([r.to_wire() for r in reqs]))
        self.poller = zmq.Poller()
        self.backlog = Backlog(self.poller, settings.max_outbox, settings.slow_consumer_grace)
        self.pacer = FanoutPacer(settings.max_pause)
        self.bus = BusDrain(self.fanout, self._take_bus_message)
        self.ready, self.stopped = threading.Event(), threading.Event()
        self.hub_epoch: int | None = None
        self._seen_failures: set[tuple[str, str]] = set()  # for log_contained
        self.contained = 0  # requests and items dropped because handling them raised
        self._epoch = time.time_ns() // 1_000_000
        self.thread = threading.Thread(target=self._run, name="bus", daemon=True)
        self.says = 0  # counts for metrics (stats())
        self.dialects: Counter[str] = Counter()  # open connections by dialect
        self.opened: Counter[str] = Counter()
        self.metrics: WorkerMetrics | None = None
        if settings.metrics:
            from relay.metrics import WorkerMetrics

            self.metrics = WorkerMetrics(worker_id)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.inbox.stop()

    def stats(self) -> WorkerStats:
        """What metrics reads at each heartbeat (a snapshot, not our fields)."""
        outbox, behind = self.backlog.pending()
        return WorkerStats(
            connections=dict(self.dialects), opened=dict(self.opened), says=self.says,
            delivered=self.fanout.delivered, bus_gaps=self.gaps.gaps,
            bus_missing=self.gaps.missing, slow_cuts=self.backlog.slow_cuts,
            rate_limited=self.inbox.rate_limited, pushed_back=self.inbox.gate.pushed_back,
            queued=len(self.inbox.queue), outbox_bytes=outbox, backlogged=behind)

    # The loop ------------------------------------------------------------------

    def _connect(self) -> BusLink:
        s = self.settings
        link = self.link = BusLink(self.ctx, self.hub, self.id, hwm=s.bus_hwm, keys=s.keys,
                                   epoch=self._epoch, watch="node")
        link.subscribe(self.my_topic)
        link.subscribe(ANNOUNCE)
        self.poller.register(link.sock, zmq.POLLIN)
        self.fanout.mid_round = lambda: self._mid_round(link.sock)
        self.poller.register(self.inbox.wake_fd, zmq.POLLIN)
        return link

    def _run(self) -> None:
        link = self._connect()
        next_beat = 0.0
        try:
            while True:
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + HEARTBEAT
                    self._heartbeat()
                due = self.fanout.rounds.due
                if due is not None and now >= due:
                    self.fanout.flush()
                    due = None
                timeout = max(0.0, min(next_beat, self.backlog.next_close(), due or next_beat,
                                       self.pacer.stuck_deadline() or next_beat) - now)
                self._wait_and_work(link.sock, timeout, now)
                if self.inbox.stopping:
                    self.fanout.flush()  # output held for a linger goes before the goodbye
                    self.backlog.shutdown_all(list(self.conns.values()),
                                              self.settings.shutdown_grace)
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
            link.close(linger=0)
            self.stopped.set()

    def _heartbeat(self) -> None:
        beat: list[dict[str, Any]] = [m.Heartbeat(hello=not self.ready.is_set()).to_wire()]
        credit = self.inbox.gate.credit
        if credit.overdue():  # a receipt may have been lost: ask again
            beat.append(m.Credit(credit.ask()).to_wire())
        self._send_up(beat)
        if self.metrics is not None:
            self.metrics.update(self.stats())
        if self.sync.held:
            self.sync.release_stale_holds()

    def _wait_and_work(self, sock: zmq.Socket[bytes], timeout: float, now: float) -> None:
        """One poll, then everything it found: bus, inbox, writable sockets, closes."""
        # The next round's share is ready: a carried tail, or a message a look kept.
        carried = bool(self.fanout.carry or self.bus.kept) and self.bus.polled
        if carried:
            timeout = 0.0
        events = self.poller.poll(int(timeout * 1000) + 1)
        ev = dict(events)
        wake_fd = self.inbox.wake_fd
        if wake_fd in ev:
            self.inbox.consume_wake()
        if sock in ev or carried:
            self.bus.drain(sock)
        for fd, mask in events:
            if isinstance(fd, int) and fd != wake_fd and mask & zmq.POLLOUT:
                self.backlog.writable(fd, now)
        self._drain_queue()
        writers = self.inbox.writers
        while writers:
            conn = writers.popleft()
            if conn.id in self.conns:  # else already released; its fd may be reused
                self.backlog.want(conn, now)
        self.backlog.close_due(time.monotonic())
        self._pace(sock)

    # Upstream --------------------------------------------------------------------

    def _send_up(self, batch: list[dict[str, Any]]) -> None:
        """One bus message for the batch; a request that cannot be packed is
        dropped with an error to its sender, never raised (wire.pack_batch)."""
        self.link.send(batch, self._refuse_up, limit_nesting=True)

    def _refuse_up(self, req: Any, exc: Exception) -> None:
        conn = self.conns.get(req.get("c", -1)) if isinstance(req, dict) else None
        self._drop(conn, str(m.op_of(req)), exc)

    def _drain_queue(self) -> None:
        batch: list[dict[str, Any]] = []
        queue = self.inbox.queue
        while queue:
            conn, req = queue.popleft()
            try:
                up = self._take_request(conn, req)
            except Exception as exc:
                self._drop(conn, getattr(req, "OP", str(req)), exc)
                continue
            if up is not None:
                batch.append(up)
        if batch:
            receipt = self.inbox.gate.credit.add(len(batch))
            if receipt is not None:
                batch.append(m.Credit(receipt).to_wire())
            self._send_up(batch)

    def _take_request(self, conn: Connection | None, req: m.Request | Local
                      ) -> dict[str, Any] | None:
        """Local bookkeeping for one queued request; returns what goes to the hub."""
        if isinstance(req, Local):
            assert conn is not None
            if req is Local.OPENED:
                self.conns[conn.id] = conn
                self.dialects[conn.codec.name] += 1
                self.opened[conn.codec.name] += 1
                return None
            self.dialects[conn.codec.name] -= 1
            self.conns.pop(conn.id, None)
            self.sync.leave_all(conn)
            # Close the socket here, after the poller let go of its fd (fds get
            # reused); output held for a linger has nowhere to go now.
            self.backlog.release(conn)
            self.fanout.out.pop(conn, None)
            conn.sock.close()
            return m.Gone().to_wire(conn.id)
        if conn is None:
            return req.to_wire()
        if isinstance(req, m.Say):
            self.says += 1
        elif isinstance(req, m.Hello):
            for room in list(req.rooms) + list(req.resume or ()):
                self.sync.subscribe(conn, room)
        elif isinstance(req, m.Join):
            self.sync.subscribe(conn, req.room)
        return req.to_wire(conn.id)

    def _pace(self, sock: zmq.Socket[bytes]) -> None:
        """Pull room traffic off the bus only while members keep up (FanoutPacer).

        While fan-out waits, the traffic waits upstream, the credit window
        fills, and the readers of the heaviest senders stop reading.
        """
        paused = self.backlog.pace(self.pacer, time.monotonic(), self.fanout.last_round)
        if paused == self.bus.polled:
            if paused:
                self.poller.unregister(sock)
            else:
                self.poller.register(sock, zmq.POLLIN)
            self.bus.polled = not paused

    # Errors and cuts -------------------------------------------------------------

    def _drop(self, conn: Connection | None, what: str, exc: Exception) -> None:
        """A request or reply whose handling raised: one log line, an error to
        the client it was for (charged to its error budget), nothing else."""
        self.contained += 1
        who = f"connection {conn.id} ({conn.addr})" if conn is not None else "the worker"
        log_contained(log, self._seen_failures, f"{what} for {who}", exc)
        if conn is None or conn.closing:
            return
        error = conn.codec.encode(error_body(
            "bad_field", f"the relay could not handle this {what} ({type(exc).__name__}); "
            "it was dropped", what))
        conn.send(self.fanout.take(conn) + error)  # what was due before it goes first
        self._charge_error(conn)

    def _charge_error(self, conn: Connection) -> None:
        """An error went to `conn`: past its budget, it is closed (too_many_errors)."""
        if conn.errors.charge() or conn.closing:
            return
        log.info("cut %s (%s): too many errors", conn.nick or conn.id, conn.addr)
        self.fanout.emit(conn, conn.codec.encode(conn.errors.error()))
        self._cut(conn, "too_many_errors")

    def _cut(self, conn: Connection, reason: str) -> None:
        """An operator removed this client (the hub forgot it already): send what is
        due with the error last, take no more output, and close once it is out."""
        pending = self.fanout.take(conn)
        if pending:
            conn.send(pending)
        conn.finish(None, reason)
        self.backlog.close_soon(conn, time.monotonic())
        self.sync.leave_all(conn)
        self.fanout.after_flush.append(conn.hello_done.set)  # a reader waiting on its hello goes on

    # Downstream ------------------------------------------------------------------

    def _mid_round(self, sock: zmq.Socket[bytes]) -> bool:
        """A pause in a long send round (busdrain.py): what readers queued goes up
        to the hub, and the room batches waiting come in. A connection closed
        meanwhile is `closing`, so the round's send to it takes nothing."""
        self._drain_queue()
        return self.bus.look(sock)

    def _take_bus_message(self, topic: bytes, header: bytes, body: bytes) -> None:
        try:
            self._on_bus_message(topic, header, body)
        except Exception as exc:  # a bus message we cannot read costs itself only
            self._drop(None, f"bus message on {topic[:40]!r}", exc)

    def _on_bus_message(self, topic: bytes, header: bytes, body: bytes) -> None:
        """One bus message; a reply that raises costs its own client only."""
        origin, epoch, seq = unpack(header)
        kind = topic[:1]
        fresh = False
        if kind == b"r":
            ours, fresh = self.sync.follows(topic)
            if not ours:
                return
        missed = 0 if fresh else self.gaps.check(topic, origin, epoch, seq)
        if missed:
            log.warning("bus gap on %r: %d message(s) from %s lost", topic, missed, origin)
        if kind == b"r":
            self.sync.room_batch(topic[1:-1].decode(), unpack(body))
        elif kind == b"w":
            for conn_id, reply in unpack(body):
                try:
                    self._reply(conn_id, reply)
                except Exception as exc:
                    what = reply.get("t") if isinstance(reply, dict) else "reply"
                    self._drop(self.conns.get(conn_id), f"{what} reply", exc)
        elif topic == ANNOUNCE:
            for item in unpack(body):
                self._control(m.decode_control(item), origin, epoch)

    def _control(self, item: m.Control | None, origin: str = "", bus_epoch: int = 0) -> None:
        """A control item from the hub, on our topic or the announce topic."""
        if isinstance(item, m.Ready):
            self.hub_epoch = item.epoch
            set_hub_epoch(int(item.epoch))  # IRC msgids name the hub's epoch
            self.ready.set()
        elif isinstance(item, m.Resync):
            self._send_up([self.sync.resync(self.conns.values()).to_wire(),
                           m.Heartbeat().to_wire()])
        elif isinstance(item, m.Filled):
            self.sync.fill(item)
        elif isinstance(item, m.Bans):
            self.admission.take_bans(item)
        elif isinstance(item, m.Block):
            self.admission.take_block(item)
        elif isinstance(item, m.Receipt):
            self.inbox.gate.receipt(item.n)
        elif isinstance(item, m.HubBeat):
            self.sync.check_tails(item.seqs, origin, bus_epoch)
            epoch = item.epoch
            if self.hub_epoch is not None and epoch != self.hub_epoch:
                log.warning("hub restarted (epoch %s -> %s)", self.hub_epoch, epoch)
            self.hub_epoch = epoch
            if isinstance(epoch, int):
                set_hub_epoch(epoch)  # IRC msgids name the hub's epoch

    def _reply(self, conn_id: int | None, body: dict[str, Any]) -> None:
        if conn_id is None:
            self._control(m.decode_control(body))
            return
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        t = body.get("t")
        if t == m.ByeDone.T or t == ANSWERED:  # barriers: set once what came before is out
            self.fanout.after_flush.append(conn.bye_done.set if t == m.ByeDone.T else conn.answered)
            return
        body = self._client_reply(conn, t, body)
        if t != "error":
            self.fanout.emit(conn, conn.codec.encode(body))
            return
        # A reader's own error (echoed through the hub to keep its place in
        # line) was charged to the error budget when it was made.
        charged = body.pop("_charged", False)
        self.fanout.emit(conn, conn.codec.encode(body))
        if body.get("code") in CUT_CODES:
            self._cut(conn, str(body["code"]))
        elif not charged:
            self._charge_error(conn)

    def _client_reply(self, conn: Connection, t: Any, body: dict[str, Any]) -> dict[str, Any]:
        """What a reply to `conn` changes here before it is written; returns the body."""
        if t == "welcome":
            conn.ready = True
            conn.nick = body["nick"]
            self.fanout.after_flush.append(conn.hello_done.set)
            # `max_text` (extension): this worker's limit, so the web page can
            # refuse an over-long line before sending it.
            return {**body, "max_text": self.settings.max_text}
        if t == "renamed":
            conn.nick = body["nick"]
        elif self.sync.on_reply(conn, t, body):  # its hello was refused
            self.fanout.after_flush.append(conn.hello_done.set)
        return body
