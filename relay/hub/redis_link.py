"""The hub thread's connection to Redis, and whether Redis is reachable.

Every engine call that reaches Redis goes through `Link.run`. A connection
error marks Redis down: from then on calls fail at once with
EngineUnavailable (a `say` is answered `unavailable`; clients stay), and
only `probe()`, called each heartbeat with growing intervals (backoff up to
5 s), brings it back up, so the engine can resync before serving again. The
timeouts are short: the hub loop never waits on a dead Redis for long.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from relay.config import redacted
from relay.hub import redis_scripts as lua
from relay.hub.engine import EngineUnavailable

log = logging.getLogger("chat_relay.hub")

T = TypeVar("T")
PASSWORD_ENV = "CHAT_RELAY_ENGINE_PASSWORD"
TIMEOUT = 1.0  # seconds a Redis call may take before Redis counts as down
BACKOFF_MAX = 5.0
FAILURES = (redis.ConnectionError, redis.TimeoutError, OSError)


def check_url(url: str) -> str:
    """A problem with an --engine value, in words, or "" when it is usable."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return (f"--engine {redacted(url)}: expected redis://HOST:PORT[/DB] or "
                "rediss://HOST:PORT[/DB]")
    if not parts.hostname:
        return f"--engine {redacted(url)}: no host"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"--engine {redacted(url)}: bad port"
    return ""


def connect(url: str, password: str = "") -> redis.Redis:
    """A client for `url`; the password comes from the URL, else `password` (the
    settings' copy of $CHAT_RELAY_ENGINE_PASSWORD), else that variable."""
    password = password or os.environ.get(PASSWORD_ENV) or ""
    kwargs: dict[str, Any] = {"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT,
                              "decode_responses": False}
    if password and urllib.parse.urlsplit(url).password is None:
        kwargs["password"] = password
    return redis.Redis.from_url(url, **kwargs)


class Link:
    """The hub thread's pipelined client, with Redis's up/down state."""

    def __init__(self, client: redis.Redis, url: str) -> None:
        self.r: Any = client  # redis-py's own hints are looser than our use; checked by tests
        self.url = redacted(url)
        self.up = True
        self._delay = 0.25
        self._next_probe = 0.0
        self.sequence = client.register_script(lua.SEQUENCE)
        self.raise_seq = client.register_script(lua.RAISE)
        self.auth_fail = client.register_script(lua.AUTH_FAIL)
        self.claim_cleanup = client.register_script(lua.CLAIM_CLEANUP)
        self.release_nick = client.register_script(lua.RELEASE_NICK)
        self.open_room = client.register_script(lua.OPEN_ROOM)
        self.vacate = client.register_script(lua.VACATE)

    def run(self, fn: Callable[[Any], T]) -> T:
        """`fn(client)`, or EngineUnavailable when Redis is (or just went) down."""
        if not self.up:
            raise EngineUnavailable(f"redis at {self.url} is unreachable")
        try:
            return fn(self.r)
        except FAILURES as exc:
            self.down(exc)
            raise EngineUnavailable(f"redis at {self.url} is unreachable") from exc

    def pipe(self, fill: Callable[[Any], object]) -> list[Any]:
        """One round trip: `fill(pipeline)`, then its results (errors as values)."""
        def go(r: Any) -> list[Any]:
            p = r.pipeline(transaction=False)
            fill(p)
            return list(p.execute(raise_on_error=False))
        return self.run(go)

    def down(self, exc: BaseException) -> None:
        if self.up:
            log.error("redis at %s unreachable (%s); says get `unavailable` until it is back",
                      self.url, exc)
        self.up = False
        self._next_probe = time.monotonic() + self._delay

    def probe(self) -> bool:
        """While down, try Redis now and then (backoff); True when it just came back."""
        if self.up or time.monotonic() < self._next_probe:
            return False
        try:
            self.r.ping()
        except FAILURES:
            self._delay = min(self._delay * 2, BACKOFF_MAX)
            self._next_probe = time.monotonic() + self._delay
            return False
        except redis.RedisError as exc:  # answered, but refuses (auth, loading)
            log.warning("redis at %s answers but refuses: %s", self.url, exc)
            self._next_probe = time.monotonic() + self._delay
            return False
        self.up = True
        self._delay = 0.25
        log.warning("redis at %s is back; resyncing this host's clients", self.url)
        return True
