"""The design floor with one event loop per worker instead of a thread per client.

The same floor as `floor_relay.py` (same wire: bare lines; same hub process
and zmq ipc bus; same W worker processes on one SO_REUSEPORT port; same
chat-bench compatibility), with ONE difference, so that comparing the two
prices the threading shape alone: each worker runs a single epoll loop on
its main thread that accepts, reads every client (cut at the last newline),
sends what it read upstream as ONE msgpack bus message per loop turn, reads
the hub's batches from the zmq socket (its FD is in the same epoll set) and
fans them out to every local client. No reader threads, no bus thread, no
deque and eventfd between them, no GIL hand-off.

`--no-hub` prices the hub hop alone: a worker sequences what it read itself
and delivers it to its own clients at once, and publishes it to the other
workers directly (a zmq PUB per worker, every worker's SUB connected to the
others'), so a message makes one ipc hop instead of two and no hub process
wakes for it. Order per sender is kept (what chat-bench checks on this
wire); one order for the room across workers is not, which is what the hub
is for in the design.

    python -m benchmarks.baselines.floor_loop_relay --port 0 [--workers W] [--no-hub]

prints `floor loop relay listening on HOST:PORT` once every worker accepts.
"""

from __future__ import annotations

import argparse
import multiprocessing
import select
import socket
from typing import Any

import msgpack
import zmq

from benchmarks.baselines.floor_relay import hub, run_until_stopped, start_args

READ_SIZE = 65536


class LoopWorker:
    """One worker process: one epoll loop for the listener, the clients and the bus."""

    def __init__(self, listener: socket.socket, endpoints: list[str], own: str | None) -> None:
        """`endpoints`: where the bus socket connects (the hub, or the other workers);
        `own`: with no hub, the endpoint this worker publishes on."""
        self.listener = listener
        self.clients: dict[int, socket.socket] = {}
        self.held: dict[int, bytes] = {}
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.local = own is not None
        if own is None:  # through the hub: one XSUB, upstream and downstream
            self.up: zmq.Socket[bytes] = self.ctx.socket(zmq.XSUB)
            self.up.connect(endpoints[0])
            self.up.send(b"\x01room")
            self.down = self.up
        else:  # peer to peer: publish to the others, subscribe to each of them
            self.up = self.ctx.socket(zmq.PUB)
            self.up.bind(own)
            self.down = self.ctx.socket(zmq.SUB)
            self.down.setsockopt(zmq.SUBSCRIBE, b"room")
            for ep in endpoints:
                self.down.connect(ep)
        self.seq = 0

    def run(self) -> None:
        """Serve forever: one epoll_wait a turn, then reads, one bus send, bus drain."""
        ep = select.epoll()
        lfd = self.listener.fileno()
        zfd = int(self.down.getsockopt(zmq.FD))
        ep.register(lfd, select.EPOLLIN)
        ep.register(zfd, select.EPOLLIN)  # edge-like: drained until EAGAIN every turn
        clients, held = self.clients, self.held
        while True:
            chunks: list[bytes] = []
            for fd, _ev in ep.poll():
                if fd == lfd:
                    self.accept(ep)
                elif fd != zfd:
                    conn = clients.get(fd)
                    if conn is None:
                        continue
                    try:
                        data = conn.recv(READ_SIZE, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        self.forget(ep, fd)
                        continue
                    if fd in held:
                        data = held.pop(fd) + data
                    cut = data.rfind(b"\n") + 1
                    if cut < len(data):
                        held[fd] = data[cut:]
                    if cut:
                        chunks.append(data[:cut])
            if chunks:
                lines = b"".join(chunks)
                if self.local:
                    self.seq += 1
                    self.up.send_multipart([b"room", msgpack.packb(self.seq),
                                            msgpack.packb(lines)])
                    self.fan_out(lines)
                else:
                    self.up.send(msgpack.packb(lines))
            # The zmq FD signals only a change: drain until EAGAIN on every turn
            # (a send above may have consumed the signal of a waiting batch).
            while True:
                try:
                    _topic, _seq, body = self.down.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.fan_out(msgpack.unpackb(body))

    def accept(self, ep: select.epoll) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.clients[conn.fileno()] = conn
            ep.register(conn.fileno(), select.EPOLLIN)

    def forget(self, ep: select.epoll, fd: int) -> None:
        conn = self.clients.pop(fd, None)
        self.held.pop(fd, None)
        if conn is not None:
            ep.unregister(fd)
            conn.close()

    def fan_out(self, lines: bytes) -> None:
        """One non-blocking send per client; a full socket is waited for, as in
        floor_relay (a baseline at light load never meets it)."""
        for conn in list(self.clients.values()):
            try:
                sent = conn.send(lines, socket.MSG_DONTWAIT)
                if sent < len(lines):
                    conn.sendall(lines[sent:])
            except BlockingIOError:
                conn.sendall(lines)
            except OSError:
                pass  # the loop reads its EOF or error and forgets it


def worker(host: str, port: int, endpoints: list[str], own: str | None, ready: Any) -> None:
    listener = socket.create_server((host, port), backlog=4096, reuse_port=True)
    listener.setblocking(False)
    w = LoopWorker(listener, endpoints, own)
    ready.set()
    w.run()


def main(argv: list[str] | None = None) -> None:
    def no_hub(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--no-hub", action="store_true",
                        help="workers sequence locally and publish to each other (no hub hop)")

    args, holder, port, bus_dir = start_args(__doc__, argv, "floor-loop-relay-", no_hub)
    fork = multiprocessing.get_context("fork")
    procs = []
    events = []
    plans: list[tuple[list[str], str | None]]
    if args.no_hub:
        eps = [f"ipc://{bus_dir}/w{i}" for i in range(args.workers)]
        plans = [([e for j, e in enumerate(eps) if j != i], eps[i]) for i in range(args.workers)]
    else:
        endpoint = f"ipc://{bus_dir}/bus"
        procs.append(fork.Process(target=hub, args=(endpoint,), daemon=True))
        plans = [([endpoint], None)] * args.workers
    for peers, own in plans:
        ev = fork.Event()
        events.append(ev)
        procs.append(fork.Process(target=worker, args=(args.host, port, peers, own, ev),
                                  daemon=True))
    run_until_stopped(procs, events, holder,
                      f"floor loop relay listening on {args.host}:{port}", bus_dir)

if __name__ == "__main__":
    main()
