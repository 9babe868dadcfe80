"""Micro-benchmark of the receive path: µs of CPU per message in `LoadPeer.feed`.

    python -m benchmarks.experiments.feedbench            # 100,000 deliveries per figure

The load generator's CPU per delivered message caps what any relay can show
on a shared machine, so this measures the parsing half of it without
sockets: realistic frames/lines, fed as one message per call (what a
receiver mostly gets at modest rates) and as 20 per call (a backlog), to
one receiver (hot caches) and round-robin to 500 (one load process's share
of N=1000, which is what a real run does to the caches).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from benchmarks import payload
from benchmarks.dialects import IrcLoadPeer, LoadPeer, NativeLoadPeer, TextLoadPeer
from transports.native import frame

ROOM = "bench1a2b0"


def native_stream(n: int, size: int) -> tuple[LoadPeer, list[bytes]]:
    """A ready NativeLoadPeer and `n` msg frames as the relay sends them."""
    peer = NativeLoadPeer("bxr1", ROOM, size, True)
    peer.feed(frame({"t": "joined", "room": ROOM, "members": [], "seq": 0}), 0)
    msgs = [frame({"t": "msg", "room": ROOM, "seq": k, "ts": 1.7e9 + k / 1000,
                   "from": f"b1a2bs{k % 4}",
                   "text": payload.make(1_000_000 + k, k % 4, k // 4 + 1, size)})
            for k in range(1, n + 1)]
    return peer, msgs


def text_stream(n: int, size: int) -> tuple[LoadPeer, list[bytes]]:
    """A ready TextLoadPeer and `n` lines in the relay's text dialect."""
    peer = TextLoadPeer("bxr1", ROOM, size, True, greeting=False)
    msgs = [f"<b1a2bs{k % 4}> {payload.make(1_000_000 + k, k % 4, k // 4 + 1, size)}\n".encode()
            for k in range(n)]
    return peer, msgs


def irc_stream(n: int, size: int) -> tuple[LoadPeer, list[bytes]]:
    """A ready IrcLoadPeer and `n` PRIVMSG lines."""
    peer = IrcLoadPeer("bxr1", ROOM, size, True)
    peer.ready = True
    msgs = [(f":b1a2bs{k % 4}!~b1a2bs{k % 4}@127.0.0.1 PRIVMSG #{ROOM} :"
             f"{payload.make(1_000_000 + k, k % 4, k // 4 + 1, size)}\r\n").encode()
            for k in range(n)]
    return peer, msgs


STREAMS: dict[str, Callable[[int, int], tuple[LoadPeer, list[bytes]]]] = {
    "native": native_stream, "text": text_stream, "irc": irc_stream}


def measure(dialect: str, n: int, chunk: int, size: int, peers: int = 1) -> float:
    """µs of process CPU per delivery, `chunk` messages per call to each of `peers`.

    Every peer gets the same stream (a room's fan-out), so `n` deliveries are
    n / peers messages; the tallies are checked so a broken parser shows.
    """
    per_peer = max(chunk, n // peers // chunk * chunk)
    made = [STREAMS[dialect](per_peer, size) for _ in range(peers)]
    msgs = made[0][1]
    chunks = [b"".join(msgs[i : i + chunk]) for i in range(0, per_peer, chunk)]
    feeds = [peer.feed for peer, _ in made]
    t0 = time.process_time()
    for c in chunks:
        for feed in feeds:
            feed(c, 2_000_000)
    cpu = time.process_time() - t0
    for peer, _ in made:
        t = peer.tally()
        if t.delivered != per_peer or t.corrupt or t.gaps or t.duplicates or t.reorders:
            raise AssertionError(f"{dialect}: bad tally {t}")
    return cpu / (per_peer * peers) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many")
    args = ap.parse_args()
    for dialect in STREAMS:
        for peers in (1, 500):
            for chunk in (1, 20):
                best = min(measure(dialect, args.n, chunk, args.size, peers)
                           for _ in range(args.repeat))
                print(f"{dialect:6} {peers:3} peers, chunk {chunk:2}: {best:5.2f} µs/delivery")


if __name__ == "__main__":
    main()
