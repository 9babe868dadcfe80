"""Does a server's tail follow the machine's load? The latency point beside a CPU hog.

On the project's 2-CPU machines the load generator shares the CPUs with the
server, and at 1,000 msgs/s to 100 members chat-relay uses about twice
ngIRCd's CPU. So when chat-relay's p99 is longer than ngIRCd's, part of the
gap may be the design's hops and part only that the machine is busier while
chat-relay runs. This tool separates the two: it runs the suite's latency
point (N receivers in one room, 4 senders, 1,000 msgs/s) against each server
as it is, and against the servers named in --hogged with a busy-loop process
beside them taking --hog-share of one CPU, so that the machine is as busy as
it is under chat-relay. Runs are interleaved, a round of every case at a
time, so a noisy minute hits them all.

    python -m benchmarks.experiments.contention [--runs 8] [--hog-share 0.6]

Writes benchmarks/results/contention-<date>.{json,md}. Every server and hog
is started here and stopped here, by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.experiments.efficiency import run_weighed
from benchmarks.runner import RunConfig
from benchmarks.suite import RESULTS, pooled_latency, server

HOG_PERIOD = 0.001  # one spin-and-nap cycle: short, so the hog wants a CPU often


@dataclass(frozen=True)
class Case:
    server: str
    hog_share: float  # 0: the server alone

    @property
    def label(self) -> str:
        return f"{self.server} + hog {self.hog_share:.0%}" if self.hog_share else self.server


def duty(share: float, period: float = HOG_PERIOD) -> tuple[float, float]:
    """(spin, nap) seconds of a cycle in which a hog takes `share` of one CPU."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"hog share must be between 0 and 1, not {share}")
    return share * period, (1.0 - share) * period


def hog(share: float) -> None:
    """Nap, then spin until this process has had `share` of the time since it
    began (`-m benchmarks.experiments.contention --hog S`): a sleep overshoots by tens of
    us, so fixed spins would fall short of the share; this one keeps to it."""
    _spin, nap = duty(share)
    clock, cpu = time.perf_counter, time.process_time
    t0, c0 = clock(), cpu()
    while True:
        time.sleep(nap)
        while cpu() - c0 < share * (clock() - t0):
            pass


def measure(case: Case, args: argparse.Namespace) -> dict[str, Any]:
    """One latency-point run, with the CPU that the server, generator and hog used."""
    with server(case.server) as (pid, port, dialect, greeting):
        hog_proc = None
        if case.hog_share:
            hog_proc = subprocess.Popen([sys.executable, "-m", "benchmarks.experiments.contention",
                                         "--hog", str(case.hog_share)])
        try:
            cfg = RunConfig(port=port, dialect=dialect, greeting=greeting,
                            receivers=args.receivers, senders=args.senders, rate=args.rate,
                            duration=args.duration, warmup=args.warmup, size=100,
                            engine=args.engine)
            result, cpu, wall = run_weighed(cfg, [pid] + ([hog_proc.pid] if hog_proc else []))
            server_cpu = cpu[0] / wall
            hog_cpu = cpu[1] / wall if hog_proc else 0.0
        finally:
            if hog_proc is not None:
                hog_proc.kill()
                hog_proc.wait()
    gen = result["generator"]
    return {
        "case": case.label, "server": case.server, "hog_share": case.hog_share,
        "p50_ms": result["latency_ms"]["p50"], "p99_ms": result["latency_ms"]["p99"],
        "lost": result["lost"], "reorders": result["reorders"],
        # CPU as a share of one CPU over the whole run (connects and drain too),
        # the generator's over its timed phase.
        "server_cpu": round(server_cpu, 3), "hog_cpu": round(hog_cpu, 3),
        "generator_cpu": round(sum(gen["busy"]), 3),
        "send_lag_p99_ms": gen.get("send_lag_ms", {}).get("p99"),
        "latency_hist": result.get("latency_hist"),
    }


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case, in first-seen order: medians over its runs and the pooled p99."""
    cases = list(dict.fromkeys(r["case"] for r in runs))
    rows = []
    for case in cases:
        mine = [r for r in runs if r["case"] == case]
        p99s = [float(r["p99_ms"]) for r in mine]
        cpu = [r["server_cpu"] + r["generator_cpu"] + r["hog_cpu"] for r in mine]
        pooled = pooled_latency([{"latency_hist": r["latency_hist"]} for r in mine])
        rows.append({
            "case": case, "runs": len(mine),
            "p50_ms": statistics.median(float(r["p50_ms"]) for r in mine),
            "p99_ms": statistics.median(p99s), "p99_min_ms": min(p99s),
            "p99_max_ms": max(p99s), "pooled_p99_ms": pooled.get("p99"),
            "lost": sum(int(r["lost"]) for r in mine),
            "server_cpu": statistics.median(r["server_cpu"] for r in mine),
            "generator_cpu": statistics.median(r["generator_cpu"] for r in mine),
            "hog_cpu": statistics.median(r["hog_cpu"] for r in mine),
            "total_cpu": statistics.median(cpu),
            "send_lag_p99_ms": _median_known([r.get("send_lag_p99_ms") for r in mine]),
        })
    return rows


def _median_known(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def markdown(rows: list[dict[str, Any]], cpus: int, when: str = "") -> str:
    lines = [f"Latency point beside a CPU hog ({cpus} CPUs{', ' + when if when else ''}; "
             "medians over the runs; CPU in CPUs: server, load generator, hog, and their "
             "sum):", "",
             "| case | runs | p50 ms | p99 ms (range) | p99 all runs | generator's send lag p99 "
             "| lost | server | generator | hog | sum |", "|---" * 11 + "|"]
    for r in rows:
        pooled = f"{r['pooled_p99_ms']:.1f}" if r["pooled_p99_ms"] is not None else "-"
        lag = r.get("send_lag_p99_ms")
        lag_cell = f"{lag:.1f}" if lag is not None else "-"
        lines.append(
            f"| {r['case']} | {r['runs']} | {r['p50_ms']:.2f} | {r['p99_ms']:.1f} "
            f"({r['p99_min_ms']:.1f}-{r['p99_max_ms']:.1f}) | {pooled} | {lag_cell} | "
            f"{r['lost']:,} | "
            f"{r['server_cpu']:.2f} | {r['generator_cpu']:.2f} | {r['hog_cpu']:.2f} | "
            f"{r['total_cpu']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.experiments.contention",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default=f"chat-relay-w{os.cpu_count() or 1},ngircd",
                    help="servers measured as they are")
    ap.add_argument("--hogged", default="ngircd",
                    help="servers measured again with the hog beside them")
    ap.add_argument("--hog-share", type=float, default=0.6,
                    help="the hog's share of one CPU (default 0.6: what chat-relay uses "
                         "beyond ngIRCd at this point on 2 CPUs)")
    ap.add_argument("--runs", type=int, default=8, help="interleaved rounds")
    ap.add_argument("--receivers", type=int, default=100)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--rate", type=float, default=1000.0, help="msgs/s offered")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--engine", choices=("auto", "c", "python"), default="auto")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--hog", type=float, help=argparse.SUPPRESS)  # run as the hog itself
    args = ap.parse_args(argv)
    if args.hog is not None:
        hog(args.hog)
        return 0
    duty(args.hog_share)  # refuse a bad share before starting anything
    cases = [Case(s, 0.0) for s in args.servers.split(",") if s]
    cases += [Case(s, args.hog_share) for s in args.hogged.split(",") if s]
    runs: list[dict[str, Any]] = []
    for k in range(args.runs):
        for case in cases:
            run = measure(case, args)
            runs.append(run)
            print(f"[{k + 1}/{args.runs}] {case.label:<24} p50 {run['p50_ms']:6.2f} ms  "
                  f"p99 {run['p99_ms']:6.1f} ms  send lag p99 "
                  f"{run['send_lag_p99_ms'] or 0:5.1f} ms  lost {run['lost']:<5} CPU server "
                  f"{run['server_cpu']:.2f} generator {run['generator_cpu']:.2f} "
                  f"hog {run['hog_cpu']:.2f}", flush=True)
    rows = summarize(runs)
    cpus = os.cpu_count() or 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = "contention-" + time.strftime("%Y-%m-%d")
    if (out / f"{stamp}.json").exists():  # never replace a run the docs may cite
        stamp = "contention-" + time.strftime("%Y-%m-%d-%H%M")
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    md = markdown(rows, cpus, when)
    (out / f"{stamp}.json").write_text(json.dumps(
        {"args": vars(args), "cpus": cpus, "time": when,
         "rows": rows, "runs": [{k: v for k, v in r.items() if k != "latency_hist"}
                                for r in runs]}, indent=2), encoding="utf-8")
    (out / f"{stamp}.md").write_text(md, encoding="utf-8")
    print(md)
    print(f"results in {out}/{stamp}.*")
    return 0


if __name__ == "__main__":
    sys.exit(main())
