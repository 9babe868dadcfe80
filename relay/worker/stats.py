"""The counts a worker publishes for metrics, at each heartbeat of its bus thread.

metrics.py reads this snapshot instead of the bus thread's fields, so it
imports nothing of the worker (no import circle), as with the hub's HubStats.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One heartbeat's totals (counters only grow; gauges are as of now)."""

    connections: dict[str, int] = field(default_factory=dict)  # open, by dialect (gauge)
    opened: dict[str, int] = field(default_factory=dict)  # accepted, by dialect (counter)
    says: int = 0  # say requests sent to the hub (counter)
    delivered: int = 0  # room items written to local members (counter)
    bus_gaps: int = 0  # gaps seen in downstream bus seqs (counter)
    bus_missing: int = 0  # bus messages lost in those gaps (counter)
    slow_cuts: int = 0  # clients cut as slow consumers (counter)
    rate_limited: int = 0  # frames dropped by the flood limit (counter)
    pushed_back: int = 0  # reader waits for credit (counter)
    queued: int = 0  # requests waiting for the bus thread (gauge)
    outbox_bytes: int = 0  # bytes queued for clients that are behind (gauge)
    backlogged: int = 0  # connections waiting for their socket (gauge)
