"""The bus's wire format: topics, frames, packing, and counting gaps.

Downstream (hub XPUB -> worker XSUB) every message is three frames:
    [topic, header, body]
    topic  = b"r" room b"\\0"    a room's traffic, for every worker with members in it
           | b"w" worker b"\\0"  replies for the connections of one worker
           | b"*\\0"             announcements to every worker (hub epoch)
    header = msgpack [origin, epoch, seq]: seq counts messages per topic, so
             a receiver sees a gap as a jump (counted, logged, never silent)
    body   = msgpack list of items (a batch)

Upstream (worker XSUB -> hub XPUB) a worker sends [b"R", header, body] with a
batch of requests. XPUB hands such data frames to the hub in the same pipe
order as the worker's subscriptions, which is what makes a join race-free: the
subscription to a room is in place before the hub sees the join request.
A data frame must not start with 0x00 or 0x01 (those are (un)subscriptions).

A body is packed item by item (`pack_batch`): msgpack's array header followed
by the items' bytes is the same array, so one item that cannot be packed
(an int past 64 bits, nesting msgpack refuses) costs that item only, and the
batch costs no second encode. Request items also nest at most MAX_NESTING
levels, so that a reply wrapping a client's value (one or two levels deeper,
inside a batch) is still within what msgpack unpacks (1,024 levels).

The NUL after a name keeps prefix matching exact ("lobby" never matches
"lobby2"); room names cannot contain NUL.

What goes inside a body (each request and control item, typed) is
messages.py; the socket that carries it (setup, CURVE, header seqs) is link.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgpack

REQUEST = b"R"
ANNOUNCE = b"*\x00"

_packer = msgpack.Packer(use_bin_type=True)


def room_topic(room: str) -> bytes:
    return b"r" + room.encode() + b"\x00"


def worker_topic(worker: str) -> bytes:
    return b"w" + worker.encode() + b"\x00"


def topic_room(topic: bytes) -> str:
    return topic[1:-1].decode()


MAX_NESTING = 64  # levels a request item may nest (its own map counts as one)
_CONTAINERS = (list, tuple, dict)
_CONTAINER_TYPES = frozenset(_CONTAINERS)  # exact types: msgpack gives no subclasses


def pack(obj: Any) -> bytes:
    return _packer.pack(obj)


class TooDeep(ValueError):
    """A request item nests deeper than MAX_NESTING."""


def nesting(obj: Any) -> int:
    """How many container levels `obj` has (a scalar has 0); iterative, any depth."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, _CONTAINERS):
            continue
        deepest = max(deepest, depth)
        for child in (value.values() if isinstance(value, dict) else value):
            if isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))
    return deepest


def check_nesting(item: Any, data: bytes) -> None:
    """Raise TooDeep when `item` (packed as `data`) nests past MAX_NESTING.

    Each level costs at least one byte, so short items skip the walk, and so
    do items with no container inside (a say: the hot path).
    """
    if len(data) <= MAX_NESTING:
        return
    if type(item) is dict:
        for value in item.values():
            if type(value) in _CONTAINER_TYPES:
                break
        else:
            return
    if nesting(item) > MAX_NESTING:
        raise TooDeep(f"nests more than {MAX_NESTING} levels deep")


Refuse = Callable[[Any, Exception], Any]


def pack_batch(items: list[Any], refuse: Refuse, limit_nesting: bool = False) -> bytes | None:
    """Pack `items` as one msgpack array, each item on its own.

    An item that cannot be packed (or, with `limit_nesting`, nests too deep)
    goes to `refuse(item, exc)`, which returns an item to try in its place
    or None to drop it. Returns None when nothing is left.
    """
    parts = []
    for item in items:
        while item is not None:
            try:
                data = _packer.pack(item)
                if limit_nesting:
                    check_nesting(item, data)
            except Exception as exc:  # msgpack raises Overflow/Value/TypeError: all one here
                item = refuse(item, exc)
                continue
            parts.append(data)
            break
    if not parts:
        return None
    return _packer.pack_array_header(len(parts)) + b"".join(parts)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class GapCounter:
    """Tracks (origin, epoch, seq) per topic and counts what went missing."""

    def __init__(self) -> None:
        self._last: dict[bytes, tuple[str, int, int]] = {}
        self.gaps = 0
        self.missing = 0

    def check(self, topic: bytes, origin: str, epoch: int, seq: int) -> int:
        """Record one header; returns how many messages were skipped before it."""
        last = self._last.get(topic)
        self._last[topic] = (origin, epoch, seq)
        if last is None or last[0] != origin or last[1] != epoch or seq <= last[2]:
            return 0
        missed = seq - last[2] - 1
        if missed:
            self.gaps += 1
            self.missing += missed
        return missed

    def catch_up(self, topic: bytes, origin: str, epoch: int, seq: int) -> int:
        """The sender says it has sent up to `seq` on `topic`: count what never came.

        This finds a dropped *tail* (nothing after it arrives to show the jump);
        the seq is recorded so the next message does not count the gap twice.
        """
        last = self._last.get(topic)
        if last is None or last[0] != origin or last[1] != epoch or seq <= last[2]:
            return 0
        missed = seq - last[2]
        self.gaps += 1
        self.missing += missed
        self._last[topic] = (origin, epoch, seq)
        return missed

    def forget(self, topic: bytes) -> None:
        self._last.pop(topic, None)


def log_contained(logger: logging.Logger, seen: set[tuple[str, str]], what: str,
                  exc: BaseException) -> None:
    """One line for a request or item dropped because handling it raised.

    The first drop of each (what, exception type) also logs its traceback: a
    hostile value repeats one line, a new bug shows where it is.
    """
    key = (what.split(" ", 1)[0], type(exc).__name__)
    first = key not in seen and len(seen) < 1000
    if first:
        seen.add(key)
    logger.warning("dropped %s: %s: %s", what, type(exc).__name__, str(exc)[:200],
                   exc_info=exc if first else None)
