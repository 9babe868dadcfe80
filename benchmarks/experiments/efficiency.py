"""Server CPU per delivery: what each server would carry with a core to itself.

On a 2-core machine the Python load generator competes with the server for
CPU, so deliveries/s at the knee mostly measures the generator. This suite
offers every server the same moderate load (one room, N receivers, 4 senders,
100-byte messages), checks that nothing is lost, and divides the deliveries by
the CPU-seconds the server's own process tree spent (/proc, the whole run:
connects, warm-up, drain included, so the figure is conservative).

    python -m benchmarks.experiments.efficiency [--servers ...] [--deliveries 50000]

Writes benchmarks/results/efficiency-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.proctree import tree_cpu
from benchmarks.runner import RunConfig, run_once
from benchmarks.suite import RESULTS, server

SERVERS = "chat-relay-w1,chat-relay-w2,seed,ngircd"


def run_weighed(cfg: RunConfig, pids: list[int]) -> tuple[dict[str, Any], list[float], float]:
    """One run, with the CPU-seconds each process tree in `pids` spent during it
    (connects, warm-up and drain included) and the run's wall time."""
    cpu0, t0 = [tree_cpu([pid]) for pid in pids], time.monotonic()
    result = run_once(cfg)
    cpu = [tree_cpu([pid]) - before for pid, before in zip(pids, cpu0, strict=True)]
    return result, cpu, time.monotonic() - t0


def measure(name: str, n: int, deliveries: float, duration: float) -> dict[str, Any]:
    with server(name) as (pid, port, dialect, greeting):
        cfg = RunConfig(port=port, dialect=dialect, greeting=greeting, receivers=n, senders=4,
                        rate=max(1.0, deliveries / n), duration=duration, warmup=1.0,
                        size=100, drain=5.0)
        result, [cpu], wall = run_weighed(cfg, [pid])
    delivered = int(result["delivered"])
    return {
        "server": name, "receivers": n, "offered_deliveries_per_s": deliveries,
        "delivered": delivered, "lost": result["lost"], "reorders": result["reorders"],
        "corrupt": result["corrupt"], "server_cpu_s": cpu, "wall_s": wall,
        "deliveries_per_cpu_s": delivered / cpu if cpu > 0 else None,
        "p99_ms": result["latency_ms"]["p99"], "loadavg": os.getloadavg()[0],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| server | N | delivered | lost | server CPU s | deliveries per CPU-second "
             "| p99 ms |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        per = r["deliveries_per_cpu_s"]
        lines.append(f"| {r['server']} | {r['receivers']} | {r['delivered']:,} | {r['lost']:,} | "
                     f"{r['server_cpu_s']:.2f} | {per / 1e6:.2f} M | {r['p99_ms']:.1f} |"
                     if per else f"| {r['server']} | {r['receivers']} | - | - | - | - | - |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default=SERVERS)
    ap.add_argument("--receivers", default="100,1000")
    ap.add_argument("--deliveries", type=float, default=50_000.0,
                    help="offered deliveries/s (rate = this / N)")
    ap.add_argument("--duration", type=float, default=5.0)
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.receivers.split(",")):
        for name in args.servers.split(","):
            try:
                row = measure(name, n, args.deliveries, args.duration)
            except Exception as exc:  # a missing ngircd must not lose the other rows
                print(f"{name} N={n}: {exc}")
                continue
            rows.append(row)
            print(f"{name:>14} N={n:<5} delivered {row['delivered']:>9,} lost {row['lost']:>6,}"
                  f"  CPU {row['server_cpu_s']:6.2f} s  "
                  f"{(row['deliveries_per_cpu_s'] or 0) / 1e6:5.2f} M deliveries/CPU-s"
                  f"  p99 {row['p99_ms']:.1f} ms", flush=True)
    stamp = time.strftime("%Y-%m-%d")
    Path(RESULTS).mkdir(parents=True, exist_ok=True)
    (Path(RESULTS) / f"efficiency-{stamp}.json").write_text(json.dumps(
        {"args": vars(args), "cpus": os.cpu_count(), "rows": rows}, indent=2))
    (Path(RESULTS) / f"efficiency-{stamp}.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
