"""The parent side of one benchmark run: plan, start load processes, merge.

Connections are dealt round-robin to rooms and to load processes, so every
process carries the same share of receivers and senders and the total rate
splits evenly. The parent only merges: counts add, latencies add into one
HDR histogram (`histo.merge_counts`), CPU figures are kept per process so
one saturated process is not hidden by an idle one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any

from benchmarks import engine, histo, proctree
from benchmarks.limits import raise_nofile
from benchmarks.loadproc import ProcPlan
from benchmarks.loadproc import main as proc_main
from benchmarks.probe import Prober

BUSY_WARN = 0.9


@dataclass(slots=True)
class RunConfig:
    host: str = "127.0.0.1"
    port: int = 8081
    dialect: str = "native"
    receivers: int = 100
    senders: int = 10
    rate: float = 1000.0
    size: int = 100
    duration: float = 10.0
    warmup: float = 2.0
    rooms: int = 1
    concurrency: int = 200
    procs: int = 0  # 0: CPU count
    greeting: bool = True
    drain: float = 5.0
    connect_timeout: float = 60.0
    engine: str = "auto"  # the timed phase in "c" (benchmarks/engine), "python", or "auto"
    # A join storm: the timed window begins this many seconds after the last
    # welcome (sending starts right after it), not `warmup` after the first send.
    after_join: float | None = None
    # The server's processes on this host (their trees are weighed): its CPU per
    # delivery is measured only when these are known; () leaves it out.
    server_pids: tuple[int, ...] = ()


class RunError(RuntimeError):
    """The run could not be carried out (no relay, every connection refused...)."""


def plan_processes(cfg: RunConfig, run_id: str) -> list[ProcPlan]:
    """Deal receivers and senders to rooms and processes, round-robin."""
    nprocs = max(1, cfg.procs or os.cpu_count() or 1)
    nprocs = min(nprocs, max(1, cfg.receivers + cfg.senders))
    rooms = [f"bench{run_id}{k}" for k in range(max(1, cfg.rooms))]
    plans = [
        ProcPlan(
            index=p, host=cfg.host, port=cfg.port, dialect=cfg.dialect, size=cfg.size,
            receivers=[], senders=[], concurrency=max(1, cfg.concurrency // nprocs),
            greeting=cfg.greeting, connect_timeout=cfg.connect_timeout,
            hard_limit_s=cfg.connect_timeout + cfg.warmup + cfg.duration + cfg.drain + 60,
            engine=cfg.engine, retry_refused=cfg.after_join is not None,
        )
        for p in range(nprocs)
    ]
    for i in range(cfg.receivers):
        plans[i % nprocs].receivers.append((f"b{run_id}r{i}", rooms[i % len(rooms)]))
    for j in range(cfg.senders):
        plans[j % nprocs].senders.append((j, f"b{run_id}s{j}", rooms[j % len(rooms)]))
    return plans


def refusal_warning(reasons: Mapping[str, int]) -> str | None:
    """The relay's connection limits refused some connections: which flags lift them.

    A relay on its defaults allows 256 connections per client IP, and a load
    generator is one IP: without this the report shows only the error code.
    """
    refused = sum(n for why, n in reasons.items()
                  if "too_many_connections" in why or "too many connections" in why.lower())
    if not refused:
        return None
    return (f"the relay refused {refused:,} connection(s) as too many: restart it with "
            "--max-per-ip and --max-connections above the number this run opens, e.g. "
            "`chat-relay start --max-per-ip 1000000 --max-connections 1000000` (in a "
            "checkout: `make run ARGS=\"--max-per-ip 1000000 --max-connections 1000000\"`)")


def rate_limit_warning(errors: Mapping[str, int]) -> str | None:
    """Senders the relay rate-limited: what they said over the limit shows as loss."""
    limited = sum(v for k, v in errors.items() if k.startswith("sender: ")
                  and ("rate_limited" in k or "messages/s" in k))
    if not limited:
        return None
    return (f"the relay rate-limited {limited} sender(s) and dropped what they said over "
            "its limit, so that shows as loss: restart the relay with the limit off, "
            "`chat-relay start --rate-limit 0` (in a checkout: "
            "`make run ARGS=\"--rate-limit 0\"`), or above the per-sender rate, to measure "
            "throughput")


def silent_loss_warning(lost: int, expected: int, errors: Mapping[str, int], corrupt: int,
                        drain: float) -> str | None:
    """Loss that no connection explained: what it can mean, and what to try.

    A server with a flood limit that delays rather than refuses (ngIRCd's
    default) queues what senders say and lets it out slowly; nothing closes
    and no error comes, and without a word the run would show only loss.
    """
    if not lost or errors or corrupt:  # those explain it, and the table shows them
        return None
    return (f"{lost:,} of {expected:,} deliveries had not arrived {drain:g} s after the last "
            "send, and no connection was closed or sent an error: the server is holding "
            "them back (a queue, or a flood limit that delays senders) or dropped them "
            "silently; try a lower --rate, lift the server's flood limits, or a longer --drain")


def pushback(per_room: Mapping[str, int], sent: list[dict[str, Any]],
             finals: list[dict[str, Any]], errors: Mapping[str, int]) -> dict[str, int]:
    """What the server did to keep up, besides delivering late.

    cut_receivers: receivers it closed, or that got an error (slow_consumer,
    an IRC ERROR line, a reset), before the end of the drain.
    shed: messages that reached no receiver of their room by the end of the
    drain: refused (rate_limited), dropped before fan-out, or never written
    because the server stopped reading the sender. A message that some
    receiver got is not shed; what the others missed is in `lost`.
    backlog: messages the senders still held, unwritten, when the schedule
    ended, because the server's socket took no more (its TCP push-back).
    refused_senders: senders that got an error (rate_limited...).
    """
    best: dict[str, int] = {}
    for f in finals:
        for room, n in f.get("room_best", {}).items():
            best[room] = max(best.get(room, 0), n)
    return {
        "cut_receivers": sum(f.get("cut", 0) for f in finals),
        "shed": sum(max(0, per_room.get(room, 0) - got) for room, got in best.items()),
        "backlog": sum(s.get("backlog", 0) for s in sent),
        "refused_senders": sum(n for k, n in errors.items() if k.startswith("sender: ")),
    }


def resolve_engine(choice: str, warnings: list[str]) -> str:
    """"c" or "python" for the timed phase; builds the C engine here, once, before
    the load processes start (they only load it). "auto" falls back with a warning."""
    if choice == "python":
        return "python"
    if choice not in ("c", "auto"):
        raise RunError(f"unknown engine {choice!r}; choose c, python or auto")
    path, why = engine.build()
    if path is not None:
        return "c"
    if choice == "c":
        raise RunError(f"the C engine cannot be built: {why}")
    warnings.append(f"the C load engine is not available ({why}); the Python one checks the "
                    "same, but uses several times the CPU per message")
    return "python"


def process_rate(total_rate: float, senders_here: int, senders_total: int) -> float:
    """A process's share of the total rate, in proportion to its senders."""
    if senders_total <= 0 or senders_here <= 0:
        return 0.0
    return total_rate * senders_here / senders_total


class Run:
    """Starts, drives and merges one run; `progress` is called about twice a second."""

    def __init__(self, cfg: RunConfig,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg
        self.progress = progress
        self.run_id = secrets.token_hex(2)
        self.procs: list[Any] = []
        self.pipes: list[Connection] = []
        self.warnings: list[str] = []
        self.engine = "python"
        self.cpu_window: proctree.CpuWindow | None = None
        self.last_ready_ns = 0  # the last welcome of the join phase (monotonic)
        self.window_after_join: float | None = None  # set for a join storm (after_join)
        self.first_send_after_join = 0.0
        self.measure_from: int | None = None  # the timed window's start, once planned

    def _start(self, plans: list[ProcPlan]) -> None:
        ctx = mp.get_context("spawn")
        for plan in plans:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=proc_main, args=(plan, child), daemon=True,
                            name=f"chat-bench-load-{plan.index}")
            p.start()
            child.close()
            self.procs.append(p)
            self.pipes.append(parent)

    def _collect(self, kind: str, timeout: float) -> list[dict[str, Any]]:
        """Wait for one `kind` message from every process (others go to _other)."""
        got: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(self.pipes):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RunError(f"load processes did not report {kind!r} within {timeout:.0f} s")
            for conn in wait([p for i, p in enumerate(self.pipes) if i not in got], left):
                assert isinstance(conn, Connection)
                i = self.pipes.index(conn)
                try:
                    k, body = conn.recv()
                except EOFError as exc:
                    raise RunError(f"load process {i} died (see its traceback above)") from exc
                if k == kind:
                    got[i] = body
                else:
                    self._other(i, k, body)
        return [got[i] for i in range(len(self.pipes))]

    def stop(self) -> None:
        for conn in self.pipes:
            try:
                conn.send(("stop", {}))
            except OSError:
                pass
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.terminate()  # our own child, by its handle (its pid)
                p.join(2)
        for conn in self.pipes:
            conn.close()

    def connect(self) -> dict[str, Any]:
        """Start the processes and open every connection; returns connect figures."""
        cfg = self.cfg
        self.engine = resolve_engine(cfg.engine, self.warnings)
        self.plans = plan_processes(replace(cfg, engine=self.engine), self.run_id)
        # The limit is per process and the load processes inherit it: each
        # needs room for its own share of the connections, not the total.
        want = max(len(p.receivers) + len(p.senders) for p in self.plans) + 64
        limit, warning = raise_nofile(want)
        if warning:
            self.warnings.append(warning)
        t0 = time.monotonic()
        prober = None if cfg.greeting else Prober(cfg.host, cfg.port)
        with prober or nullcontext():
            self._start(self.plans)
            ready = self._collect("ready", cfg.connect_timeout + 30)
        wall = time.monotonic() - t0
        if prober is not None and prober.error:
            self.warnings.append(f"{prober.error}: connections of a bare-line server count "
                                 "as made only once its probe line comes back through them")
        hist = histo.merge_encoded(histo.new_histogram(), [r["connect_hist"] for r in ready])
        connected = sum(r["connected"] for r in ready)
        failed = sum(r["failed"] for r in ready)
        phase = max(r["connect_s"] for r in ready)
        firsts = [r["first_open_ns"] for r in ready if r.get("first_open_ns")]
        self.last_ready_ns = max((r.get("last_ready_ns", 0) for r in ready), default=0)
        # From the first connect to the last welcome, over every load process.
        join_s = (self.last_ready_ns - min(firsts)) / 1e9 if firsts and self.last_ready_ns else 0.0
        failures = [f for r in ready for f in r["failures"]][:10]
        reasons: Counter[str] = Counter()
        for r in ready:
            reasons.update(r.get("failure_reasons", {}))
        refused = refusal_warning(reasons)
        if refused:
            self.warnings.append(refused)
        return {
            "connected": connected, "failed": failed, "failures": failures,
            "failure_reasons": dict(reasons.most_common()),
            "seconds": phase, "wall_seconds": wall, "nofile_limit": limit, "join_s": join_s,
            "retried": sum(r.get("retried", 0) for r in ready),
            "rate_per_s": connected / phase if phase > 0 else 0.0,
            "latency_ms": histo.summary_ms(hist),
        }

    def load(self) -> dict[str, Any]:
        """Drive the timed phase and return the merged figures."""
        cfg = self.cfg
        start = time.monotonic_ns() + 300_000_000
        measure_from = start + int(cfg.warmup * 1e9)
        if cfg.after_join is not None and self.last_ready_ns:
            measure_from = max(start, self.last_ready_ns + int(cfg.after_join * 1e9))
            self.window_after_join = (measure_from - self.last_ready_ns) / 1e9
            self.first_send_after_join = (start - self.last_ready_ns) / 1e9
        measure_to = measure_from + int(cfg.duration * 1e9)
        total_s = (measure_to - start) / 1e9
        if cfg.server_pids:
            self.cpu_window = proctree.CpuWindow(cfg.server_pids, measure_from, measure_to)
        for plan, conn in zip(self.plans, self.pipes, strict=True):
            rate = process_rate(cfg.rate, len(plan.senders), cfg.senders)
            conn.send(("go", {"t0_ns": start, "rate": rate or 1.0,
                              "count": int(rate * total_s),
                              "measure_from_ns": measure_from, "measure_to_ns": measure_to}))
        # Plain {bucket floor µs: count}: adding a report to a dict costs the
        # parent a tenth of recording it into an HDR histogram in pure Python,
        # on the CPUs it shares with the relay; the histogram is built once.
        self.counts: dict[int, int] = {}
        self.latest: dict[int, dict[str, Any]] = {}
        self.t_start = start
        self.measure_from = measure_from
        sent = self._collect("sent", total_s + 60)
        per_room: dict[str, int] = {}
        for s in sent:
            for room, n in s["per_room"].items():
                per_room[room] = per_room.get(room, 0) + n
        self.per_room = per_room
        for conn in self.pipes:
            conn.send(("expect", {"per_room": per_room, "drain_s": cfg.drain}))
        finals = self._collect("final", cfg.drain + 60)
        self.hist = histo.merge_counts(histo.new_histogram(),
                                       [self.counts, *(f["latencies"] for f in finals)])
        return self._merge(sent, finals)

    def _other(self, i: int, kind: str, body: dict[str, Any]) -> None:
        if kind != "progress":
            return
        self.latest[i] = body
        histo.add_counts(self.counts, body["latencies"])
        if self.progress is not None:
            now = time.monotonic_ns()
            elapsed = (now - self.t_start) / 1e9
            timed_from = (self.measure_from if self.measure_from is not None
                          else self.t_start + int(self.cfg.warmup * 1e9))
            self.progress({
                "warming_up": now < timed_from,
                "elapsed": elapsed,
                "sent": sum(b["sent"] for b in self.latest.values()),
                "delivered": sum(b["delivered"] for b in self.latest.values()),
                "gaps": sum(b["gaps"] for b in self.latest.values()),
                # One percentile of the counts, not summary_ms() of a histogram:
                # its mean and four percentiles walk the whole histogram in
                # Python (~80 ms), four times a second, on the CPUs the relay
                # and the load processes share. None until a timed message has
                # arrived: no fake 0.00 ms.
                "p99_ms": (histo.percentile_us(self.counts, 99.0) / 1000.0
                           if self.counts else None),
            })

    def _merge(self, sent: list[dict[str, Any]], finals: list[dict[str, Any]]) -> dict[str, Any]:
        cfg = self.cfg
        total_sent = sum(s["sent"] for s in sent)
        expected = sum(f["expected"] for f in finals)
        lost = sum(f["lost"] for f in finals)
        busy = [round(f["busy"], 3) for f in finals]
        errors: Counter[str] = Counter()
        for f in finals:
            errors.update(f["errors"])
        corrupt = sum(f["corrupt"] for f in finals)
        for warning in (rate_limit_warning(errors),
                        silent_loss_warning(lost, expected, errors, corrupt, cfg.drain)):
            if warning:
                self.warnings.append(warning)
        window = sum(f["window_deliveries"] for f in finals)
        late = sum(f["late"] for f in finals)
        max_lag = max(f["max_lag_ms"] for f in finals)
        lag_hist = histo.merge_counts(histo.new_histogram(), [f.get("lags", {}) for f in finals])
        lags = histo.summary_ms(lag_hist)
        starved = max_lag > 100.0
        bottleneck = max(busy) > BUSY_WARN or starved
        if max(busy) > BUSY_WARN:
            self.warnings.append(
                f"the load generator was the bottleneck (busiest load process "
                f"{max(busy):.0%} CPU): these figures understate the relay; "
                "use more --procs or run chat-bench on another host")
        elif starved:
            self.warnings.append(
                f"senders fell {max_lag:.0f} ms behind schedule while the busiest load "
                f"process used only {max(busy):.0%} CPU: the CPUs are oversubscribed "
                f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs), so "
                "latency includes time the generator waited for a CPU")
        return {
            "sent": total_sent,
            "offered_rate": cfg.rate,
            "expected": expected,
            "delivered": sum(f["delivered"] for f in finals),
            "unique": sum(f["unique"] for f in finals),
            "lost": lost,
            "loss_ratio": lost / expected if expected else 0.0,
            "duplicates": sum(f["duplicates"] for f in finals),
            "reorders": sum(f["reorders"] for f in finals),
            "corrupt": corrupt,
            "deliveries_per_s": window / cfg.duration if cfg.duration else 0.0,
            "latency_ms": histo.summary_ms(self.hist),
            # Every delivery's latency, so several runs' percentiles can be
            # taken over all their deliveries (benchmarks/suite.py).
            "latency_hist": histo.encode(self.hist),
            "generator": {"busy": busy, "cpu_s": [round(f["cpu_s"], 3) for f in finals],
                          "late_sends": late, "max_send_lag_ms": max_lag,
                          # how late the timed messages left: the generator's own
                          # share of the latency, which counts from the due time
                          "send_lag_ms": lags, "send_lag_hist": histo.encode(lag_hist),
                          "bottleneck": bottleneck, "engine": self.engine},
            "errors": errors,
            **pushback(self.per_room, sent, finals, errors),
            "server_cpu": self._server_cpu(window),
            "loadavg": os.getloadavg()[0],
        }

    def _server_cpu(self, deliveries: int) -> dict[str, Any]:
        """The server's CPU in the timed window, per delivery received in it (µs).

        Both count the same window, so neither the warm-up nor the drain (the
        server idling while stragglers are awaited) weighs on the figure.
        """
        if self.cpu_window is None:
            return {"pids": [], "cpu_s": None, "us_per_delivery": None}
        cpu = self.cpu_window.result()
        if cpu is None or deliveries <= 0:
            return {"pids": self.cpu_window.pids, "us_per_delivery": None,
                    "cpu_s": None if cpu is None else round(cpu, 3)}
        return {"pids": self.cpu_window.pids, "cpu_s": round(cpu, 3),
                "us_per_delivery": cpu * 1e6 / deliveries,
                # /proc counts CPU in clock ticks (10 ms): one tick, per delivery
                "tick_us_per_delivery": 1e6 / proctree.TICKS / deliveries}


def join_figures(connect: dict[str, Any], window_after: float,
                 first_send_after: float) -> dict[str, Any]:
    """A join storm's phase: how many were welcomed, how fast, and where the timed
    window sat (seconds after the last welcome)."""
    seconds = connect["join_s"]
    return {"welcomed": connect["connected"], "failed": connect["failed"],
            "retried": connect["retried"], "seconds": seconds,
            "per_s": connect["connected"] / seconds if seconds else 0.0,
            "first_send_after_s": first_send_after, "window_after_s": window_after}


def run_once(cfg: RunConfig,
             progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Connect, load, merge; always stops the load processes it started."""
    run = Run(cfg, progress)
    try:
        connect = run.connect()
        if connect["connected"] == 0:
            reasons = list(dict.fromkeys(connect["failures"]))  # one of each, in order
            raise RunError(f"no connection to {cfg.host}:{cfg.port} succeeded: "
                           f"{'; '.join(reasons[:3])}")
        result = run.load()
    finally:
        run.stop()
    result["connect"] = connect
    if run.window_after_join is not None:
        result["join"] = join_figures(connect, run.window_after_join, run.first_send_after_join)
    result["params"] = asdict(cfg)
    result["warnings"] = run.warnings
    result["ok"] = (result["lost"] == 0 and result["duplicates"] == 0
                    and result["reorders"] == 0 and result["corrupt"] == 0
                    and connect["failed"] == 0)
    return result
