"""chat-relay's design with nothing on top: the floor of its latency, as a baseline.

DESIGN.md's data path, every hop and no feature. W worker processes accept
on one port (SO_REUSEPORT); a thread per client cuts what it reads at the
last newline and hands the lines (a deque and an eventfd, as chat-relay's
readers do) to the worker's bus thread, which sends them upstream as ONE
msgpack bus message per wake, over zmq ipc, to a hub process; the hub stamps
a seq and publishes the batch to every worker; each worker's bus thread
sends it to every local client, the sender too. No dialect, validation,
rooms, nicks, limits, history or outboxes: a client whose socket buffer is
full is waited for with a blocking send, which a baseline measured at light
load never meets.

What it answers: how much of chat-relay's latency the design's hops cost
on this machine, apart from everything chat-relay does on top of them.
chat-bench talks to it through its text dialect with no greeting (bare
lines), as to the seed server.

    python -m benchmarks.baselines.floor_relay --port 0 [--workers W]

prints `floor relay listening on HOST:PORT` once every worker accepts.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any

import msgpack
import zmq

READ_SIZE = 65536


def hub(endpoint: str) -> None:
    """Sequence every worker's batch and publish it to all workers."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock: zmq.Socket[bytes] = ctx.socket(zmq.XPUB)
    sock.bind(endpoint)
    seq = 0
    while True:
        frames = sock.recv_multipart()
        if len(frames) != 1 or frames[0][:1] in (b"\x00", b"\x01"):
            continue  # a subscription: XPUB passes them up too
        seq += 1  # the body travels on as it came (DESIGN.md: no re-encoding in the hub)
        sock.send_multipart([b"room", msgpack.packb(seq), frames[0]])


class Worker:
    """One worker process: an acceptor, a reader per client, one bus thread."""

    def __init__(self, listener: socket.socket, endpoint: str) -> None:
        self.listener = listener
        self.endpoint = endpoint
        self.clients: dict[int, socket.socket] = {}
        self.lock = threading.Lock()
        self.queue: deque[bytes] = deque()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def accept(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.clients[conn.fileno()] = conn
            threading.Thread(target=self.read, args=(conn,), daemon=True).start()

    def read(self, conn: socket.socket) -> None:
        held = b""
        fd = conn.fileno()
        try:
            while data := conn.recv(READ_SIZE):
                data = held + data
                cut = data.rfind(b"\n") + 1
                held = data[cut:]
                if cut:
                    self.queue.append(data[:cut])
                    os.eventfd_write(self.wake_fd, 1)
        except OSError:
            pass
        finally:
            with self.lock:
                self.clients.pop(fd, None)
            conn.close()

    def bus(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        sock: zmq.Socket[bytes] = ctx.socket(zmq.XSUB)
        sock.connect(self.endpoint)
        sock.send(b"\x01room")
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self.wake_fd, zmq.POLLIN)
        queue = self.queue
        while True:
            ready = dict(poller.poll())
            if self.wake_fd in ready:
                try:
                    os.eventfd_read(self.wake_fd)
                except BlockingIOError:
                    pass
                chunks = []
                while queue:
                    chunks.append(queue.popleft())
                if chunks:
                    sock.send(msgpack.packb(b"".join(chunks)))
            if sock in ready:
                while True:
                    try:
                        _topic, _seq, body = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.fan_out(msgpack.unpackb(body))

    def fan_out(self, lines: bytes) -> None:
        with self.lock:
            clients = list(self.clients.values())
        for conn in clients:
            try:
                sent = conn.send(lines, socket.MSG_DONTWAIT)
                if sent < len(lines):
                    conn.sendall(lines[sent:])
            except BlockingIOError:
                conn.sendall(lines)
            except OSError:
                pass  # its reader sees the error and forgets it


def worker(host: str, port: int, endpoint: str, ready: Any) -> None:
    listener = socket.create_server((host, port), backlog=4096, reuse_port=True)
    w = Worker(listener, endpoint)
    threading.Thread(target=w.bus, daemon=True).start()
    ready.set()
    w.accept()


def main(argv: list[str] | None = None) -> None:
    args, holder, port, bus_dir = start_args(__doc__, argv, "floor-relay-")
    threading.stack_size(256 * 1024)
    endpoint = f"ipc://{bus_dir}/bus"
    fork = multiprocessing.get_context("fork")
    procs = [fork.Process(target=hub, args=(endpoint,), daemon=True)]
    events = []
    for _ in range(args.workers):
        ev = fork.Event()
        events.append(ev)
        procs.append(fork.Process(target=worker, args=(args.host, port, endpoint, ev),
                                  daemon=True))
    run_until_stopped(procs, events, holder, f"floor relay listening on {args.host}:{port}",
                      bus_dir)


def start_args(doc: str | None, argv: list[str] | None, prefix: str,
               more: Callable[[argparse.ArgumentParser], object] = lambda ap: None,
               ) -> tuple[argparse.Namespace, socket.socket, int, str]:
    """A floor's flags (--host, --port, --workers and `more`), its port held
    without listening on it (so the kernel never hands a connection to this
    process; the workers listen on it together) and its bus directory."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    more(ap)
    args = ap.parse_args(argv)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((args.host, args.port))
    return args, holder, holder.getsockname()[1], tempfile.mkdtemp(prefix=prefix)


def run_until_stopped(procs: list[Any], events: list[Any], holder: socket.socket,
                      banner: str, bus_dir: str) -> None:
    """Start the hub and workers, wait until every worker listens, print the banner
    the suite waits for, and run until SIGTERM; then kill them (by PID) and clean up.
    Shared by floor_loop_relay.py, so the floors differ only in their workers."""
    for p in procs:
        p.start()
    for ev in events:
        ev.wait(30)
    holder.close()

    def stop(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(banner, flush=True)
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
        shutil.rmtree(bus_dir, ignore_errors=True)

if __name__ == "__main__":
    main()
