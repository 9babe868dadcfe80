"""Token bucket per client: `rate` messages a second, bursts up to `burst`."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """A rate of 0 means unlimited (benchmarks and load tests lift the limit)."""

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
