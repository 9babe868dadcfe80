"""Failed passwords, counted relay-wide: which addresses are blocked, and until when.

Pure (no I/O, the caller passes the clock). The hub owns one AuthGuard, so a
failure on any worker of any host counts toward the same block; workers get
the blocks (`blocks()` and each new one from `fail()`) over the bus beside
the operator IP bans, and refuse a blocked address before they compare any
password.

Rules this module keeps:
- An address is counted by `auth_key()`: IPv4 as is, IPv6 by its /64 (one
  host is usually given a whole /64, so counting single IPv6 addresses would
  give it 2**64 fresh starts); an IPv4-mapped IPv6 address counts as IPv4.
- `failures` failures of one key within `window_ms` block it for `block_ms`.
  A failure while the key is blocked is not counted (workers refuse those
  attempts before comparing anything).
- Both tables are bounded by `max_entries`: the least recently failed key is
  forgotten first; past the bound, the block that ends first is dropped.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from typing import Any

from transports.validate import auth_key

log = logging.getLogger("chat_relay.hub")



class AuthGuard:
    """Counts failed passwords per key and decides blocks.

    Args:
        failures: failures within `window_ms` that block a key (at least 1).
        window_ms: how far back failures count.
        block_ms: how long a block lasts.
        max_entries: keys kept in each table (failures, blocks).
    """

    def __init__(self, failures: int = 5, window_ms: int = 60_000, block_ms: int = 60_000,
                 max_entries: int = 10_000) -> None:
        self.failures = max(1, failures)
        self.window_ms = window_ms
        self.block_ms = block_ms
        self.max_entries = max(1, max_entries)
        # key -> times of its recent failures; order = least recently failed first.
        self._fails: OrderedDict[str, deque[int]] = OrderedDict()
        # key -> until (ms); order = block start, so the first one ends first.
        self._blocks: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        """Keys held in the failure table (for tests and metrics)."""
        return len(self._fails)

    def fail(self, address: str, now: int) -> tuple[str, int] | None:
        """Count one failed password from `address` at `now` (ms).

        Returns:
            (key, until) when this failure starts a block, else None.
        """
        key = auth_key(address)
        if key is None or self.blocked_until(key, now):
            return None
        times = self._fails.pop(key, None)
        if times is None:
            times = deque(maxlen=self.failures)
        times.append(now)
        while times and times[0] <= now - self.window_ms:
            times.popleft()
        if len(times) >= self.failures:
            until = now + self.block_ms
            self._blocks[key] = until
            while len(self._blocks) > self.max_entries:
                self._blocks.popitem(last=False)
            return key, until
        self._fails[key] = times
        while len(self._fails) > self.max_entries:
            self._fails.popitem(last=False)
        return None

    def on_fail(self, req: dict[str, Any], now: int) -> dict[str, Any] | None:
        """The hub's `auth_fail` op: count it; a new block is logged once (never
        each failure) and returned as the `_block` item every worker gets."""
        started = self.fail(str(req.get("ip") or ""), now)
        if started is None:
            return None
        key, until = started
        log.warning("blocking %s for %.0f s: %d failed passwords within %.0f s", key,
                    self.block_ms / 1000, self.failures, self.window_ms / 1000)
        return {"t": "_block", "key": key, "until": until}

    def blocked_until(self, key: str, now: int) -> int:
        """When the block on `key` ends (ms), or 0 if it is not blocked."""
        until = self._blocks.get(key, 0)
        if until and until <= now:
            del self._blocks[key]
            return 0
        return until

    def blocks(self, now: int) -> dict[str, int]:
        """Every block in force: key -> until (ms). Expired ones are dropped here."""
        while self._blocks:
            key, until = next(iter(self._blocks.items()))
            if until > now:
                break
            del self._blocks[key]
        return {k: u for k, u in self._blocks.items() if u > now}
