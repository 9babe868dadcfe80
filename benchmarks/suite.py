"""`make bench`: every server side by side, on loopback, in one run.

Servers: chat-relay with --workers 1 and with the CPU count, the seed design
(`baselines/seed_server.py`, text dialect) and ngIRCd (IRC, when it can be
installed); at the latency point also chat-relay's design floor
(`baselines/floor_relay.py`: its hops with nothing on top). For each
receiver count it sweeps the offered rate upwards in deliveries/s (x2 a
step, then --sweep-refine bisection steps after the first failure) and
keeps the highest step with no loss, no reordering and p99 under the limit;
then one fixed-rate latency point (1,000 msgs/s, N=100), the workloads
(`benchmarks/workloads.py`: heavy and light senders, many rooms, one room of
10,000, overload at twice each server's peak) with the targets judged, and
the idle-connection test. Writes results/<date>.json (a summary: figures, no
histograms; benchmarks/compact.py), .md and -peak.png; the full results and
the sweep plot go to results/raw/, which git ignores (a run of the latency
point alone: results/<date>-latency.json and .md).

Every server is started here and stopped here, by its PID.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks import compact, histo, plot, report, sweep, workloads
from benchmarks.baselines import ngircd
from benchmarks.idle import run_idle
from benchmarks.runner import RunConfig, RunError, run_once

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
RAW = "raw"  # full results under RESULTS: histograms and all, ignored by git
# A join storm's connections in flight: as fast as the relay admits them. At
# 1,000 (just under the default --max-handshakes of 1,024, a worker's share
# 512) the relay refused 800-2,300 as too many and the load processes, busy
# with retries, sent some hellos after the relay's 300 ms sniff window (the
# connection then counts as failed); at 400 it took 3,100 joins/s, none refused.
# Any it refuses anyway are opened again (loadproc.connect_all).
STORM_CONCURRENCY = 400
BANNER = re.compile(r"listening on \[?([0-9a-fA-F.:]+)\]?:(\d+)")


@contextmanager
def banner_process(cmd: list[str], timeout: float = 30.0) -> Iterator[tuple[int, int]]:
    """Run `cmd`, wait for its `listening on HOST:PORT` line; yields (pid, port)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        port = 0
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = BANNER.search(line)
            if m:
                port = int(m.group(2))
                break
        if not port:
            raise RunError(f"{' '.join(cmd[:5])} did not start:\n{''.join(seen)[-2000:]}")
        # Keep draining its output so a chatty server never blocks on a full pipe.
        import threading

        threading.Thread(target=lambda: [None for _ in proc.stdout or []], daemon=True).start()
        yield proc.pid, port
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)


def relay_cmd(workers: int) -> list[str]:
    return [sys.executable, "-m", "relay", "start", "--host", "127.0.0.1", "--port", "0",
            "--workers", str(workers), "--rate-limit", "0", "--max-per-ip", "1000000",
            "--max-connections", "1000000", "--log-level", "WARNING"]


@contextmanager
def server(name: str) -> Iterator[tuple[int, int, str, bool]]:
    """Yields (pid, port, dialect, greeting) for one named server."""
    if name.startswith("chat-relay"):
        workers = int(name.split("w")[-1])
        with banner_process(relay_cmd(workers)) as (pid, port):
            yield pid, port, "native", True
    elif name == "seed":
        cmd = [sys.executable, "-m", "benchmarks.baselines.seed_server", "--port", "0"]
        with banner_process(cmd) as (pid, port):
            yield pid, port, "text", False
    elif name.startswith("floor"):
        # floor-wW: a thread per client; floor-loop-wW: one event loop per worker;
        # floor-nohub-wW: the loop with no hub hop (baselines/floor_loop_relay.py).
        workers = int(name.split("-w")[-1]) if "-w" in name else os.cpu_count() or 1
        loop = name.startswith(("floor-loop", "floor-nohub"))
        cmd = [sys.executable, "-m",
               f"benchmarks.baselines.{'floor_loop_relay' if loop else 'floor_relay'}",
               "--port", "0", "--workers", str(workers)]
        cmd += ["--no-hub"] if name.startswith("floor-nohub") else []
        with banner_process(cmd) as (pid, port):
            yield pid, port, "text", False
    elif name == "ngircd":
        path, why = ngircd.ensure_installed()
        if path is None:
            raise RunError(why)
        with ngircd.Ngircd(path) as irc:
            yield irc.pid, irc.port, "irc", True
    else:
        raise ValueError(name)


def peak(name: str, n: int, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Sweep deliveries/s upwards for one server and receiver count."""
    targets = sweep.ladder(args.start_deliveries, 2.0, args.max_deliveries, 12)
    with server(name) as (pid, port, dialect, greeting):

        def run(target: float) -> dict[str, Any] | None:
            cfg = RunConfig(port=port, dialect=dialect, greeting=greeting, receivers=n,
                            senders=args.senders, rate=max(1.0, target / n),
                            duration=args.duration, warmup=args.warmup, size=args.size,
                            drain=3.0, connect_timeout=60.0, engine=args.engine,
                            server_pids=(pid,))
            try:
                return run_once(cfg)
            except RunError as exc:
                console.print(f"  [red]{name} N={n}: {exc}[/red]")
                return None

        def told(target: float, r: dict[str, Any], ok: bool, retrying: bool) -> None:
            console.print(
                f"  {name:<14} N={n:<5} offered {r['offered_rate']:>9,.0f} msgs/s -> "
                f"{r['deliveries_per_s']:>11,.0f} deliveries/s  lost {r['lost']:<7,} "
                f"reord {r['reorders']:<4} p99 {r['latency_ms']['p99']:8.2f} ms  "
                f"gen CPU {max(r['generator']['busy']):.0%}{report.server_cpu_note(r)} "
                f"{'ok' if ok else 'FAIL'}"
                + (" (p99 only: once more)" if retrying else ""))

        steps, retried = sweep.climb(run, targets, args.sweep_refine, args.p99_limit,
                                     retries=args.sweep_retries, report=told)
    best = sweep.highest_sustained(steps, args.p99_limit)
    return {
        "server": name, "receivers": n, "steps": steps, "retried": retried,
        "deliveries_per_s": best["deliveries_per_s"] if best else 0.0,
        "offered_rate": best["offered_rate"] if best else 0.0,
        "p99_ms": best["latency_ms"]["p99"] if best else None,
        "server_cpu_us_per_delivery": cpu_per_delivery(best) if best else None,
        "max_delivered_per_s": max((s["deliveries_per_s"] for s in steps), default=0.0),
        "generator_bottleneck": bool(best and best["generator"]["bottleneck"]),
        "first_failure": next(({"offered_rate": s["offered_rate"], "lost": s["lost"],
                                "reorders": s["reorders"], "corrupt": s["corrupt"],
                                "p99_ms": s["latency_ms"]["p99"], "errors": s["errors"]}
                               for s in sorted(steps, key=lambda s: float(s["offered_rate"]))
                               if not sweep.step_ok(s, args.p99_limit)), None),
    }


def cpu_per_delivery(run: dict[str, Any]) -> float | None:
    """The server's CPU µs per delivery in one run (None: not weighed; older results)."""
    us = (run.get("server_cpu") or {}).get("us_per_delivery")
    return None if us is None else float(us)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median p99, carrying every run's p50 and p99.

    One run's p99 on a shared machine swings 2-7x (ngIRCd: 9 ms, then 66 ms),
    so the table shows the median of several runs, interleaved across
    servers so that a noisy minute hits all of them, and the range.
    """
    ordered = sorted(runs, key=lambda r: float(r["latency_ms"]["p99"]))
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["p99_runs_ms"] = [r["latency_ms"]["p99"] for r in runs]
    chosen["p50_runs_ms"] = [r["latency_ms"]["p50"] for r in runs]
    chosen["pooled_ms"] = pooled_latency(runs)
    chosen["cpu_us_per_delivery_runs"] = [cpu_per_delivery(r) for r in runs]
    return chosen


def pooled_latency(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Percentiles over every delivery of all the runs together.

    The median run hides a server's bad runs (ngIRCd stalls 35-130 ms in some
    runs and not others); the pooled p99 counts each run's deliveries, so a
    stall weighs what it weighed in the traffic. The table shows both.
    """
    hists = [r["latency_hist"] for r in runs if r.get("latency_hist")]
    return histo.summary_ms(histo.merge_encoded(histo.new_histogram(), hists))


def latency_point(name: str, args: argparse.Namespace) -> dict[str, Any]:
    with server(name) as (pid, port, dialect, greeting):
        cfg = RunConfig(port=port, dialect=dialect, greeting=greeting, receivers=100,
                        senders=args.senders, rate=1000.0, duration=args.duration * 2,
                        warmup=args.warmup, size=args.size, engine=args.engine,
                        server_pids=(pid,))
        return run_once(cfg)


def saved_peak(name: str, out: Path) -> tuple[float, str] | None:
    """The server's N=100 sustained peak (msgs/s) in the newest saved results."""
    import json

    for path in sorted(out.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for p in saved.get("peaks", []) if isinstance(saved, dict) else []:
            if p.get("server") == name and p.get("receivers") == 100 and p.get("offered_rate"):
                return float(p["offered_rate"]), f"results/{path.name}"
    return None


def overload_peak(name: str, data: dict[str, Any],
                  args: argparse.Namespace) -> tuple[float, str] | None:
    """(msgs/s, where from) the overload step doubles: --overload-peak, this run's
    N=100 sweep, else the newest saved results; None when none is known."""
    if args.overload_peak:
        return args.overload_peak, "--overload-peak"
    for p in data["peaks"]:
        if p["server"] == name and p["receivers"] == 100 and p["offered_rate"]:
            return float(p["offered_rate"]), "this run's N=100 sweep"
    return saved_peak(name, Path(args.out))


def workload_point(name: str, wl: workloads.Workload, data: dict[str, Any],
                   args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """One workload against one server, started afresh for it."""
    e: dict[str, Any] = {"workload": wl.name, "server": name, "receivers": wl.receivers,
                         "senders": wl.senders, "rooms": wl.rooms}
    rate = wl.rate
    if wl.name == "overload":
        peak_at = overload_peak(name, data, args)
        if peak_at is None:
            e["skipped"] = "no N=100 peak measured (run the sweep, or pass --overload-peak)"
            return e
        e["peak_rate"], e["peak_source"] = peak_at
        rate = 2 * peak_at[0]
    big = wl.clients > 2000
    if wl.after_join and not name.startswith("chat-relay"):
        e["skipped"] = "issue 21's join-storm target is chat-relay's"
        return e
    try:
        with server(name) as (pid, port, dialect, greeting):
            if wl.needs_rooms and not greeting:
                e["skipped"] = "a bare-line server has no rooms"
                return e
            cfg = RunConfig(port=port, dialect=dialect, greeting=greeting,
                            receivers=wl.receivers, senders=wl.senders, rate=rate,
                            rooms=wl.rooms, duration=args.workload_duration,
                            warmup=args.warmup_workload, size=args.size,
                            drain=args.workload_drain, engine=args.engine,
                            concurrency=STORM_CONCURRENCY if wl.after_join
                            else 400 if big else 200,
                            connect_timeout=180.0 if big else 60.0, server_pids=(pid,),
                            after_join=wl.after_join or None)
            e["run"] = run_once(cfg)
    except RunError as exc:
        e["skipped"] = str(exc)
        console.print(f"  [red]{name} {wl.name}: {exc}[/red]")
        return e
    r = e["run"]
    console.print(f"  {wl.name:<9} {name:<14} {r['offered_rate']:>9,.0f} msgs/s -> "
                  f"{r['deliveries_per_s']:>11,.0f} deliveries/s  lost {r['lost']:<7,} "
                  f"cut {r['cut_receivers']:<5,} shed {r['shed']:<7,} "
                  f"p99 {_p99_text(workloads.timed_p99(r))}{report.server_cpu_note(r)}")
    return e


def _p99_text(p99: float | None) -> str:
    return "    none" if p99 is None else f"{p99:8.2f} ms"


def idle_point(count: int) -> dict[str, Any]:
    workers = os.cpu_count() or 1
    with banner_process(relay_cmd(workers)) as (pid, port):
        # 100 members a room: 20,000 in one room would measure the join-presence
        # storm (every join tells every member), not what an idle connection costs.
        cfg = RunConfig(port=port, dialect="native", concurrency=400, connect_timeout=120.0,
                        rooms=max(1, count // 100))
        return run_idle(cfg, count, 3.0, [pid])


def engine_of(data: dict[str, Any]) -> str:
    """Which chat-bench engine the runs used ("C" or "Python"; older results: Python)."""
    used = {step["generator"].get("engine", "python") for p in data["peaks"]
            for step in p["steps"]}
    used |= {r["generator"].get("engine", "python") for r in data["latency"].values()}
    used |= {e["run"]["generator"].get("engine", "python") for e in data.get("workloads", [])
             if "run" in e}
    return " and ".join("C" if e == "c" else "Python" for e in sorted(used)) or "Python"


def markdown(data: dict[str, Any]) -> str:
    env = data["environment"]
    peaks = data["peaks"]
    servers = list(dict.fromkeys([p["server"] for p in peaks] + list(data["latency"])))
    ns = sorted({p["receivers"] for p in peaks})
    # Results from before the server's CPU was weighed draw their old table.
    weighed = int(any(cpu_cell(lat) != "-" for lat in data["latency"].values()))
    explain = (
        "Deliveries/s: peak sustained (no loss, no reordering, p99 <= "
        f"{data['p99_limit_ms']:.0f} ms) / highest delivered in any step; "
        "`*` = load generator was the bottleneck at the sustained step. "
        if ns else ""
    )
    lines = [
        f"Machine: {env['cpu_model'] or env['machine']}, {env['cpu_count']} CPUs, "
        f"Python {env['python']}, {env['platform']}; {env['time']}.",
        f"Load generator: chat-bench with its {engine_of(data)} engine, sharing these CPUs "
        "with the servers (loopback).",
    ]
    # A run of workloads alone (--workload) has no sweep nor latency point.
    lines += [] if not servers else [
        "",
        explain + "At 1k msg/s to N=100: p50 is the median over the runs; p99 is the median "
        "run (the range over all runs, interleaved across servers; then the p99 over all "
        "the runs' deliveries together)"
        + (". CPU µs/delivery: the server's whole process tree (utime + stime from /proc) "
           "over the timed phase, per delivery in it; median of the runs at 1k msg/s:"
           if weighed else ":"),
        "",
        "| " + " | ".join(["server"] + [f"N={n}" for n in ns]
                         + ["p50 at 1k msg/s", "p99 at 1k msg/s, N=100"]
                         + ["CPU µs/delivery"] * weighed) + " |",
        "|---" * (len(ns) + 3 + weighed) + "|",
    ]
    for s in servers:
        cells = []
        for n in ns:
            hit = [p for p in peaks if p["server"] == s and p["receivers"] == n]
            if not hit:
                cells.append("-")
                continue
            p = hit[0]
            star = "*" if p["generator_bottleneck"] else ""
            cells.append(f"{p['deliveries_per_s'] / 1e3:,.0f}k{star} / "
                         f"{p['max_delivered_per_s'] / 1e3:,.0f}k")
        lat = data["latency"].get(s)
        p50_cell = lat_cell = "-"
        if lat:
            p50 = statistics.median_low(lat.get("p50_runs_ms") or [lat["latency_ms"]["p50"]])
            p50_cell = f"{p50:.2f} ms"
            lat_cell = f"{lat['latency_ms']['p99']:.1f} ms"
            spread = lat.get("p99_runs_ms", [])
            if len(spread) > 1:
                lat_cell += f" ({min(spread):.1f}-{max(spread):.1f})"
            pooled = lat.get("pooled_ms", {}).get("p99")
            if pooled and len(spread) > 1:
                lat_cell += f"; all runs {pooled:.1f} ms"
        cpu = [cpu_cell(lat)] if weighed else []
        lines.append("| " + " | ".join([s, *cells, p50_cell, lat_cell, *cpu]) + " |")
    for p in peaks:
        f = p.get("first_failure")
        if f:
            lines.append(f"- {p['server']} N={p['receivers']}: first failing step "
                         f"{f['offered_rate']:,.0f} msgs/s: lost {f['lost']:,}, "
                         f"reordered {f['reorders']:,}, corrupt {f['corrupt']:,}, "
                         f"p99 {f['p99_ms']:.1f} ms")
    at_peak = peak_cpu_line(peaks, servers, ns)
    if at_peak:
        lines.append(at_peak)
    lags = {s: lat["generator"]["send_lag_ms"]["p99"] for s, lat in data["latency"].items()
            if lat.get("generator", {}).get("send_lag_ms", {}).get("count")}
    if lags:
        lines.append("- the load generator's own send lag p99 at 1k msg/s (median run; it is "
                     "part of the latency above): "
                     + ", ".join(f"{s} {ms:.1f} ms" for s, ms in lags.items()) + ".")
    floors = [s for s in servers if s == "floor" or s.startswith("floor-w")]
    if floors:
        lines.append(f"- {', '.join(floors)}: chat-relay's design with nothing on top "
                     "(`baselines/floor_relay.py`: a reader thread per client, the bus "
                     "thread, a zmq hub, no features), at the latency point only: what "
                     "the design's hops alone cost.")
    loops = [s for s in servers if s.startswith(("floor-loop", "floor-nohub"))]
    if loops:
        lines.append(f"- {', '.join(loops)}: the same floor with one event loop per worker "
                     "instead of threads (`baselines/floor_loop_relay.py`; nohub: no hub "
                     "hop either): what the threading shape costs.")
    for s, why in data.get("skipped", {}).items():
        lines.append(f"\n{s} skipped: {why}")
    lines += workloads.markdown(data)
    idle = data.get("idle")
    if idle and idle.get("connect"):
        per = idle.get("rss_per_connection")
        lines.append(
            f"\nIdle: {idle['connect']['connected']:,} connections held "
            f"({idle['connect']['failed']:,} failed), {idle['connect']['rate_per_s']:,.0f} "
            "connects/s" + (f", relay RSS {per / 1024:,.1f} KiB per connection" if per else "")
            + (f"; all dropped at once, the relay was back to idle in {idle['release_s']:.1f} s."
               if idle.get("release_s") is not None else "."))
    return "\n".join(lines) + "\n"


def cpu_cell(lat: dict[str, Any] | None) -> str:
    """Median over the latency runs of the server's CPU µs per delivery ("-": not weighed)."""
    known = [us for us in (lat or {}).get("cpu_us_per_delivery_runs", []) if us is not None]
    return f"{statistics.median_low(known):.1f}" if known else "-"


def peak_cpu_line(peaks: list[dict[str, Any]], servers: list[str], ns: list[int]) -> str:
    """One line: each server's CPU µs per delivery at its sustained peak, per N."""
    parts = []
    for s in servers:
        cells = []
        for n in ns:
            us = next((p.get("server_cpu_us_per_delivery") for p in peaks
                       if p["server"] == s and p["receivers"] == n), None)
            cells.append("-" if us is None else f"{us:.2f}")
        if any(c != "-" for c in cells):
            parts.append(f"{s} {' / '.join(cells)}")
    if not parts:
        return ""
    return (f"- server CPU µs per delivery at the sustained peak, N={' / '.join(map(str, ns))}: "
            + ", ".join(parts) + ".")


def result_stamp(out: Path, suffix: str, now: time.struct_time | None = None) -> str:
    """The results' file name: the date, and the time too if the day has one already.

    A partial run (`suffix`: "-latency", "-workloads") gets its own name, so it
    never replaces the day's full results, and a second run on one day never
    replaces the first (the README links to them).
    """
    now = now or time.localtime()
    stamp = time.strftime("%Y-%m-%d", now) + suffix
    if (out / f"{stamp}.json").exists():
        stamp = time.strftime("%Y-%m-%d-%H%M", now) + suffix
    return stamp


def write_results(data: dict[str, Any], out: Path, stamp: str) -> None:
    """Full results to raw/ (out of git), their summary beside the table."""
    (out / RAW).mkdir(parents=True, exist_ok=True)
    report.write_json(str(out / RAW / f"{stamp}.json"), data)
    (out / f"{stamp}.json").write_text(compact.dumps(compact.summary(data)), encoding="utf-8")


def write_outputs(data: dict[str, Any], out: Path, stamp: str, console: Console) -> None:
    """The markdown table (dated; latest.md too for a full run) and one PNG in
    `out`; the sweep plot goes to raw/ with the full results (both out of git:
    `--render` draws it again from the summary)."""
    md = markdown(data)
    (out / f"{stamp}.md").write_text(md, encoding="utf-8")
    if data["peaks"]:  # a latency-only run must not replace the full suite's table
        (out / "latest.md").write_text(md, encoding="utf-8")
    cpus = data["environment"]["cpu_count"]
    if plot.available() and data["peaks"]:
        plot.bars_png(data["peaks"], str(out / f"{stamp}-peak.png"),
                      f"peak sustained deliveries/s ({cpus} CPUs, loopback)")
        series = {p["server"]: p["steps"] for p in data["peaks"] if p["receivers"] == 100}
        if series:
            (out / RAW).mkdir(exist_ok=True)
            plot.sweep_png(series, str(out / RAW / f"{stamp}-sweep-n100.png"),
                           "latency and delivered rate vs offered load, N=100")
    console.print(md)
    console.print(f"results in {out}/{stamp}.*")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__)
    ap.add_argument("--servers", default="chat-relay-w1,chat-relay-w{cpus},seed,ngircd")
    ap.add_argument("--latency-also", default="floor-w{cpus}",
                    help="servers measured at the latency point only (default: the design "
                         "floor, baselines/floor_relay.py, with the CPU count of workers)")
    ap.add_argument("--receivers", default="10,100,1000",
                    help='room sizes of the peak sweeps ("": skip them, latency point only)')
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--start-deliveries", type=float, default=25_000)
    ap.add_argument("--max-deliveries", type=float, default=4_000_000)
    ap.add_argument("--p99-limit", type=float, default=100.0)
    ap.add_argument("--engine", choices=("auto", "c", "python"), default="auto",
                    help="chat-bench's engine for the timed phase (see chat-bench --help)")
    ap.add_argument("--sweep-refine", type=int, default=3, metavar="K",
                    help="bisect K steps after the first failure (x2 ladder: peak to 9%%)")
    ap.add_argument("--sweep-retries", type=int, default=1, metavar="K",
                    help="runs again of the first step that failed on p99 alone, before it "
                         "counts as failed (default 1: a neighbour's burst is not capacity)")
    ap.add_argument("--latency-runs", type=int, default=5,
                    help="runs of the 1,000 msgs/s latency point per server (median shown)")
    ap.add_argument("--idle", type=int, default=20_000, help="idle connections (0: skip)")
    ap.add_argument("--workloads",
                    help="workloads run after the latency point, by name, comma-separated "
                         f"({', '.join(workloads.BY_NAME)}; \"all\"; \"\": none; default: "
                         "all, none when --receivers is \"\")")
    ap.add_argument("--workload", action="append", metavar="NAME",
                    help="run only this workload (repeat, or comma-separate; \"all\"): no "
                         "sweep, latency point or idle test; writes results/<date>-workloads.*")
    ap.add_argument("--quick", action="store_true",
                    help="workloads at a tiny scale (a few clients, 1 s timed): for tests")
    ap.add_argument("--workload-duration", type=float, default=5.0,
                    help="timed seconds of each workload run (default 5; --quick: 1)")
    ap.add_argument("--warmup-workload", type=float, default=1.0,
                    help="warm-up seconds of each workload run (default 1; --quick: 0.2)")
    ap.add_argument("--workload-drain", type=float, default=5.0,
                    help="seconds a workload run waits for stragglers (default 5; --quick: 2)")
    ap.add_argument("--overload-peak", type=float, default=0.0, metavar="MSGS",
                    help="msgs/s the overload step doubles, for every server (default: each "
                         "server's N=100 peak in this run, else in the newest saved results)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--render", metavar="FILE.json",
                    help="only rewrite the table and plots from a saved results file")
    args = ap.parse_args(argv)
    if args.render:
        import json

        saved = compact.expand(json.loads(Path(args.render).read_text(encoding="utf-8")))
        write_outputs(saved, Path(args.out), Path(args.render).stem, Console())
        return 0
    alone = bool(args.workload)
    if alone:  # one workload (or a few) by itself
        args.workloads = ",".join(args.workload)
        args.receivers, args.idle = "", 0
    if args.quick:
        args.workload_duration, args.warmup_workload, args.workload_drain = 1.0, 0.2, 2.0
    if args.workloads is None:  # a latency-only run stays one
        args.workloads = "all" if args.receivers else ""
    try:
        todo = workloads.chosen(args.workloads, args.quick)
    except ValueError as exc:
        ap.error(str(exc))
    console = Console()
    cpus = os.cpu_count() or 1
    names = [s.format(cpus=cpus) for s in args.servers.split(",") if s]
    names = list(dict.fromkeys(names))
    also = [s.format(cpus=cpus) for s in args.latency_also.split(",") if s]
    latency_names = list(dict.fromkeys(names + also))
    ns = [int(n) for n in args.receivers.split(",") if n]  # "": the latency point only
    data: dict[str, Any] = {"environment": report.environment(), "params": vars(args),
                            "p99_limit_ms": args.p99_limit, "peaks": [], "latency": {},
                            "skipped": {}}
    for name in names:
        console.rule(name)
        try:
            for n in ns:
                data["peaks"].append(peak(name, n, args, console))
        except RunError as exc:
            console.print(f"[yellow]{name} skipped: {exc}[/yellow]")
            data["skipped"][name] = str(exc)
    runs: dict[str, list[dict[str, Any]]] = {}
    rounds = 0 if alone else max(1, args.latency_runs)
    if rounds:
        console.rule(f"latency at 1,000 msgs/s, N=100, {rounds} run(s) each, interleaved")
    for _ in range(rounds):
        for name in latency_names:
            if name in data["skipped"]:
                continue
            try:
                r = latency_point(name, args)
            except RunError as exc:
                console.print(f"[yellow]{name}: {exc}[/yellow]")
                continue
            runs.setdefault(name, []).append(r)
            lat = r["latency_ms"]
            console.print(f"  {name:<14} p50 {lat['p50']:6.2f} ms  p99 {lat['p99']:6.2f} ms"
                          + report.server_cpu_note(r))
    data["latency"] = {name: median_run(rs) for name, rs in runs.items()}
    data["workloads"] = []
    for wl in todo:
        console.rule(f"workload {wl.name}: {wl.clients:,} clients")
        for name in names:
            if name not in data["skipped"]:
                data["workloads"].append(workload_point(name, wl, data, args, console))
    data["targets"] = workloads.targets(data) if data["workloads"] or not alone else []
    if args.idle:
        console.rule(f"idle x{args.idle}")
        try:
            data["idle"] = idle_point(args.idle)
        except RunError as exc:
            data["idle"] = {"error": str(exc)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = result_stamp(out, "-workloads" if alone else "" if ns else "-latency")
    write_results(data, out, stamp)
    write_outputs(data, out, stamp, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
