"""Open-loop send schedule: message i is due at t0 + i / rate, never later.

Senders must not let a slow iteration push every later message back (that
is closed-loop load and hides the relay's queueing), nor drop messages to
catch up (that under-reports offered load). So the due time is computed from
the absolute start, and a sender that falls behind sends what is due at once
and records how late it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Schedule:
    """Due times, in ns of a shared monotonic clock, for `count` messages at `rate`/s."""

    t0_ns: int
    rate: float
    count: int
    next_index: int = 0
    late: int = 0  # messages sent more than `late_threshold_ns` after their due time
    max_lag_ns: int = 0
    late_threshold_ns: int = 1_000_000
    # Send lag of each message due from `measure_from_ns` on, µs -> count: how
    # much of the measured latency the generator itself added.
    measure_from_ns: int = 0
    lag_us: dict[int, int] = field(default_factory=dict)

    def due_ns(self, i: int) -> int:
        """When message `i` should leave: a product, not a running sum, so no drift."""
        return self.t0_ns + round(i * 1e9 / self.rate)

    def done(self) -> bool:
        return self.next_index >= self.count

    def take_due(self, now_ns: int) -> int:
        """How many messages are due at `now_ns` (all of them if we are behind).

        Advances the schedule and the lag statistics; the caller sends exactly
        the returned number of messages, with indices starting at the old
        `next_index`.
        """
        n = 0
        while self.next_index < self.count:
            due = self.due_ns(self.next_index)
            if due > now_ns:
                break
            lag = now_ns - due
            if lag > self.max_lag_ns:
                self.max_lag_ns = lag
            if lag > self.late_threshold_ns:
                self.late += 1
            if due >= self.measure_from_ns:
                us = lag // 1000
                self.lag_us[us] = self.lag_us.get(us, 0) + 1
            self.next_index += 1
            n += 1
        return n

    def drain_lags(self) -> dict[int, int]:
        """The send lags recorded since the last drain, µs -> count."""
        out, self.lag_us = self.lag_us, {}
        return out

    def wait_ns(self, now_ns: int) -> int | None:
        """Nanoseconds until the next message is due (0 if overdue, None when done)."""
        if self.done():
            return None
        return max(0, self.due_ns(self.next_index) - now_ns)


def messages_for(rate: float, seconds: float) -> int:
    """Number of messages a schedule at `rate`/s sends in `seconds`."""
    return max(0, int(rate * seconds))


def split_rate(total: float, shares: int) -> list[float]:
    """Split a total rate into `shares` equal parts (load processes or senders)."""
    if shares <= 0:
        return []
    return [total / shares] * shares
