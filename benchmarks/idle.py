"""--idle N: open N connections that only say hello, then weigh the relay.

RSS per connection is (relay RSS with N idle clients - RSS before) / N,
summed over the relay's whole process tree (supervisor, hub, workers), so a
design that moves memory between processes is not flattered. It needs the
relay on this host: found by the PIDs given, else by who listens on the port.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import proctree
from benchmarks.runner import Run, RunConfig


def relay_tree(port: int, pids: list[int] | None = None) -> list[int]:
    """PIDs of the relay's process tree: the PIDs given (none: not on this
    host), else the processes listening on `port` here; with all their children."""
    return proctree.tree(pids if pids is not None else proctree.server_roots(port))


def rss_bytes(pids: list[int]) -> int:
    return proctree.status_sum(pids, "VmRSS") * 1024  # /proc reports kB


def thread_count(pids: list[int]) -> int:
    return proctree.status_sum(pids, "Threads")


# pyzmq starts a garbage-collector thread, with a zmq context of its own (an I/O
# and a reaper thread), the first time a process sends a zero-copy message over
# 64 KiB; a worker announcing thousands of new clients at once does. They stay
# for the life of the process, so they are not part of what a drop releases.
LAZY_THREADS = 3


def wait_released(pids: list[int], baseline: int, since: float,
                  limit_s: float = 120.0) -> float | None:
    """Seconds from `since` (the drop began) until the relay is back to
    `baseline` threads after a mass disconnect.

    Every idle client is a reader thread in the relay; all of them waking at
    once when the load processes exit is the hardest moment for a
    thread-per-client design, so the benchmark times it (None: not within
    `limit_s`). Timed from the start of the drop, not from when the load
    processes have exited: the relay may be done before they are.
    """
    t0 = since
    while time.monotonic() - t0 < limit_s:
        if thread_count(pids) <= baseline:
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def run_idle(cfg: RunConfig, count: int, hold: float, pids: list[int] | None) -> dict[str, Any]:
    """Open `count` idle connections, hold them `hold` seconds, report rates and RSS."""
    cfg.receivers, cfg.senders = count, 0
    tree = relay_tree(cfg.port, pids)
    before = rss_bytes(tree) if tree else 0
    threads_before = thread_count(tree) if tree else 0
    run = Run(cfg)
    released: float | None = None
    try:
        connect = run.connect()
        for conn in run.pipes:
            conn.send(("idle", {}))
        time.sleep(min(hold, 1.0))  # let the relay's allocator settle before weighing
        after = rss_bytes(tree) if tree else 0
        deadline = time.monotonic() + max(0.0, hold - 1.0)
        while time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    finally:
        dropped = time.monotonic()
        run.stop()
    if tree:
        released = wait_released(tree, threads_before + 2 + LAZY_THREADS * len(tree), dropped)
    per_conn = (after - before) / connect["connected"] if tree and connect["connected"] else None
    return {
        "idle": count,
        "connect": connect,
        "relay_pids": tree,
        "relay_rss_before": before,
        "relay_rss_after": after,
        "rss_per_connection": per_conn,
        "release_s": released,
        "params": {"host": cfg.host, "port": cfg.port, "dialect": cfg.dialect,
                   "procs": cfg.procs, "concurrency": cfg.concurrency, "hold": hold},
        "warnings": run.warnings + ([] if tree else [
            "relay not found on this host: RSS not measured (pass --server-pid)"]),
    }
