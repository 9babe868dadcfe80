"""--sweep: raise the offered rate step by step; find the highest one sustained.

A step is sustained when nothing was lost, duplicated, reordered or
corrupted and p99 stayed under the threshold. The answer is the highest
sustained rate *below the first failing step*: a lucky pass above a failure
is noise, not capacity.

A ladder alone knows the peak only to within its factor (x2: two relays 30%
apart both report "50k"), so after the first failure `next_rate` bisects the
bracket [highest pass below it, lowest failure] a few more steps, at the
geometric midpoint: k steps narrow a factor f to f^(1/2^k) (x2, 3 steps:
within 9%). All of it is pure functions, tested without a relay.

On a shared machine a neighbour's burst can push one step's p99 over the
limit at a rate the server holds easily (2026-11-27: chat-relay at N=1000
failed its first step, 50k deliveries/s, with p99 140 ms, and never climbed
to the 3.2M it held in the same run with one worker). So the first step
that fails on p99 *alone* is run once more, and counts as failed only if it
fails again; the first try is kept in the results as retried. Only that
one: it is the failure that ends the climb, while the bisection after it
narrows a bracket either way, and retrying every step at the knee (ngIRCd
at N=1000: 10 s and more a step) would make the suite much longer. A step
that lost, duplicated, reordered or corrupted anything is not retried: that
is a fault, not noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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


def next_rate(history: list[tuple[float, bool]], rates: list[float], refine: int,
              extra: int = 0) -> float | None:
    """The next rate to offer, or None when the sweep is done.

    `history` is (rate, sustained) of every step run so far, in run order;
    `rates` is the ladder. The ladder is climbed until the first failure and
    `extra` steps beyond it (to show the knee); then `refine` steps bisect
    between the highest pass below the lowest failure and that failure. No
    refinement when nothing passed or nothing failed.
    """
    failed = [i for i, (_, ok) in enumerate(history) if not ok]
    climb = len(rates) if not failed else min(failed[0] + 1 + extra, len(rates))
    if len(history) < climb:
        return rates[len(history)]
    if not failed or len(history) - climb >= refine:
        return None
    hi = min(r for r, ok in history if not ok)
    below = [r for r, ok in history if ok and r < hi]
    if not below:
        return None
    mid = round(math.sqrt(max(below) * hi), 3)
    return mid if max(below) < mid < hi else None


def failed_on_latency_only(result: dict[str, Any], p99_limit_ms: float) -> bool:
    """Whether a failed step lost nothing and was only too slow (worth one retry)."""
    return not step_ok(result, p99_limit_ms) and step_ok(result, float("inf"))


StepRunner = Callable[[float], "dict[str, Any] | None"]
StepReport = Callable[[float, "dict[str, Any]", bool, bool], None]


def climb(run: StepRunner, rates: list[float], refine: int, p99_limit_ms: float,
          extra: int = 0, retries: int = 1,
          report: StepReport | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run a whole sweep: (the steps that count, the tries that a retry replaced).

    `run(rate)` measures one step (None stops the sweep: the server is gone);
    `report(rate, result, ok, retrying)` is told of every try.
    """
    steps: list[dict[str, Any]] = []
    retried: list[dict[str, Any]] = []
    history: list[tuple[float, bool]] = []
    while (rate := next_rate(history, rates, refine, extra)) is not None:
        result = run(rate)
        tries = 0
        while result is not None:
            ok = step_ok(result, p99_limit_ms)
            first_failure = all(passed for _, passed in history)
            again = (tries < retries and first_failure
                     and failed_on_latency_only(result, p99_limit_ms))
            if report is not None:
                report(rate, result, ok, again)
            if not again:
                break
            retried.append(result)
            tries += 1
            result = run(rate)
        if result is None:
            break
        steps.append(result)
        history.append((rate, ok))
    return steps, retried
