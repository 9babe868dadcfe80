"""Redis Cluster for the Redis engine: `--engine redis+cluster://H1:P1,H2:P2,...`.

What changes against one Redis, and lives here:

- the URL: several startup nodes (any reachable one tells redis-py the rest);
  `rediss+cluster://` for TLS; no database number (a cluster has only 0);
- scripts in pipelines: redis-py's ClusterPipeline sends EVALSHA and hands a
  NOSCRIPT back as a value (a promoted replica or a restarted node has an
  empty script cache), so `rerun_noscript` sends just those calls again as
  EVAL (NOSCRIPT means they never ran);
- SEQUENCE in cluster mode (SEQUENCE_CLUSTER) also names the room's `rid` key
  (Link.sequence_keys): the
  replication id of the primary that last sequenced the room. Replication
  is asynchronous, so a replica promoted by a failover may miss the dead
  primary's last batches; its seq would hand those seqs out again. A room
  whose `rid` is not the current primary's starts a new epoch far above
  anything handed out (redis_scripts.SEQUENCE_CLUSTER), which clients see
  as a gap, never as a reused seq.

Every script touches the keys of one slot: a room's keys share the room's
hash tag, and the few global scripts tag their second key with the first
key's name (see redis_scripts.py).
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import NoScriptError
from redis.retry import Retry

log = logging.getLogger("chat_relay.hub")

SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS
# Errors that mean "the cluster cannot serve this now" (a failover in progress,
# a slot without a primary, a topology redis-py has to learn again).
CLUSTER_FAILURES: tuple[type[BaseException], ...] = (
    redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError,
    redis.exceptions.MovedError, redis.exceptions.AskError,
    redis.exceptions.RedisClusterException, redis.exceptions.ClusterError)


def is_cluster(url: str) -> bool:
    return url.partition("://")[0] in SCHEMES


# What a rediss+cluster:// URL may say after `?` (redis-py's names, as rediss:// takes
# them): a private CA, and a client certificate for `tls-auth-clients yes`.
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def tls_options(url: str) -> dict[str, str]:
    """The TLS options of a cluster URL's query; ValueError in words."""
    query = url.partition("?")[2]
    if "#" in query:
        raise ValueError("a cluster URL takes no #fragment")
    options: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key not in TLS_OPTIONS:
            raise ValueError(f"unknown option {key!r} (a cluster URL takes "
                             f"{', '.join(TLS_OPTIONS)})")
        options[key] = value
    if options and not url.startswith("rediss+"):
        raise ValueError("ssl_* options need rediss+cluster://")
    return options


def parse(url: str) -> tuple[list[tuple[str, int]], str | None, str | None, bool]:
    """(startup nodes, username, password, tls) of a cluster URL; ValueError in words."""
    scheme, _, rest = url.partition("://")
    if scheme not in SCHEMES:
        raise ValueError("expected redis+cluster://H1:P1,H2:P2,... or rediss+cluster://")
    tls_options(url)
    rest = rest.partition("?")[0]
    netloc, _, path = rest.partition("/")
    if "#" in netloc or path.strip("/") not in ("", "0"):
        raise ValueError("a cluster has only database 0")
    creds, _, hosts = netloc.rpartition("@")
    user, colon, password = creds.partition(":")
    nodes = []
    for part in hosts.split(","):
        host, sep, port = part.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host:
            raise ValueError(f"startup node {part!r} is not HOST:PORT")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"startup node {part!r} has a bad port")
        nodes.append((host, int(port)))
    return (nodes, urllib.parse.unquote(user) or None,
            urllib.parse.unquote(password) if colon else None, SCHEMES[scheme])


def connect(url: str, password: str, timeout: float) -> RedisCluster:
    """A cluster client with short timeouts and no retries of its own: the hub loop
    must not wait long on a cluster that is failing over, and a command sent
    again after a lost reply could run twice (a SEQUENCE twice is a msg
    twice, a nick's SET NX twice says it is taken). A failed call fails: the
    link goes down and probes (redis-py learns the topology again meanwhile)."""
    nodes, user, url_password, tls = parse(url)
    kwargs: dict[str, Any] = {}
    if user:
        kwargs["username"] = user
    if url_password or password:
        kwargs["password"] = url_password or password
    if tls:
        kwargs["ssl"] = True
        kwargs.update(tls_options(url))
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in nodes],  # type: ignore[no-untyped-call]
        socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=False,
        retry=Retry(NoBackoff(), 0), **kwargs)


def probe(client: RedisCluster) -> None:
    """Raise unless every slot has a primary that answers: the topology learned
    afresh (a failover promoted a replica), then a PING to each primary.
    One node first, so that a host cut off from the whole cluster waits one
    timeout per probe, not one per startup node and then one per primary."""
    client.ping(target_nodes=client.get_random_node())  # type: ignore[no-untyped-call]
    client.nodes_manager.initialize()
    client.ping(target_nodes=RedisCluster.PRIMARIES)


class ClusterScript:
    """A script for a cluster client. Called with a pipeline, it queues EVALSHA and
    notes the call in `calls`, so `rerun_noscript` can send it again as EVAL
    if the node answers NOSCRIPT (a promoted replica, a restarted node: their
    script caches start empty). Called directly, redis-py's Script retries."""

    def __init__(self, client: RedisCluster, text: str, calls: list[Any]) -> None:
        self.text = text
        self.script = client.register_script(text)
        self.calls = calls

    @property
    def sha(self) -> str:
        """The script's sha (redis_batch.py queues EVALSHA by it, reloads on NOSCRIPT)."""
        return str(self.script.sha)

    @sha.setter
    def sha(self, value: str) -> None:
        self.script.sha = value

    def __call__(self, keys: list[str], args: list[Any], client: Any = None) -> Any:
        if isinstance(client, ClusterPipeline):
            self.calls.append((len(client), self, keys, args))
            return client.evalsha(self.script.sha, len(keys), *keys, *args)
        return self.script(keys=keys, args=args, client=client)


def rerun_noscript(client: RedisCluster, calls: list[Any], results: list[Any]) -> list[Any]:
    """Send again, as EVAL, the script calls of a pipeline that got NOSCRIPT (which
    means they never ran); their answers replace the errors in `results`."""
    again = [(pos, script, keys, args) for pos, script, keys, args in calls
             if pos < len(results) and isinstance(results[pos], NoScriptError)]
    if not again:
        return results
    p: Any = client.pipeline(transaction=False)  # type: ignore[no-untyped-call]
    for _, script, keys, args in again:
        p.execute_command("EVAL", script.text, len(keys), *keys, *args)  # caches it too
    for (pos, *_), res in zip(again, p.execute(raise_on_error=False), strict=True):
        results[pos] = res
    log.info("re-sent %d script call(s) as EVAL after NOSCRIPT (a node's script cache "
             "was empty: a promoted replica, a restart)", len(again))
    return results
