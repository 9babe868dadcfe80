"""Errors cost: a connection that makes more than `limit` errors in `window`
seconds is closed with `too_many_errors`.

An error costs the relay more than a message (a reply made for no one else,
often a round trip through the hub), and a client that only errs is broken
or hostile. The budget is separate from the flood limit: `--rate-limit 0`
lifts that one for benchmarks, never this one.

Two threads charge one connection's budget: its reader (errors about the
client's own input) and the worker's bus thread (errors the hub sends), so
it takes a lock; errors are the slow path.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from transports.errors import error_body

ERROR_WINDOW = 10.0  # seconds over which --max-errors counts


class ErrorBudget:
    """At most `limit` errors in any `window` seconds; a limit of 0 means no limit."""

    def __init__(self, limit: int, window: float = ERROR_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()

    def charge(self) -> bool:
        """Count one error; False once more than `limit` fall within the window."""
        if self.limit <= 0:
            return True
        now = self.clock()
        with self._lock:
            stamps = self._stamps
            while stamps and stamps[0] <= now - self.window:
                stamps.popleft()
            stamps.append(now)
            if len(stamps) > self.limit + 1:
                stamps.popleft()  # bounded: only whether it is over matters
            return len(stamps) <= self.limit

    def remaining(self) -> int:
        """Errors still allowed in the current window (a large number when off)."""
        if self.limit <= 0:
            return 1 << 30
        now = self.clock()
        with self._lock:
            live = sum(1 for t in self._stamps if t > now - self.window)
        return max(0, self.limit - live)

    def error(self) -> dict[str, Any]:
        """The `too_many_errors` error body (the connection is closed after it)."""
        return error_body("too_many_errors",
                          f"more than {self.limit} errors in {self.window:g} s; closing")
