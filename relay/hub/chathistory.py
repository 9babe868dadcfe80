"""IRCv3 CHATHISTORY selections over one room's history ring (pure functions).

A reference is ("seq", n) (a msgid the relay made, turned back into its
seq), ("ts", ms) (a `timestamp=`), or ("*", 0) (LATEST's "no bound"). Each
one cuts the ring in two places: `before` counts the messages strictly
before it, `after` the messages up to and including it, so "before the
reference" is ring[:before] and "after it" is ring[after:].

Pages are always oldest first, as the specification asks; `limit` is
already clamped by the caller.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import Any

Ref = tuple[str, int]
SUBCOMMANDS = frozenset({"latest", "before", "after", "around", "between"})


def _cuts(ring: Sequence[dict[str, Any]], first_seq: int, ref: Ref,
          stamps: list[int]) -> tuple[int, int]:
    """(messages strictly before ref, messages up to and including ref)."""
    kind, value = ref
    size = len(ring)
    if kind == "seq":
        at = value - first_seq
        return min(max(at, 0), size), min(max(at + 1, 0), size)
    if kind == "ts":
        return bisect.bisect_left(stamps, value), bisect.bisect_right(stamps, value)
    return size, 0  # "*": everything is before it and after it


def select(ring: Sequence[dict[str, Any]], first_seq: int, sub: str, refs: Sequence[Ref],
           limit: int) -> list[dict[str, Any]]:
    """The page CHATHISTORY `sub` asks for, oldest first ([] for a bad request)."""
    if sub not in SUBCOMMANDS or not refs or limit < 1:
        return []
    stamps = [int(m.get("ts", 0)) for m in ring] if any(k == "ts" for k, _ in refs) else []
    before, after = _cuts(ring, first_seq, refs[0], stamps)
    size = len(ring)
    if sub == "latest":
        start, end, newest = (after if refs[0][0] != "*" else 0), size, True
    elif sub == "before":
        start, end, newest = 0, before, True
    elif sub == "after":
        start, end, newest = after, size, False
    elif sub == "around":
        start = max(0, before - limit // 2)
        end = min(size, start + limit)
        start, newest = max(0, end - limit), False
    else:  # between
        if len(refs) < 2:
            return []
        before2, after2 = _cuts(ring, first_seq, refs[1], stamps)
        if before <= before2:  # forwards from the first reference
            start, end, newest = after, before2, False
        else:  # backwards from the first reference
            start, end, newest = after2, before, True
    if end <= start:
        return []
    if newest:
        start = max(start, end - limit)
    else:
        end = min(end, start + limit)
    return list(itertools.islice(ring, start, end))
