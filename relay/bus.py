"""The bus between workers and the hub: topics, frames and socket options.

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

The NUL after a name keeps prefix matching exact ("lobby" never matches
"lobby2"); room names cannot contain NUL.
"""

from __future__ import annotations

from typing import Any

import msgpack
import zmq

REQUEST = b"R"
ANNOUNCE = b"*\x00"

_packer = msgpack.Packer(use_bin_type=True)


def room_topic(room: str) -> bytes:
    return b"r" + room.encode() + b"\x00"


def worker_topic(worker: str) -> bytes:
    return b"w" + worker.encode() + b"\x00"


def topic_room(topic: bytes) -> str:
    return topic[1:-1].decode()


def pack(obj: Any) -> bytes:
    return _packer.pack(obj)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def tune(sock: zmq.Socket[bytes], hwm: int) -> None:
    """HWMs are set explicitly; linger short so shutdown never hangs on a dead peer."""
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, 500)


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
