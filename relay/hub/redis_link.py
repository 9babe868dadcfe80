"""The hub thread's connection to Redis (or a Redis Cluster), and whether it is reachable.

Every engine call that reaches Redis goes through `Link.run`. A connection
error marks Redis down: from then on calls fail at once with
EngineUnavailable (a `say` is answered `unavailable`; clients stay), and
only `probe()`, called each heartbeat with growing intervals (backoff up to
5 s; 1 s in a cluster while its nodes answer), brings it back up, so the
engine can resync before serving again. The timeouts are short: the hub
loop never waits on a dead Redis for long. In a cluster (redis_cluster.py)
a failover's errors (cluster down, try again, a moved slot) count as "down"
too, and every channel is sharded: `publish` and the feed
(redis_shardfeed.py) pick the kind.
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
from relay.hub import redis_cluster as cluster
from relay.hub import redis_scripts as lua
from relay.hub.engine import EngineUnavailable
from relay.hub.redis_feed import Feed
from relay.hub.redis_shardfeed import ShardFeed

log = logging.getLogger("chat_relay.hub")

T = TypeVar("T")
PASSWORD_ENV = "CHAT_RELAY_ENGINE_PASSWORD"
TIMEOUT = 1.0  # seconds a Redis call may take before Redis counts as down
BACKOFF_MAX = 5.0
CLUSTER_BACKOFF_MAX = 1.0
FAILURES: tuple[type[BaseException], ...] = (
    redis.ConnectionError, redis.TimeoutError, OSError, *cluster.CLUSTER_FAILURES)


def check_url(url: str) -> str:
    """A problem with an --engine value, in words, or "" when it is usable."""
    if cluster.is_cluster(url):
        try:
            cluster.parse(url)
        except ValueError as exc:
            return f"--engine {redacted(url)}: {exc}"
        return ""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return (f"--engine {redacted(url)}: expected redis://HOST:PORT[/DB], "
                "rediss://HOST:PORT[/DB] or redis+cluster://HOST:PORT,HOST:PORT,...")
    if not parts.hostname:
        return f"--engine {redacted(url)}: no host"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"--engine {redacted(url)}: bad port"
    return ""


def connect(url: str, password: str = "") -> Any:
    """A client for `url` (redis.Redis, or RedisCluster for a cluster URL); the
    password comes from the URL, else `password` (the settings' copy of
    $CHAT_RELAY_ENGINE_PASSWORD), else that variable."""
    password = password or os.environ.get(PASSWORD_ENV) or ""
    if cluster.is_cluster(url):
        return cluster.connect(url, password, TIMEOUT)
    kwargs: dict[str, Any] = {"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT,
                              "decode_responses": False}
    if password and urllib.parse.urlsplit(url).password is None:
        kwargs["password"] = password
    return redis.Redis.from_url(url, **kwargs)


class Link:
    """The hub thread's pipelined client, with Redis's up/down state."""

    def __init__(self, client: Any, url: str, password: str = "") -> None:
        self.r: Any = client  # redis-py's own hints are looser than our use; checked by tests
        self.url = redacted(url)
        self._full_url, self._password = url, password  # for the feed's own connection
        self.cluster = cluster.is_cluster(url)
        self.up = True
        self._delay = 0.25
        self._next_probe = 0.0
        self._calls: list[Any] = []  # cluster: this pipeline's script calls
        if self.cluster:
            def script(text: str) -> Any:
                return cluster.ClusterScript(client, text, self._calls)
            self.sequence: Any = script(lua.SEQUENCE_CLUSTER)  # keys: sequence_keys()
        else:
            script = client.register_script
            self.sequence = client.register_script(lua.SEQUENCE)
        self.raise_seq = script(lua.RAISE)
        self.auth_fail = script(lua.AUTH_FAIL)
        self.claim_cleanup = script(lua.CLAIM_CLEANUP)
        self.release_nick = script(lua.RELEASE_NICK)
        self.open_room = script(lua.OPEN_ROOM)
        self.vacate = script(lua.VACATE)

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
        """One round trip: `fill(pipeline)`, then its results (errors as values).
        In a cluster, script calls a node answered NOSCRIPT are sent again as EVAL."""
        def go(r: Any) -> list[Any]:
            p = r.pipeline(transaction=False)
            self._calls.clear()
            fill(p)
            results = list(p.execute(raise_on_error=False))
            if self._calls:
                results = cluster.rerun_noscript(r, self._calls, results)
            return results
        return self.run(go)

    def publish(self, p: Any, channel: str, data: bytes) -> Any:
        """Publish on one of our channels: sharded (SPUBLISH) in a cluster, so a
        room's traffic stays on its shard (and redis-py's cluster pipeline
        refuses PUBLISH); classic PUBLISH on one Redis, which Redis 6 and every
        Valkey understand too."""
        return p.spublish(channel, data) if self.cluster else p.publish(channel, data)

    @property
    def publish_cmd(self) -> str:
        """`publish`'s command for a Batch (redis_batch.py): see publish()."""
        return "spublish" if self.cluster else "publish"

    def sequence_keys(self, room: str) -> list[str]:
        """SEQUENCE's keys for `room`: seq, epoch, log (and, in a cluster, the id
        of the Redis that last sequenced it: SEQUENCE_CLUSTER's failover check)."""
        keys = [lua.room_key(room, "seq"), lua.room_key(room, "epoch"), lua.room_key(room, "log")]
        return [*keys, lua.room_key(room, "rid")] if self.cluster else keys

    def feed(self, channels: list[str]) -> Feed:
        """The subscription thread, on a connection of its own."""
        if not self.cluster:
            return Feed(self.r, channels)
        return ShardFeed(connect(self._full_url, self._password), channels)

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
            answers(self.r, self._full_url)
        except FAILURES as exc:
            # A cluster's failover ends within seconds: while nodes answer (refuse,
            # or say the cluster is down) look again every second; a timeout
            # (cut off) blocked this loop once already, so back off to 5 s.
            quick = self.cluster and not isinstance(exc, (redis.TimeoutError, TimeoutError))
            self._delay = min(self._delay * 2, CLUSTER_BACKOFF_MAX if quick else BACKOFF_MAX)
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



def answers(client: Any, url: str) -> None:
    """Raise unless Redis serves: a PING, or for a cluster every primary (cluster.probe)."""
    if cluster.is_cluster(url):
        cluster.probe(client)
    else:
        client.ping()


def preflight(url: str, password: str = "", wait: float = 5.0) -> str:
    """Why the hub could not start on `url` now, in words, or "" when Redis answers.

    `chat-relay start` asks before it starts anything: a Redis that is down or
    refuses the password is the operator's to fix, and saying so once beats a
    hub that the supervisor restarts in a loop. A Redis still starting (or a
    cluster still electing) gets `wait` seconds.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            client = connect(url, password)
            answers(client, url)
            client.close()
            return ""
        except (redis.AuthenticationError, redis.ResponseError) as exc:
            if not isinstance(exc, redis.AuthenticationError) and "NOAUTH" not in str(exc):
                problem = f"Redis at {redacted(url)} refuses ({exc})"
            elif _password_given(url, password):
                return f"Redis at {redacted(url)} refused the password ({exc})"
            else:
                return (f"Redis at {redacted(url)} wants a password: put it in the URL "
                        f"or in ${PASSWORD_ENV}")
        except FAILURES as exc:
            problem = f"cannot reach Redis at {redacted(url)} ({exc})"
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):  # waiting will not help
                return problem + ("; for a certificate from your own CA add "
                                  "?ssl_ca_certs=/path/to/ca.pem to the URL")
        except redis.RedisError as exc:
            problem = f"Redis at {redacted(url)} cannot serve yet ({exc})"
        if time.monotonic() >= deadline:
            return problem + "; is it running, and is --engine right?"
        time.sleep(0.5)  # a retry interval, not a wait for a condition we can poll


def _password_given(url: str, password: str) -> bool:
    if password or os.environ.get(PASSWORD_ENV):
        return True
    netloc = url.partition("://")[2].partition("/")[0]
    return ":" in netloc.rpartition("@")[0]
