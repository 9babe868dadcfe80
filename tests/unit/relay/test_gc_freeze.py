"""A worker freezes what survives each full collection (relay/child.py): the next
full collection scans only what came since. Run in a child interpreter, so the
test process's own collector is left as it was."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

CHILD = textwrap.dedent("""
    import gc
    from relay.child import freeze_survivors

    freeze_survivors()
    freeze_survivors()  # once is enough: a second call adds no second callback
    print(len(gc.callbacks))
    at_start = gc.get_freeze_count()  # what start-up left, collected and frozen
    kept = [[i] for i in range(10_000)]  # long-lived, as a worker's clients are
    gc.collect(1)
    print(at_start > 0 and gc.get_freeze_count() == at_start)  # young passes freeze nothing
    gc.collect()
    frozen = gc.get_freeze_count()
    print(frozen >= at_start + 10_000)
    cycle = []
    cycle.append(cycle)  # garbage made after the freeze is still collected
    del cycle
    print(gc.collect() >= 1)
    print(gc.get_freeze_count() >= frozen, len(kept))
""")


def test_a_full_collection_freezes_its_survivors_and_later_cycles_are_still_collected(
        ) -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split("\n")
    assert out[:5] == ["1", "True", "True", "True", "True 10000"], out
