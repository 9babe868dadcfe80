"""A room's history ring in memory: what a message costs, and pages of it.

The memory engine keeps each room's newest messages in a deque (its ring),
oldest first, ending at the room's seq, so the seq of ring[i] is
first_seq + i. These functions cut pages out of a ring the way the
protocol's `history`, resume, join replay and gap fill ask; the budget that
bounds all rings together lives in rooms.py.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from typing import Any

Body = dict[str, Any]

# Bytes a stored msg costs besides its text: tracemalloc counts 280 (the body
# dict, its ts and seq ints, the ring slot); the rest is the allocator's share.
# benchmarks/experiments/room_memory.py weighs the whole hub against --history-bytes.
MSG_OVERHEAD = 400


def msg_cost(body: Body) -> int:
    """What one stored msg counts against --history-bytes: its text as Python holds
    it (1, 2 or 4 bytes a character) plus the fixed cost of the body around it."""
    return MSG_OVERHEAD + sys.getsizeof(body.get("text", ""))


def latest(ring: Sequence[Body], limit: int) -> tuple[list[Body], bool]:
    """The newest `limit` messages, oldest first, and whether older ones exist."""
    start = max(0, len(ring) - limit)
    return list(itertools.islice(ring, start, None)), start > 0


def after(ring: Sequence[Body], first_seq: int, seq: int,
          limit: int | None) -> tuple[list[Body], bool]:
    """Up to `limit` (None: all) messages after `seq`, starting at the oldest the
    ring has, and whether newer ones lie beyond the page."""
    start = max(0, seq + 1 - first_seq)
    end = len(ring) if limit is None else start + limit
    return list(itertools.islice(ring, start, end)), end < len(ring)
