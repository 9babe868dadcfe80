"""What the hub's handlers emit: output items, reply bodies, the request's client.

Every handler appends (topic, item) pairs to one `Out` list in the order it
decides them; the process loop only coalesces runs of one topic, never
reorders. Items:

    worker topic: [conn, body]                 one body for one connection
                  [None, body]                 for the worker itself (`_ready`)
    room topic:   [body, worker, conn, id]     a msg (author and its id, which
                                               only the author gets back) or a
                                               presence (its author, id None)
                  [body, [[worker, conn]...], None, None]
                                               a presence_batch and its authors
"""

from __future__ import annotations

import time
from typing import Any

from relay.bus.wire import worker_topic

Out = list[tuple[bytes, Any]]
ConnKey = tuple[str, int]  # (worker id, connection id): one client, relay-wide
Body = dict[str, Any]


def now_ms() -> int:
    """Wall-clock milliseconds: the hub's default clock for ts and sanctions."""
    return time.time_ns() // 1_000_000


def to(out: Out, key: ConnKey, body: Body) -> None:
    """Queue `body` for one client, on its worker's topic."""
    out.append((worker_topic(key[0]), [key[1], body]))


def conn_key(worker: str, req: dict[str, Any]) -> ConnKey:
    """The client a request is about: its worker and the `c` it names."""
    return (worker, int(req.get("c", -1)))
