"""--sweep: raise the offered rate step by step; find the highest one sustained.

A step is sustained when nothing was lost, duplicated, reordered or
corrupted and p99 stayed under the threshold. The answer is the highest
sustained rate *below the first failing step*: a lucky pass above a failure
is noise, not capacity. Both rules are pure functions so they are tested
without a relay.
"""

from __future__ import annotations

from typing import Any


def ladder(start: float, factor: float, max_rate: float, max_steps: int) -> list[float]:
    """Offered rates start, start*factor, ... up to max_rate (at most max_steps)."""
    if start <= 0 or factor <= 1:
        raise ValueError("a sweep needs start > 0 and factor > 1")
    rates: list[float] = []
    r = start
    while r <= max_rate and len(rates) < max_steps:
        rates.append(round(r, 3))
        r *= factor
    return rates


def step_ok(result: dict[str, Any], p99_limit_ms: float) -> bool:
    """Whether one step's figures count as sustained."""
    return bool(
        result.get("lost", 1) == 0
        and result.get("duplicates", 1) == 0
        and result.get("reorders", 1) == 0
        and result.get("corrupt", 1) == 0
        and result.get("latency_ms", {}).get("p99", float("inf")) <= p99_limit_ms
    )


def highest_sustained(steps: list[dict[str, Any]], p99_limit_ms: float) -> dict[str, Any] | None:
    """The last passing step before the first failure (steps in rising rate order)."""
    best: dict[str, Any] | None = None
    for step in sorted(steps, key=lambda s: float(s["offered_rate"])):
        if not step_ok(step, p99_limit_ms):
            break
        best = step
    return best


def should_stop(steps: list[dict[str, Any]], p99_limit_ms: float, extra: int = 1) -> bool:
    """Stop once `extra` steps after the first failure have run (shows the knee)."""
    failed = [i for i, s in enumerate(steps) if not step_ok(s, p99_limit_ms)]
    return bool(failed) and len(steps) - 1 - failed[0] >= extra
