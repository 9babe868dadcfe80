"""One connection to a hub: socket setup, CURVE, and the upstream header seqs.

Workers, the supervisor and the hub benchmark talk to a hub the same way:
an XSUB socket with explicit high-water marks, CURVE when the bus is TCP,
subscriptions sent as data frames, and every upstream batch framed as
`[REQUEST, (origin, epoch, seq), body]` with seq counted here, so the hub
sees a lost batch as a jump (wire.GapCounter). The socket belongs to the
thread that made the link; a link is not shared between threads.
"""

from __future__ import annotations

from typing import Any

import zmq

from relay import curve
from relay.bus.wire import REQUEST, Refuse, pack, pack_batch

SUBSCRIBE, UNSUBSCRIBE = b"\x01", b"\x00"


def tune(sock: zmq.Socket[bytes], hwm: int) -> None:
    """HWMs are set explicitly; linger short so shutdown never hangs on a dead peer."""
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, 500)


class BusLink:
    """An XSUB socket connected to the hub at `endpoint`, sending as `origin`.

    `epoch` tells the hub a restarted sender from the same one (its seqs
    start again); `watch` names the side for CURVE handshake logs ("node"),
    or None to log nothing.
    """

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, origin: str, *, hwm: int,
                 keys: str = "", epoch: int = 0, watch: str | None = None) -> None:
        self.origin = origin
        self.epoch = epoch
        self.seq = 0  # upstream batches sent
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.XSUB)
        tune(self.sock, hwm)
        if curve.is_tcp(endpoint):  # across hosts: CURVE, and say why a handshake fails
            curve.make_client(self.sock, keys)
            if watch is not None:
                curve.watch_handshakes(self.sock, watch)
        self.sock.connect(endpoint)

    def subscribe(self, topic: bytes) -> None:
        self.sock.send(SUBSCRIBE + topic)

    def unsubscribe(self, topic: bytes) -> None:
        self.sock.send(UNSUBSCRIBE + topic)

    def send(self, items: list[Any], refuse: Refuse | None = None,
             limit_nesting: bool = False) -> bool:
        """One upstream bus message for `items` (wire dicts, see messages.py).

        An item that cannot be packed goes to `refuse` (wire.pack_batch);
        without one it is dropped. False when nothing was left to send.
        """
        body = pack_batch(items, refuse or _drop, limit_nesting)
        if body is None:
            return False
        self.send_body(body)
        return True

    def send_body(self, body: bytes) -> None:
        """An already packed batch (a benchmark packs its batches once)."""
        self.seq += 1
        self.sock.send_multipart([REQUEST, pack([self.origin, self.epoch, self.seq]), body],
                                 copy=False)

    def close(self, linger: int | None = None) -> None:
        self.sock.close(linger=linger)


def _drop(item: Any, exc: Exception) -> None:
    return None
