"""The subscription thread in a Redis Cluster: every channel sharded, per node.

In a cluster every channel of ours is a shard channel: SEQUENCE SPUBLISHes a
room's batches on `cr:{room}:ch`, in the room's slot, so only the primary
that owns the room (and its replicas) carry them, and the host and
relay-wide channels are sharded too (little traffic; redis-py's cluster
pipeline refuses a classic PUBLISH, and one kind of subscription keeps this
simple). So this feed keeps one pub/sub connection per primary that owns a
channel it wants, SSUBSCRIBEs each channel there, and waits on all the
sockets at once.

When anything goes wrong (a node died, a failover moved a slot: Redis ends
the shard subscriptions of a slot it no longer owns with an unasked
SUNSUBSCRIBE; a MOVED), it drops every connection, learns the topology
again and subscribes afresh, with backoff, then queues the `None` marker
like a standalone reconnect: the hub loop checks every watched room's seq
and fills what it missed from the room's stream, in seq order.
"""

from __future__ import annotations

import select
import threading
from typing import Any

import redis

from relay.hub.redis_feed import POLL, Feed


class Moved(redis.exceptions.RedisError):
    """A shard subscription ended without our asking: its slot moved."""


class ShardFeed(Feed):
    """Feed over a RedisCluster client (its own, not the hub thread's)."""

    BACKOFF_MAX = 1.0  # a failover takes a node timeout or two: look again soon

    def _pubsub(self) -> Any:
        return _Subs(self._client)

    def _listen(self, pubsub: Any, first: bool) -> None:
        subs: _Subs = pubsub
        if not first:
            self._client.nodes_manager.initialize()  # the topology after a failover
        self._apply(subs)
        subs.start(self._wanted)
        self.connected.set()
        if not first:
            self.items.append(None)  # resync: check what we missed
            self._wake()
        while self._running:
            self._apply(subs)
            for msg in subs.read(POLL):
                kind = msg.get("type")
                if isinstance(kind, bytes):
                    kind = kind.decode()
                channel = msg["channel"]
                if isinstance(channel, bytes):
                    channel = channel.decode()
                if kind == "sunsubscribe" and channel in self._wanted:
                    raise Moved(channel)
                if kind == "smessage":
                    self.items.append((channel, msg["data"]))
                elif kind == "ssubscribe":
                    self.items.append((channel, b"s"))  # live: what came before is in the stream
                else:
                    continue
                self._wake()

    def _apply(self, pubsub: Any) -> None:
        subs: _Subs = pubsub
        for on, channel in self._take_changes():
            if on:
                subs.subscribe(channel)
            else:
                subs.unsubscribe(channel)


class _Subs:
    """One sharded pub/sub connection per primary that owns a channel we want."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.shards: dict[str, Any] = {}  # node name -> pubsub
        self.where: dict[str, str] = {}  # channel -> node name

    def start(self, channels: set[str]) -> None:
        for channel in sorted(channels):
            self.subscribe(channel)

    def subscribe(self, channel: str) -> None:
        node = self.client.get_node_from_key(channel)
        pubsub = self.shards.get(node.name)
        if pubsub is None:
            pubsub = self.shards[node.name] = self.client.get_redis_connection(node).pubsub()
        pubsub.ssubscribe(channel)
        self.where[channel] = node.name

    def unsubscribe(self, channel: str) -> None:
        name = self.where.pop(channel, None)
        if name is not None and name in self.shards:
            self.shards[name].sunsubscribe(channel)

    def read(self, timeout: float) -> list[dict[str, Any]]:
        """What has arrived on any connection, waiting up to `timeout` for something."""
        subs = list(self.shards.values())
        got = self._ready(subs)
        if got:
            return got
        # redis-py waits on one pub/sub connection at a time; to wait on all of
        # them at once, select on their sockets (what buffered data there is,
        # _ready read above: get_message(timeout=0) checks the buffer first).
        socks = [s.connection._sock for s in subs if s.connection is not None
                 and s.connection._sock is not None]
        if socks:
            select.select(socks, [], [], timeout)
        else:
            threading.Event().wait(timeout)
        return self._ready(subs)

    @staticmethod
    def _ready(subs: list[Any]) -> list[dict[str, Any]]:
        got = []
        for sub in subs:
            while sub.connection is not None:
                msg = sub.get_message(timeout=0)
                if msg is None:
                    break
                got.append(msg)
        return got

    def close(self) -> None:
        for sub in self.shards.values():
            try:
                sub.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
