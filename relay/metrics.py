"""Prometheus metrics (`--metrics HOST:PORT`) for a relay made of several processes.

A relay is a supervisor, a hub and W workers, and a scrape must see all of
them. We use prometheus_client's multiprocess mode: before it starts any
child, the supervisor points PROMETHEUS_MULTIPROC_DIR at a private (0700)
temp dir; each child writes its values to its own mmap'ed files there, and
the supervisor serves the aggregate with a MultiProcessCollector. When a
child dies the supervisor calls `mark_process_dead(pid)`, which drops its
live gauges; its counters stay, so totals never go backwards across a
restart. The alternative (each process serving its own port, or pushing to
the supervisor over the bus) would need W scrape targets or a new bus topic;
the files cost nothing until a scrape reads them.

The hot path never touches prometheus objects. Workers and the hub count in
plain ints and publish a snapshot (worker/stats.py WorkerStats, hub/stats.py
HubStats) at the bus thread's (or hub loop's) heartbeat, every 0.5 s; the
update moves its deltas into the prometheus Counters and sets the Gauges. So a scrape is at most one
heartbeat behind, and a message costs no lock and no mmap write.

A public hub (`chat-relay hub --metrics HOST:PORT`, no supervisor) runs in
plain single-process mode and serves its own registry.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from relay.hub.stats import HubStats
    from relay.worker.stats import WorkerStats

log = logging.getLogger("chat_relay.metrics")

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "chat_relay"


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`; an empty HOST is loopback) -> (host, port).

    Raises:
        ValueError: not HOST:PORT with a port 0-65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdecimal() or int(port) > 65535:
        raise ValueError(f"--metrics wants HOST:PORT (e.g. 127.0.0.1:9108), got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Deltas:
    """Moves plain-int totals into prometheus Counters as increments."""

    def __init__(self) -> None:
        self._last: dict[int, float] = {}

    def sync(self, counter: Any, total: float) -> None:
        key = id(counter)
        delta = total - self._last.get(key, 0)
        if delta > 0:
            counter.inc(delta)
            self._last[key] = total


class _Updater:
    """Base for a process's metrics: `update()` never raises into its caller's loop."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deltas = _Deltas()
        self._failed = False

    def _counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(f"{PREFIX}_{name}", doc, labels, registry=self.registry)

    def _gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        # livesum: a dead process's gauges vanish (mark_process_dead), the
        # live ones add up across processes.
        return Gauge(f"{PREFIX}_{name}", doc, labels, registry=self.registry,
                     multiprocess_mode="livesum")

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            if not self._failed:  # once: a broken metric must not flood the log
                log.exception("updating metrics failed")
            self._failed = True


class WorkerMetrics(_Updater):
    """One worker process: its connections, traffic, cuts and backlog."""

    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id
        self.connections = self._gauge("connections", "Open client connections", ("dialect",))
        self.opened = self._counter("connections_opened", "Client connections accepted",
                                    ("dialect",))
        self.messages_in = self._counter("messages_in", "say requests sent to the hub")
        self.deliveries = self._counter(
            "deliveries", "Room messages and presences written to local members")
        self.gaps = self._counter("bus_gaps", "Gaps seen in bus sequence numbers", ("process",))
        self.missing = self._counter("bus_missing", "Bus messages lost in those gaps",
                                     ("process",))
        self.slow_cuts = self._counter("slow_consumer_cuts", "Clients cut as slow consumers")
        self.rate_limited = self._counter("rate_limited", "Client frames dropped by the rate limit")
        self.pushed_back = self._counter(
            "pushed_back", "Times a reader stopped reading because its worker's credit window "
            "(--max-inflight) was full")
        self.queue = self._gauge("worker_queue_depth",
                                 "Requests waiting for the worker's bus thread", ("worker",))
        self.outbox = self._gauge("worker_outbox_bytes",
                                  "Bytes queued in outboxes of clients that are behind",
                                  ("worker",))
        self.backlogged = self._gauge("worker_backlogged_connections",
                                      "Connections waiting for their socket to be writable",
                                      ("worker",))
        from transports.registry import SERVER_CODECS

        for codec in SERVER_CODECS.values():  # every dialect shows, at 0 until used
            self.connections.labels(codec.name)
            self.opened.labels(codec.name)

    def update(self, stats: WorkerStats) -> None:
        """Called by the bus thread at its heartbeat with the snapshot it published."""
        self._guarded(lambda: self._update(stats))

    def _update(self, stats: WorkerStats) -> None:
        sync = self.deltas.sync
        for dialect, count in stats.connections.items():
            self.connections.labels(dialect).set(count)
        for dialect, count in stats.opened.items():
            sync(self.opened.labels(dialect), count)
        sync(self.messages_in, stats.says)
        sync(self.deliveries, stats.delivered)
        sync(self.gaps.labels("worker"), stats.bus_gaps)
        sync(self.missing.labels("worker"), stats.bus_missing)
        sync(self.slow_cuts, stats.slow_cuts)
        sync(self.rate_limited, stats.rate_limited)
        sync(self.pushed_back, stats.pushed_back)
        self.queue.labels(self.worker_id).set(stats.queued)
        self.outbox.labels(self.worker_id).set(stats.outbox_bytes)
        self.backlogged.labels(self.worker_id).set(stats.backlogged)


class HubMetrics(_Updater):
    """The hub: what it sequenced, who it knows, what its bus lost."""

    def __init__(self) -> None:
        super().__init__()
        self.messages = self._counter("hub_messages", "Messages sequenced by the hub")
        self.clients = self._gauge("hub_clients", "Clients registered at the hub")
        self.rooms = self._gauge("hub_rooms", "Rooms the hub keeps (with members or history)")
        self.gaps = self._counter("bus_gaps", "Gaps seen in bus sequence numbers", ("process",))
        self.missing = self._counter("bus_missing", "Bus messages lost in those gaps",
                                     ("process",))
        self.moderation = self._counter("moderation_actions",
                                        "Operator kicks, bans and mutes", ("action",))

    def update(self, stats: HubStats) -> None:
        """Called by the hub loop at its heartbeat with the snapshot it published."""
        self._guarded(lambda: self._update(stats))

    def _update(self, stats: HubStats) -> None:
        sync = self.deltas.sync
        sync(self.messages, stats.messages)
        self.clients.set(stats.clients)
        self.rooms.set(stats.rooms)
        sync(self.gaps.labels("hub"), stats.bus_gaps)
        sync(self.missing.labels("hub"), stats.bus_missing)
        for action, count in stats.moderation.items():
            sync(self.moderation.labels(action), count)


def serve(registry: CollectorRegistry, address: str) -> tuple[WSGIServer, str]:
    """Serve `registry` on HOST:PORT; returns the server and where it listens.

    Raises:
        RuntimeError: the address is malformed or cannot be bound, in words.
    """
    try:
        host, port = parse_address(address)
        server, _thread = start_http_server(port, host, registry)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from None
    except OSError as exc:
        raise RuntimeError(f"cannot serve metrics on {address}: {exc.strerror}") from None
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return server, f"http://{shown}:{bound_port}/metrics"


class SupervisorMetrics:
    """The supervisor's part: the private dir, the HTTP endpoint, dead children.

    `prepare()` must run before the first child starts (children read the
    environment variable when they first create a metric).
    """

    def __init__(self, address: str, facts: Callable[[], dict[str, Any]]) -> None:
        self.address = address
        self.facts = facts  # restarts by role, live workers: asked at scrape time
        self.dir = ""
        self.url = ""
        self._server: WSGIServer | None = None

    def prepare(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="chat-relay-metrics-")
        os.chmod(self.dir, 0o700)
        os.environ[ENV] = self.dir

    def start(self) -> None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.dir)  # type: ignore[no-untyped-call]
        registry.register(_SupervisorCollector(self.facts))
        self._server, self.url = serve(registry, self.address)

    def process_dead(self, pid: int) -> None:
        if self.dir:
            try:
                mark_process_dead(pid, self.dir)  # type: ignore[no-untyped-call]
            except OSError:
                log.exception("could not retire metrics of pid %d", pid)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            if os.environ.get(ENV) == self.dir:
                del os.environ[ENV]


class _SupervisorCollector:
    """Facts only the supervisor knows, computed when scraped."""

    def __init__(self, facts: Callable[[], dict[str, Any]]) -> None:
        self.facts = facts

    def collect(self) -> Iterator[Metric]:
        facts = self.facts()
        restarts = CounterMetricFamily(f"{PREFIX}_restarts", "Children restarted after dying",
                                       labels=["role"])
        counts = {"hub": 0, "worker": 0, **facts.get("restarts", {})}
        for role, count in sorted(counts.items()):
            restarts.add_metric([role], count)
        yield restarts
        yield GaugeMetricFamily(f"{PREFIX}_workers", "Worker processes running",
                                value=facts.get("workers", 0))
