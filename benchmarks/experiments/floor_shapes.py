"""Threads or one loop per worker? The design floor's two shapes, measured side by side.

Issue 21 asks for the CPU per delivery at 1,000 msgs/s to 100 members within
1.5x ngIRCd's and an N=10 peak at least ngIRCd's, or the breakdown that
proves the design's shape cannot. This tool measures the floor with a
thread per client (`baselines/floor_relay.py`), the floor with one epoll
loop per worker (`baselines/floor_loop_relay.py`), the loop without the hub
hop (`--no-hub`) and ngIRCd, with the suite's own tools:

- the latency point (N=100, 4 senders, 1,000 msgs/s), rounds interleaved
  across servers: CPU µs per delivery (chat-bench's whole-tree figure), p50,
  p99, and during a window inside the timed phase each thread's CPU from
  /proc/PID/task/*/stat, named by its role (hub, worker main/loop, bus
  thread, readers, zmq I/O threads);
- one more run each under `perf stat --per-thread` with syscall tracepoints:
  syscalls and context switches per delivery, by thread kind;
- the N=10 peak sustained, found as the suite finds it (`suite.peak`).

    python -m benchmarks.experiments.floor_shapes [--rounds 5] [--peak-rounds 3] [--skip-peaks]

Writes benchmarks/results/raw/floor-shapes-<time>.json (git ignores it) as
it goes; the summary is written by hand from it. Every server is started and
stopped here, by its PID (suite.server).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks import proctree, suite
from benchmarks.runner import RunConfig, run_once

SERVERS = ("floor-w1,floor-w2,floor-loop-w1,floor-loop-w2,floor-nohub-w1,floor-nohub-w2,"
           "ngircd")
SYSCALLS = ("sendto", "recvfrom", "read", "write", "poll", "epoll_wait", "epoll_ctl", "getpid",
            "futex", "accept4")
EVENTS = [f"syscalls:sys_enter_{s}" for s in SYSCALLS] + ["raw_syscalls:sys_enter",
                                                           "context-switches"]
WINDOW = 3.0  # seconds sampled inside the timed phase


def established(port: int) -> int:
    """Connections to `port` on this host (ESTABLISHED, server side)."""
    want = f":{port:04X}"
    count = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(name).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        count += sum(1 for r in rows if r.split()[1].endswith(want) and r.split()[3] == "01")
    return count


def kinds(root: int, has_hub: bool) -> dict[int, tuple[int, str]]:
    """{tid: (pid, role)} for every thread of the server's tree.

    Python threads carry their process's name, so the roles come from order:
    the hub is the first child forked (when there is one); in a threaded
    worker the bus thread starts before any reader (and before libzmq's own
    threads, named ZMQbg/*), so it is the lowest non-main tid.
    """
    pids = proctree.tree([root])
    children = sorted(p for p in pids if p != root)
    out: dict[int, tuple[int, str]] = {}
    for pid in pids:
        proc = ("supervisor" if pid == root and children else
                "hub" if has_hub and children and pid == children[0] else "worker")
        try:
            tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
        plain = []
        for tid in tids:
            try:
                comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith("ZMQbg"):
                out[tid] = pid, f"{proc} zmq I/O"
            elif tid == pid:
                out[tid] = pid, f"{proc} main"
            else:
                plain.append(tid)
        for i, tid in enumerate(plain):
            out[tid] = pid, f"{proc} bus thread" if i == 0 else f"{proc} readers"
    return out


def thread_ticks(tids: dict[int, tuple[int, str]]) -> dict[int, int]:
    """CPU ticks (utime + stime) of each thread, from /proc/PID/task/TID/stat
    (/proc/TID/stat of a thread would give its whole process)."""
    out = {}
    for tid, (pid, _kind) in tids.items():
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat")
            text = stat.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        out[tid] = int(fields[11]) + int(fields[12])
    return out


def perf_counts(output: str, tids: dict[int, tuple[int, str]]) -> dict[str, dict[str, int]]:
    """perf stat -x, --per-thread output -> {thread kind: {event: count}}."""
    out: dict[str, dict[str, int]] = {}
    for line in output.splitlines():
        parts = line.split(",")
        if len(parts) < 4 or "-" not in parts[0] or not parts[1].isdigit():
            continue
        tid = int(parts[0].rsplit("-", 1)[1])
        kind = tids.get(tid, (0, "other"))[1]
        ev = parts[3].split(":")[-1].replace("sys_enter_", "")
        out.setdefault(kind, {})
        out[kind][ev] = out[kind].get(ev, 0) + int(parts[1])
    return out


def running() -> float:
    """Runnable tasks on the machine right now (/proc/stat procs_running, less this one)."""
    for line in Path("/proc/stat").read_text(encoding="ascii").splitlines():
        if line.startswith("procs_running"):
            return float(line.split()[1]) - 1
    return 0.0


def wait_calm(limit: float, most: float) -> float:
    """Wait (at most `most` s) until the machine's runnable tasks, averaged over
    1 s, are below `limit`: the box is shared, and a neighbour's storm (load 500
    was seen) measures the neighbour. Returns the last average."""
    deadline = time.monotonic() + most
    while True:
        total = 0.0
        for _ in range(10):
            total += running()
            time.sleep(0.1)
        avg = total / 10
        if avg < limit or time.monotonic() > deadline:
            return avg


def latency_run(name: str, with_perf: bool) -> dict[str, Any]:
    """One run of the latency point, with a per-thread (or perf) window inside it."""
    has_hub = name.startswith("floor") and not name.startswith("floor-nohub")
    with suite.server(name) as (pid, port, dialect, greeting):
        cfg = RunConfig(port=port, dialect=dialect, greeting=greeting, receivers=100, senders=4,
                        rate=1000.0, duration=WINDOW + 2.0, warmup=0.5, size=100,
                        server_pids=(pid,))
        box: dict[str, Any] = {}
        t = threading.Thread(target=lambda: box.update(result=run_once(cfg)), daemon=True)
        load0 = os.getloadavg()[0]
        t.start()
        deadline = time.monotonic() + 60
        while established(port) < 104 and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.05)
        time.sleep(0.5 + 0.75)  # warm-up, then into the timed phase
        tids = kinds(pid, has_hub)
        window: dict[str, Any] = {}
        if with_perf:
            pids = ",".join(str(p) for p in proctree.tree([pid]))
            perf = subprocess.run(
                ["perf", "stat", "-x,", "--per-thread", "-e", ",".join(EVENTS), "-p", pids,
                 "--", "sleep", str(WINDOW)], capture_output=True, text=True, timeout=60)
            window["perf"] = perf_counts(perf.stderr, tids)
        else:
            t0, c0 = time.monotonic(), thread_ticks(tids)
            time.sleep(WINDOW)
            t1, c1 = time.monotonic(), thread_ticks(tids)
            by: dict[str, float] = {}
            for tid, (_pid, kind) in tids.items():
                if tid in c0 and tid in c1:
                    by[kind] = by.get(kind, 0.0) + (c1[tid] - c0[tid]) / proctree.TICKS
            window.update(seconds=t1 - t0, cpu_s=by)
        t.join(120)
    r = box["result"]
    return {"server": name, "load": [load0, os.getloadavg()[0]], "perf": with_perf,
            "us_per_delivery": (r.get("server_cpu") or {}).get("us_per_delivery"),
            "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
            "deliveries_per_s": r["deliveries_per_s"], "lost": r["lost"],
            "reorders": r["reorders"], "window": window,
            "threads": len(tids), "generator_busy": max(r["generator"]["busy"])}


def peak_run(name: str, console: Console) -> dict[str, Any]:
    """The N=10 sustained peak, as `make bench` finds it (start 100k deliveries/s)."""
    args = argparse.Namespace(senders=4, duration=2.0, warmup=0.5, size=100, engine="auto",
                              start_deliveries=100_000.0, max_deliveries=4_000_000.0,
                              sweep_refine=3, p99_limit=100.0, sweep_retries=1)
    load0 = os.getloadavg()[0]
    p = suite.peak(name, 10, args, console)
    return {"server": name, "load": [load0, os.getloadavg()[0]],
            "deliveries_per_s": p["deliveries_per_s"], "p99_ms": p["p99_ms"],
            "us_per_delivery": p["server_cpu_us_per_delivery"],
            "max_delivered_per_s": p["max_delivered_per_s"],
            "generator_bottleneck": p["generator_bottleneck"], "first_failure": p["first_failure"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", default=SERVERS)
    ap.add_argument("--rounds", type=int, default=5, help="latency-point runs per server")
    ap.add_argument("--peak-rounds", type=int, default=3, help="N=10 sweeps per server")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-perf", action="store_true")
    ap.add_argument("--skip-peaks", action="store_true")
    ap.add_argument("--calm", type=float, default=2.0,
                    help="start a point only when fewer tasks than this are runnable")
    ap.add_argument("--calm-wait", type=float, default=240.0,
                    help="seconds to wait for calm before measuring anyway")
    ap.add_argument("--out", default=str(suite.RESULTS / "raw"))
    args = ap.parse_args(argv)
    servers = [s for s in args.servers.split(",") if s]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / time.strftime("floor-shapes-%Y-%m-%d-%H%M.json", time.gmtime())
    console = Console()
    data: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                            "cpus": os.cpu_count(), "latency": [], "perf": [], "peaks": []}

    def save() -> None:
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")

    for rnd in range(args.rounds if not args.skip_latency else 0):
        for name in servers:
            calm = wait_calm(args.calm, args.calm_wait)
            row = latency_run(name, with_perf=False)
            row["runnable_before"] = calm
            data["latency"].append(row)
            save()
            console.print(f"latency r{rnd} {name:<15} {row['us_per_delivery'] or 0:5.2f} us/deliv "
                          f"p50 {row['p50_ms']:.2f} p99 {row['p99_ms']:.2f} ms lost {row['lost']} "
                          f"load {row['load'][0]:.1f} runnable {calm:.1f}")
    for name in servers if not args.skip_perf else []:
        calm = wait_calm(args.calm, args.calm_wait)
        row = latency_run(name, with_perf=True)
        row["runnable_before"] = calm
        data["perf"].append(row)
        save()
        console.print(f"perf {name}: {row['window']['perf']}")
    for rnd in range(args.peak_rounds if not args.skip_peaks else 0):
        for name in servers:
            calm = wait_calm(args.calm, args.calm_wait)
            row = peak_run(name, console)
            row["runnable_before"] = calm
            data["peaks"].append(row)
            save()
            console.print(f"peak r{rnd} {name:<15} {row['deliveries_per_s']:,.0f} deliv/s "
                          f"load {row['load'][0]:.1f} runnable {calm:.1f}")
    data["ended"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    save()
    console.print(f"results in {path}")


if __name__ == "__main__":
    main()
