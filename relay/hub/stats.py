"""The counts the hub publishes for metrics, at each heartbeat.

metrics.py reads this snapshot instead of the hub's private state, so it
imports nothing of the hub's loop (no import circle) and a second engine
only has to fill the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class HubStats:
    """One heartbeat's totals (counters only grow; gauges are as of now)."""

    messages: int = 0  # say requests sequenced (counter)
    clients: int = 0  # clients registered (gauge)
    rooms: int = 0  # rooms held, with members or history (gauge)
    bus_gaps: int = 0  # gaps seen in upstream bus seqs (counter)
    bus_missing: int = 0  # bus messages lost in those gaps (counter)
    moderation: dict[str, int] = field(default_factory=dict)  # action -> count (counters)
