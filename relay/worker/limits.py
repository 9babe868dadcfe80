"""A client's limits, sans-I/O: the flood limit (a token bucket) and the error budget.

Frames cost tokens: `--rate-limit` a second, bursts up to `--rate-burst`.
Over the rate a frame is dropped; at most one rate_limited notice a second
says so, and a client still flooding at FLOOD_FACTOR times the rate after
--flood-window seconds is cut (FloodLimit decides, the reader acts).

Errors cost too: a connection that makes more than `--max-errors` errors
in ERROR_WINDOW seconds is closed with `too_many_errors`. An error costs the
relay more than a message (a reply made for no one else, often a round trip
through the hub), and a client that only errs is broken or hostile. The
budget is separate from the flood limit: `--rate-limit 0` lifts that one for
benchmarks, never this one. Two threads charge one connection's budget (its
reader and the bus thread), so it takes a lock; errors are the slow path.

Clocks are parameters, so the tests pass the time.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from transports.errors import error_body

ERROR_WINDOW = 10.0  # seconds over which --max-errors counts
FLOOD_WINDOW = 10.0  # seconds of sustained flooding before the client is cut (default)
FLOOD_FACTOR = 10    # "flooding" means this many times the allowed rate
NOTICE_INTERVAL = 1.0  # at most one rate_limited notice a second per connection


class TokenBucket:
    """`rate` tokens a second, up to `burst`; a rate of 0 means unlimited
    (benchmarks and load tests lift the limit)."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self.tokens = float(self.burst)
        self.stamp = clock()

    def take(self, cost: int = 1) -> bool:
        """Spend `cost` tokens (at least one, at most a burst); False when the
        client is over its rate (nothing is spent then)."""
        if self.rate <= 0:
            return True
        cost = min(max(1, cost), self.burst)
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class Flood(enum.Enum):
    """What the flood limit says about one frame."""

    ALLOWED = "allowed"
    DROPPED = "dropped"          # dropped, nothing said
    NOTICE = "notice"            # dropped; say rate_limited (once a second)
    CUT = "cut"                  # flooding for the whole window: close the connection


class FloodLimit:
    """The flood limit of one connection.

    Drops are counted in windows of `window` seconds that start at a
    drop; a window holding at least half of what FLOOD_FACTOR times the rate
    would drop means the client never slowed down.
    """

    def __init__(self, rate: float, burst: int, window: float = FLOOD_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.window = window
        self.bucket = TokenBucket(rate, burst, clock)
        self.clock = clock
        self.start: float | None = None  # when the current window of drops began
        self.drops = 0
        self.notice_at = -NOTICE_INTERVAL  # when the last rate_limited notice went out

    def take(self, cost: int = 1) -> Flood:
        """Charge a frame (`cost` frames for a codec's page of replies)."""
        if self.bucket.take(cost):
            return Flood.ALLOWED
        now = self.clock()
        if self.start is None:
            self.start, self.drops = now, 0
        elif now - self.start >= self.window:
            if self.drops >= FLOOD_FACTOR / 2 * self.rate * self.window:
                return Flood.CUT
            self.start, self.drops = now, 0
        self.drops += 1
        if now - self.notice_at >= NOTICE_INTERVAL:
            self.notice_at = now
            return Flood.NOTICE
        return Flood.DROPPED


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
