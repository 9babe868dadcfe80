"""Weigh the hub with 10,000 rooms whose history is filled to --history-bytes.

    python -m benchmarks.experiments.room_memory [--text 4000] [--history-bytes N] [--over 1.5]

Starts a relay (one worker), opens 100 native clients that join 100 rooms
each (10,000 rooms), then says messages round-robin over every room until
`--over` times the budget has been sequenced (so eviction has been running
for a while), and prints the hub process's RSS at each step. Run by hand;
the figure goes in docs (never a timed test).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from typing import Any

import psutil

from relay.hub.history import msg_cost
from tests.relayproc import RelayProcess
from transports.native import FrameDecoder, frame

CLIENTS = 100
ROOMS_EACH = 100


class Client:
    def __init__(self, port: int, nick: str, rooms: list[str]) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.decoder = FrameDecoder(16 * 1024 * 1024)
        self.rooms = rooms
        self.send({"t": "hello", "v": 1, "nick": nick, "rooms": rooms[:64]})
        for room in rooms[64:]:
            self.send({"t": "join", "room": room})

    def send(self, body: dict[str, Any]) -> None:
        self.sock.sendall(frame(body))

    def wait(self, t: str, count: int) -> None:
        """Read until `count` bodies of type `t` came (an error fails loudly)."""
        seen = 0
        while seen < count:
            data = self.sock.recv(1 << 20)
            if not data:
                raise SystemExit("the relay closed a client")
            for body in self.decoder.feed(data):
                if not isinstance(body, dict) or body.get("t") == "error":
                    raise SystemExit(f"relay error: {body}")
                seen += body.get("t") == t


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", type=int, default=4000, help="bytes of text per message")
    parser.add_argument("--history-bytes", type=int, default=128 * 1024 * 1024)
    parser.add_argument("--over", type=float, default=1.5,
                        help="sequence this many budgets' worth of messages")
    parser.add_argument("--burst", type=int, default=10,
                        help="messages each client has in flight (bus queues grow with it)")
    parser.add_argument("--verbose", action="store_true", help="RSS after every round")
    args = parser.parse_args(argv)
    text = "x" * args.text
    cost = msg_cost({"text": text})
    total = int(args.history_bytes * args.over / cost) + 1
    relay = RelayProcess(workers=1, args=["--rate-limit", "0", "--history-bytes",
                                          str(args.history_bytes)]).start()
    try:
        hub = relay.hub_pid()
        print(f"hub idle:                    {rss_mb(hub):8.1f} MB", flush=True)
        clients = [Client(relay.port, f"c{i}", [f"c{i}r{j}" for j in range(ROOMS_EACH)])
                   for i in range(CLIENTS)]
        for c in clients:
            c.wait("joined", ROOMS_EACH)
        print(f"hub with {CLIENTS * ROOMS_EACH} rooms:        {rss_mb(hub):8.1f} MB", flush=True)
        sent, start, rnd = 0, time.monotonic(), 0
        while sent < total:
            for c in clients:  # `burst` messages each in flight, in the next rooms
                for k in range(args.burst):
                    room = c.rooms[(rnd * args.burst + k) % ROOMS_EACH]
                    c.send({"t": "say", "room": room, "text": text})
            for c in clients:
                c.wait("msg", args.burst)
            before, rnd = sent, rnd + 1
            sent += CLIENTS * args.burst
            if before * cost < args.history_bytes <= sent * cost:
                print(f"hub at the budget ({sent} msgs): {rss_mb(hub):8.1f} MB", flush=True)
            elif args.verbose and sent // 10_000 != before // 10_000:
                print(f"  {sent:7d} msgs ({sent * cost / args.history_bytes:4.2f} budgets): "
                      f"{rss_mb(hub):8.1f} MB", flush=True)
        took = time.monotonic() - start
        final = rss_mb(hub)
        print(f"hub after {sent} msgs ({args.over}x budget, {took:.0f} s): {final:8.1f} MB")
        print(f"budget {args.history_bytes / 2**20:.0f} MiB, text {args.text} B, "
              f"accounted {cost} B/msg, {args.history_bytes // cost} msgs fit")
    finally:
        relay.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
