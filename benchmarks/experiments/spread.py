"""chat-bench with its load processes spread over several relay hosts' ports.

chat-bench targets one HOST PORT. A relay of several hosts (`--engine redis`,
`--hub tcp://`) is loaded honestly only when senders and receivers sit on
every host, so each message crosses hosts. This runs chat-bench unchanged,
except that load process p connects to port PORTS[p % len(PORTS)]; every
process holds receivers and senders of every room (chat-bench deals them
round-robin), so with `-p` a multiple of the ports each host gets an equal
share of both.

    python -m benchmarks.experiments.spread 7001,7002,7003 -- 127.0.0.1 7001 -p 3 -n 300 ...
"""

from __future__ import annotations

import sys
from dataclasses import replace

from benchmarks import runner
from benchmarks.cli import main as bench_main
from benchmarks.loadproc import ProcPlan


def spread(ports: list[int]) -> None:
    """Make chat-bench's planner put load process p on ports[p % len(ports)]."""
    plan = runner.plan_processes

    def planned(cfg: runner.RunConfig, run_id: str) -> list[ProcPlan]:
        return [replace(p, port=ports[p.index % len(ports)]) for p in plan(cfg, run_id)]

    runner.plan_processes = planned


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    spread([int(p) for p in argv[0].split(",")])
    return bench_main(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
