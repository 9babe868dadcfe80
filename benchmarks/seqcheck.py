"""Loss, duplicate and reorder accounting for one ordered stream of numbers.

Every delivered `seq` (native: the room's seq; text and IRC: the sender's own
counter inside the payload) is checked, not a sample. The common case, the
next number in order, costs one comparison and two additions; only gaps and
stragglers touch the `missing` set. Numbers skipped by a gap are remembered
(up to `max_missing`) so that a late arrival counts as a reorder, and a
number seen before as a duplicate. Loss is settled at the end against the
number of messages that were really sent (`finish`), so messages lost at the
tail, which no later seq reveals, are counted too.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class StreamChecker:
    """Checks one stream whose numbers should arrive as first, first+1, ..."""

    next: int = 1
    unique: int = 0
    duplicates: int = 0
    reorders: int = 0
    gaps: int = 0  # numbers skipped so far (provisional loss, may come back late)
    missing: set[int] = field(default_factory=set)
    max_missing: int = 100_000
    overflow: bool = False  # `missing` hit its bound: later stragglers look like duplicates

    def see(self, n: int) -> None:
        if n == self.next:
            self.next = n + 1
            self.unique += 1
            return
        self._slow(n)

    def _slow(self, n: int) -> None:
        if n > self.next:
            skipped = n - self.next
            self.gaps += skipped
            room = self.max_missing - len(self.missing)
            if skipped > room:
                self.overflow = True
            self.missing.update(range(self.next, self.next + min(skipped, max(room, 0))))
            self.next = n + 1
            self.unique += 1
        elif n in self.missing:
            self.missing.discard(n)
            self.gaps -= 1
            self.reorders += 1
            self.unique += 1
        else:
            self.duplicates += 1

    def lost(self, expected: int) -> int:
        """Messages never delivered, given how many this stream should have had."""
        return max(0, expected - self.unique)


@dataclass(slots=True)
class Tally:
    """Totals over many streams and receivers; adds up across processes."""

    delivered: int = 0
    unique: int = 0
    duplicates: int = 0
    reorders: int = 0
    gaps: int = 0
    corrupt: int = 0

    def add_stream(self, s: StreamChecker) -> None:
        self.unique += s.unique
        self.duplicates += s.duplicates
        self.reorders += s.reorders
        self.gaps += s.gaps

    def merge(self, other: Tally) -> None:
        self.delivered += other.delivered
        self.unique += other.unique
        self.duplicates += other.duplicates
        self.reorders += other.reorders
        self.gaps += other.gaps
        self.corrupt += other.corrupt
