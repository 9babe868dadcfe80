"""The hub process: one sequencer for every room, behind an XPUB socket.

Thin I/O around HubState: receive every pending request batch (many per
wake), let the state decide (state.py and its handlers, over the engine this
module chooses), make what was sequenced durable (`engine.flush`), then
publish the output coalesced into one bus message per run of one topic.
Bodies are never re-encoded per receiver here; the workers do that once per
dialect.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import time
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from relay import __version__, curve
from relay.bus import messages as m
from relay.bus.link import tune
from relay.bus.wire import (
    ANNOUNCE,
    REQUEST,
    GapCounter,
    log_contained,
    pack,
    pack_batch,
    topic_room,
    unpack,
    worker_topic,
)
from relay.child import freeze_survivors
from relay.config import Settings
from relay.hub.authguard import AuthGuard
from relay.hub.engine import Engine
from relay.hub.historydb import HistoryStore
from relay.hub.members import MEMBERS_PAGE
from relay.hub.memory import MemoryEngine
from relay.hub.replies import Out
from relay.hub.state import HubState
from relay.hub.stats import HubStats
from relay.metrics import HubMetrics
from transports.errors import error_body

log = logging.getLogger("chat_relay.hub")

MAX_BATCH = 2000  # requests handled per wake before we publish what they produced
HEARTBEAT = 0.5


def _unsendable(ref: str, exc: Exception) -> dict[str, Any]:
    return error_body("bad_field", f"the relay could not send its answer to this {ref} "
                      f"({type(exc).__name__}); it was dropped", ref)


class Hub:
    def __init__(self, settings: Settings, bind: str, ctx: zmq.Context[Any] | None = None) -> None:
        self.settings = settings
        self.ctx = ctx or zmq.Context()
        self.sock: zmq.Socket[bytes] = self.ctx.socket(zmq.XPUB)
        tune(self.sock, settings.bus_hwm)
        self.auth: ThreadAuthenticator | None = None  # TCP bus: CURVE behind ZAP
        if curve.is_tcp(bind):
            self.auth = curve.start_authenticator(self.ctx, settings.keys)
            curve.make_server(self.sock, settings.keys)
            curve.watch_handshakes(self.sock, "hub")
        self.sock.bind(bind)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT) or bind
        self.epoch = time.time_ns() // 1_000_000
        # The engine seam (engine.py): the state every handler decides on.
        engine = self._engine(settings)
        self.epoch = engine.epoch
        self.origin = f"hub-{self.epoch}-{os.getpid()}" if settings.engine else f"hub-{self.epoch}"
        self.state = HubState(
            epoch=self.epoch,
            engine=engine,
            server=f"chat-relay/{__version__}",
            max_rooms_per_client=settings.max_rooms_per_client,
            join_replay=settings.join_replay,
            join_replay_rooms=settings.join_replay_rooms,
            presence_limit=settings.presence_limit,
            presence_interval=settings.presence_interval,
        )
        self.topic_seq: dict[bytes, int] = {}
        self._touched: set[bytes] = set()  # topics published since the last heartbeat
        self.gaps = GapCounter()
        self.running = True
        self._seen_failures: set[tuple[str, str]] = set()  # for log_contained
        self.metrics = HubMetrics() if settings.metrics else None

    def _engine(self, settings: Settings) -> Engine:
        """The memory engine (with --history-db, history, seq and epoch come back
        from the file, so a restart looks like no restart), or Redis (--engine)."""
        if settings.engine:
            from relay.hub.redis_engine import RedisEngine

            redis_engine = RedisEngine(
                settings.engine, password=settings.engine_password,
                history_len=settings.history, max_rooms=settings.max_rooms,
                room_ttl=settings.room_ttl, auth_failures=settings.auth_failures,
                auth_window_ms=int(settings.auth_window * 1000),
                auth_block_ms=int(settings.auth_block * 1000),
                join_members=min(settings.presence_limit, MEMBERS_PAGE),
                join_replay=settings.join_replay)
            redis_engine.is_local = lambda worker: worker in self.state.workers
            return redis_engine
        store: HistoryStore | None = None
        if settings.history_db:
            store = HistoryStore.open(settings.history_db, settings.history)
            self.epoch = store.epoch(self.epoch)
        return MemoryEngine(
            epoch=self.epoch,
            history_len=settings.history,
            store=store,
            history_bytes=settings.history_bytes,
            max_rooms=settings.max_rooms,
            room_ttl=settings.room_ttl,
            auth=AuthGuard(settings.auth_failures, int(settings.auth_window * 1000),
                           int(settings.auth_block * 1000), settings.auth_table),
        )

    def publish(self, out: Out) -> None:
        """Send `out` in order, one bus message per run of equal topics.

        Items are packed one by one (bus.pack_batch): one that cannot be
        packed is replaced by an error to the client it was for, never raised
        out of the hub's loop; such errors for other topics go out last.
        """
        send = self.sock.send_multipart
        late: Out = []
        i, n = 0, len(out)
        while i < n:
            topic = out[i][0]
            j = i + 1
            while j < n and out[j][0] == topic:
                j += 1
            items = [item for _, item in out[i:j]]
            i = j
            if topic == ANNOUNCE:
                self._stamp_heartbeat(items)
            body = pack_batch(items, functools.partial(self._unpackable, topic, late))
            if body is None:
                continue
            if topic != ANNOUNCE:
                self._touched.add(topic)
            seq = self.topic_seq[topic] = self.topic_seq.get(topic, 0) + 1
            send([topic, pack([self.origin, self.epoch, seq]), body], copy=False)
        if late:
            self.publish(late)

    def _unpackable(self, topic: bytes, late: Out, item: Any, exc: Exception) -> Any:
        """What goes in place of an item msgpack refused: an error for its client.

        A room message loses the client's `id` (the only value in it that the
        client chose freely) and its author gets the error instead.
        """
        log_contained(log, self._seen_failures, f"reply on {topic[:40]!r}", exc)
        if topic[:1] == b"w" and isinstance(item, list) and len(item) == 2 \
                and isinstance(item[0], int):
            ref = item[1].get("t") if isinstance(item[1], dict) else None
            return [item[0], _unsendable(str(ref), exc)]
        if topic[:1] == b"r" and isinstance(item, list) and len(item) == 4 \
                and item[3] is not None:
            author, conn = item[1], item[2]
            if isinstance(author, str) and isinstance(conn, int):
                late.append((worker_topic(author), [conn, _unsendable("say", exc)]))
            return [item[0], item[1], item[2], None]
        return None

    def _stamp_heartbeat(self, items: list[Any]) -> None:
        """Tell workers the last bus seq (and room msg seq) of every topic used
        since the last beat. It travels after those messages, so a worker that
        is behind knows at once that the bus dropped something, even the tail
        of a burst after which nothing else comes."""
        for item in items:
            if isinstance(item, dict) and item.get("t") == "_hub":
                seqs = {}
                for topic in self._touched:
                    seq = self.state.engine.seq(topic_room(topic)) if topic[:1] == b"r" else None
                    seqs[topic] = [self.topic_seq[topic], seq]
                item["seqs"] = seqs
                self._touched.clear()

    def stats(self) -> HubStats:
        """What metrics reads at each heartbeat (a snapshot, not our fields)."""
        state = self.state
        return HubStats(messages=state.messages, clients=state.engine.client_count(),
                        rooms=state.engine.room_count(), bus_gaps=self.gaps.gaps,
                        bus_missing=self.gaps.missing, moderation=dict(state.moderation))

    def expire_rooms(self, mono: float) -> None:
        """Forget rooms past --room-ttl; a history db that fails here is logged, not fatal."""
        try:
            self.state.expire_rooms(mono)
        except Exception as exc:
            log.error("forgetting idle rooms failed: %s", exc)

    def handle_frames(self, frames: list[bytes], out: Out, mono: float) -> None:
        if len(frames) != 3 or frames[0] != REQUEST:
            return  # a subscription change (handled by zmq) or noise
        try:
            origin, epoch, seq = unpack(frames[1])
            reqs = unpack(frames[2])
        except Exception:
            log.warning("dropping an undecodable bus message (%d bytes)", len(frames[2]))
            return
        missed = self.gaps.check(b"up:" + str(origin).encode(), str(origin), int(epoch), int(seq))
        if missed:
            log.warning("bus gap: %d batches from %s never arrived", missed, origin)
        for req in reqs:
            try:  # HubState contains a handler's failure; this is for the rest
                self.state.handle(str(origin), req, out, mono)
            except Exception as exc:
                op = m.op_of(req) or type(req).__name__
                log_contained(log, self._seen_failures, f"{op} request from {origin}", exc)

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        engine = self.state.engine
        if engine.wake_fd is not None:  # items sequenced by other hosts wake us
            poller.register(engine.wake_fd, zmq.POLLIN)
        next_beat = 0.0
        log.info("hub %s up on %s (epoch %d)", self.origin, self.endpoint, self.epoch)
        while self.running:
            wait = HEARTBEAT
            due = self.state.presence_due()
            if due is not None:  # a room's presence batch is due before the next beat
                wait = min(wait, max(0.0, due - time.monotonic()))
            try:
                ready = dict(poller.poll(int(wait * 1000) + (due is not None)))
            except zmq.ZMQError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            out: Out = []
            mono = time.monotonic()
            if ready:
                for _ in range(MAX_BATCH):
                    try:
                        frames = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.handle_frames(frames, out, mono)
            self.state.flush_presence(mono, out)
            beat = mono >= next_beat
            if beat:
                next_beat = mono + HEARTBEAT
                out.extend(self.state.expire_workers(mono))
                self.expire_rooms(mono)
            if out or engine.wake_fd is not None:  # a shared engine may have a backlog
                out = engine.outgoing(out)  # a shared engine sequences and routes here
            # Then what the engine brings in (never back out to it): other hosts' items
            # and, with a shared engine, this hub's own room items in the room's order.
            out.extend(engine.incoming())
            if beat:
                out.append((ANNOUNCE, {"t": "_hub", "epoch": self.epoch}))
                if self.metrics is not None:
                    self.metrics.update(self.stats())
            engine.flush()  # before publishing: a seq a client saw is never reused
            if out:
                self.publish(out)
        self.state.engine.close()
        self.sock.close(linger=200)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()


def main(settings: Settings, bind: str, banner: bool = False) -> None:
    freeze_survivors()  # 2,000 clients coming and going left the hub no cyclic garbage either
    hub = Hub(settings, bind)
    if banner:  # the public `chat-relay hub`: say where, as `start` does
        print(f"chat-relay hub listening on {hub.endpoint}"
              f"{' (CURVE, keys in ' + settings.keys + ')' if hub.auth else ''}", flush=True)
        if hub.metrics is not None:  # no supervisor here: serve our own registry
            from relay.metrics import serve

            _server, url = serve(hub.metrics.registry, settings.metrics)
            print(f"  metrics on {url}", flush=True)

    def stop(signum: int, frame: object) -> None:
        hub.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    hub.run()
