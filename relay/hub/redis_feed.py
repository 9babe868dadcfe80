"""The Redis engine's subscription thread: channel messages in, hub loop woken.

The hub loop is single-threaded and must not wait on Redis, so one daemon
thread owns a pub/sub connection of its own: it applies the subscriptions
the loop asks for (a queue, since redis-py's PubSub is not thread-safe),
appends every message to a deque and writes one byte to a socketpair the
loop polls (`wake_fd`), so the loop wakes at once and drains the deque in
`RedisEngine.incoming()`. When Redis goes away the thread reconnects with
backoff, subscribes again and queues a `None` marker: the loop then checks
every room's tail for what it missed meanwhile.
"""

from __future__ import annotations

import collections
import logging
import queue
import socket
import threading
from typing import Any

import redis

log = logging.getLogger("chat_relay.hub")

POLL = 0.05  # seconds between subscription changes being applied at the latest
BACKOFF_MAX = 5.0
EXPECTED = (redis.RedisError, OSError, redis.exceptions.RedisClusterException)


class Feed:
    """Subscribes on behalf of the hub loop and hands it what arrives."""

    def __init__(self, client: Any, channels: list[str]) -> None:
        self._client = client
        self.items: collections.deque[tuple[str, bytes] | None] = collections.deque()
        self._changes: queue.SimpleQueue[tuple[bool, str]] = queue.SimpleQueue()
        self._wanted: set[str] = set(channels)
        self._rx, self._tx = socket.socketpair()
        self._rx.setblocking(False)
        self._tx.setblocking(False)
        self._running = True
        self._signalled = False  # a wake byte is on its way to the loop
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-feed", daemon=True)
        self._thread.start()

    @property
    def wake_fd(self) -> int:
        return self._rx.fileno()

    def subscribe(self, channel: str) -> None:
        self._changes.put((True, channel))

    def unsubscribe(self, channel: str) -> None:
        self._changes.put((False, channel))

    def wake(self) -> None:
        """Wake the hub loop at once (it has work left over from this wake)."""
        self._wake()

    def drain(self) -> list[tuple[str, bytes] | None]:
        """Everything received since the last call (None: the feed reconnected)."""
        try:
            while self._rx.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        # After eating the wake bytes, before taking the items: a wake sent from
        # now on stays for the loop (cleared before the read, a byte sent between
        # the two was eaten with the flag left set, and no later wake was sent).
        self._signalled = False
        got = []
        items = self.items
        while items:
            got.append(items.popleft())
        return got

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2)
        self._rx.close()
        self._tx.close()

    # The thread -----------------------------------------------------------------

    def _wake(self) -> None:
        # One byte per drain, not per message: a syscall per message cost the
        # hub's GIL ~8% at 8,000 msgs/s. Cleared by drain() before it takes the items.
        if self._signalled:
            return
        self._signalled = True
        try:
            self._tx.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the loop has a wake pending already
        except OSError:
            pass  # closing

    BACKOFF_MAX = BACKOFF_MAX

    def _pubsub(self) -> Any:
        return self._client.pubsub()

    def _run(self) -> None:
        delay, first = 0.1, True
        while self._running:
            pubsub = None
            try:
                pubsub = self._pubsub()
                self._listen(pubsub, first)
                delay = 0.1
            except Exception as exc:  # noqa: BLE001 - the feed must outlive any error
                self.connected.clear()
                level = logging.WARNING if isinstance(exc, EXPECTED) else logging.ERROR
                log.log(level, "redis subscription lost (%s: %s); retrying in %.1f s",
                        type(exc).__name__, exc, delay)
                threading.Event().wait(delay)
                delay = min(delay * 2, self.BACKOFF_MAX)
            finally:
                first = False
                try:
                    if pubsub is not None:
                        pubsub.close()
                except Exception:  # noqa: BLE001 - already broken
                    pass

    def _listen(self, pubsub: Any, first: bool) -> None:
        self._apply(pubsub)
        if self._wanted:
            pubsub.subscribe(*self._wanted)
        else:
            pubsub.ping()  # proves the connection before we say so
        self.connected.set()
        if not first:
            self.items.append(None)  # resync: check what we missed
            self._wake()
        while self._running:
            self._apply(pubsub)
            msg = pubsub.get_message(timeout=POLL)
            while msg is not None:
                kind = msg.get("type")
                if kind in ("message", "subscribe"):
                    channel = msg["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    # A confirmed subscription ("s"): what came before it is in the stream.
                    self.items.append((channel, msg["data"] if kind == "message" else b"s"))
                    self._wake()
                msg = pubsub.get_message(timeout=0)

    def _apply(self, pubsub: Any) -> None:
        for on, channel in self._take_changes():
            if on:
                pubsub.subscribe(channel)
            else:
                pubsub.unsubscribe(channel)

    def _take_changes(self) -> list[tuple[bool, str]]:
        """The subscription changes the loop asked for that change something."""
        changes: list[tuple[bool, str]] = []
        while True:
            try:
                on, channel = self._changes.get_nowait()
            except queue.Empty:
                return changes
            if on and channel not in self._wanted:
                self._wanted.add(channel)
                changes.append((on, channel))
            elif not on and channel in self._wanted:
                self._wanted.discard(channel)
                changes.append((on, channel))
