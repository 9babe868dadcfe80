"""Real relay processes for tests: benchmarks/relayproc.py with test deadlines.

Every wait is a multiple of one unit that $CHAT_RELAY_TEST_UNIT scales (2 on
a slow machine doubles them all); $CHAT_RELAY_TEST_LOG sets the relay's log
level (WARNING by default, so a test's output stays readable).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from benchmarks.relayproc import BANNER, ROOT
from benchmarks.relayproc import RelayProcess as _RelayProcess

UNIT = float(os.environ.get("CHAT_RELAY_TEST_UNIT", "1.0"))

__all__ = ["BANNER", "ROOT", "UNIT", "RelayProcess"]


class RelayProcess(_RelayProcess):
    def __init__(self, workers: int = 2, args: Sequence[str] = (), host: str = "127.0.0.1",
                 port: int = 0, wrapper: Sequence[str] = ()) -> None:
        super().__init__(workers, args, host, port, wrapper,
                         log_level=os.environ.get("CHAT_RELAY_TEST_LOG", "WARNING"), unit=UNIT)
