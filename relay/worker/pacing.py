"""Overload that degrades, not collapses: admission and fan-out pacing (issue 21).

Offered more than it can deliver, a relay must not let the excess pile up
in its own queues (reader deques, the bus, outboxes) until every member is
seconds behind and cut. Two closed loops keep the backlog where it enters:

- CreditWindow: a worker lets at most `--max-inflight` requests be on their
  way through the hub. It asks the hub for a `credit` receipt every few
  requests; the receipt comes back down the worker's pipe *after* the room
  batches those requests made, so when the worker reads it, its own fan-out
  of them is done. While the window is full, reader threads stop reading
  their sockets and TCP pushes back on the senders. The heaviest senders
  wait first: a reader's weight is what it sent in the last second or two,
  and it may read only while the window has room for that much, so a light
  sender's occasional message still goes through.
- FanoutPacer: a worker stops pulling room traffic off the bus while a member
  it writes to has half of `--max-outbox` queued, so the relay sends at the
  pace its readers read, and the traffic waits upstream (where the credit
  window then stops the senders) instead of in every member's outbox. After
  `--max-pause` it stops waiting for members that made no progress, and for
  a minority still far behind the rest: those are behind the others, not
  the relay, and are cut when their outbox overflows.
- A round hands each member at most a quarter of `--max-outbox`; the tail of
  a bigger hub batch waits for the next round.

CreditWindow, ReaderWeight and FanoutPacer are pure logic without clocks or
sockets: the bus thread and the readers pass the time and the counts.
CreditGate is where readers wait on the window (a condition variable).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

# A credit receipt is asked for after this fraction of the window was sent.
ASK_FRACTION = 8
WEIGHT_PERIOD = 1.0  # seconds per bucket of a reader's weight (two buckets are kept)


class CreditWindow:
    """Requests a worker sent to the hub that no credit receipt covers yet.

    Counts are kept per bus batch, never per message. Receipts are cumulative
    (the pipe is ordered): receipt n covers every request sent before it, so
    a receipt lost on the bus is made good by the next one.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self.sent = 0       # requests sent up, ever
        self.acked = 0      # of which a receipt came back
        self._asked = 0     # `sent` when the last receipt was asked for
        self._next_id = 0
        self._receipts: deque[tuple[int, int]] = deque()  # (receipt id, sent at asking)

    @property
    def inflight(self) -> int:
        return self.sent - self.acked

    def add(self, count: int) -> int | None:
        """`count` requests go up now; returns a receipt id to ask for, or None."""
        self.sent += count
        if self.sent - self._asked >= max(1, self.window // ASK_FRACTION):
            return self.ask()
        return None

    def ask(self) -> int:
        """A receipt id covering everything sent so far."""
        self._asked = self.sent
        self._next_id += 1
        self._receipts.append((self._next_id, self.sent))
        return self._next_id

    def overdue(self) -> bool:
        """Requests are out without a receipt: ask again at the heartbeat, in case
        a receipt was lost on the bus or went to a hub that died."""
        return self.acked < self.sent

    def receipt(self, rid: int) -> bool:
        """Receipt `rid` came back; True when it freed room in the window."""
        freed = False
        receipts = self._receipts
        while receipts and receipts[0][0] <= rid:
            _, at = receipts.popleft()
            if at > self.acked:
                self.acked = at
                freed = True
        return freed

    def must_wait(self, queued: int, weight: int) -> bool:
        """Whether a reader of `weight` waits, with `queued` requests not yet sent up.

        A reader may read while the window has room for what it sent recently
        (capped at half the window, so the heaviest still get the other half).
        """
        need = min(weight, self.window // 2)
        return self.sent - self.acked + queued + need >= self.window


class ReaderWeight:
    """What one reader sent recently: this period's count plus the last one's."""

    __slots__ = ("_start", "_now", "_prev")

    def __init__(self) -> None:
        self._start = 0.0
        self._now = 0
        self._prev = 0

    def add(self, count: int, now: float) -> None:
        if now - self._start >= WEIGHT_PERIOD:
            self._prev = self._now if now - self._start < 2 * WEIGHT_PERIOD else 0
            self._now = 0
            self._start = now
        self._now += count

    def value(self, now: float) -> int:
        age = now - self._start
        if age >= 2 * WEIGHT_PERIOD:
            return 0
        if age >= WEIGHT_PERIOD:
            return self._now
        return self._now + self._prev


class FanoutPacer:
    """Whether a worker pulls more room traffic off the bus, and when to give up waiting.

    The bus thread counts the members that are behind and still held for:
    `over_high` have more than half of --max-outbox queued, `over_low` more
    than an eighth. Fan-out pauses while any is over the high mark. The
    pause episode lasts until every one is under the low mark again, so a
    member that only drains to the high mark and takes more cannot pace the
    room for long: at `stuck_deadline()` the bus stops holding for members
    that made no progress, and for those still over the high mark when they
    are at most a quarter of the room (behind the others, not the relay).
    """

    def __init__(self, max_pause: float) -> None:
        self.max_pause = max_pause
        self.since: float | None = None  # when the current episode began

    def paused(self, over_high: int, over_low: int, now: float) -> bool:
        if over_high and self.since is None:
            self.since = now
        elif not over_low:
            self.since = None
        return over_high > 0

    def stuck_deadline(self) -> float | None:
        """When the members still behind stop holding the others back."""
        return None if self.since is None else self.since + self.max_pause

    @staticmethod
    def minority(over_high: int, members: int) -> bool:
        """Few enough members over the high mark to be slow themselves."""
        return over_high * 4 <= members


class CreditGate:
    """The credit window shared by a worker's readers (who wait) and its bus
    thread (which sends and takes receipts)."""

    def __init__(self, window: int) -> None:
        self.credit = CreditWindow(window)
        self._cv = threading.Condition()
        self._waiters = 0
        self.pushed_back = 0  # reader waits for credit (under _cv)

    def admit(self, queued: Callable[[], int], weight: ReaderWeight,
              give_up: Callable[[], bool]) -> None:
        """A reader calls this before it reads: it waits while the window has no
        room for what its sender sent recently (TCP then pushes back).

        `queued()` is how many requests wait for the bus thread; the wait ends
        early once `give_up()` (the connection or the worker is closing).
        """
        credit = self.credit
        if credit.inflight + queued() < credit.window // 2:
            return  # the common case: room even for the heaviest, no clock read
        need = weight.value(time.monotonic())
        if not credit.must_wait(queued(), need):
            return
        with self._cv:
            self.pushed_back += 1
            self._waiters += 1
            try:
                while credit.must_wait(queued(), need) and not give_up():
                    self._cv.wait(0.25)
            finally:
                self._waiters -= 1

    def receipt(self, rid: int) -> None:
        """The hub's receipt: our fan-out of everything before it is done."""
        if self.credit.receipt(rid) and self._waiters:
            with self._cv:
                self._cv.notify_all()
