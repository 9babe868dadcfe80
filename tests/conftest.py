from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Tests share two CPUs with relay processes (and, in CI, with whatever else
# runs): judge hypothesis examples by what they find, never by how fast they
# were generated or ran.
settings.register_profile(
    "chat-relay", deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("chat-relay")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.relayproc import RelayProcess  # noqa: E402

RelayFactory = Callable[..., RelayProcess]


@pytest.fixture
def relay_factory() -> Iterator[RelayFactory]:
    started: list[RelayProcess] = []

    def make(workers: int = 2, args: list[str] | None = None, **kw: object) -> RelayProcess:
        relay = RelayProcess(workers=workers, args=args or ["--rate-limit", "0"], **kw)  # type: ignore[arg-type]
        started.append(relay)
        return relay.start()

    yield make
    for relay in started:
        relay.stop()


@pytest.fixture
def relay(relay_factory: RelayFactory) -> RelayProcess:
    return relay_factory(workers=2)


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Peers, pages and clients a test appends here are closed after it, each on its own."""
    things: list[Any] = []
    yield things
    for thing in things:
        try:
            thing.close()
        except Exception:  # one that fails to close must not keep the rest open
            pass
