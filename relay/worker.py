"""A worker process: accepts on the shared listening socket, one thread per client.

Startup order is the no-slow-joiner rule: the bus thread first proves it
receives bus traffic (the hub answers its hello on the worker's own topic),
and only then does the acceptor take connections.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque

import zmq

from relay.config import Settings
from relay.procutil import die_with_parent, raise_fd_limit, setup_logging
from relay.session import Session, check_password
from relay.tls import server_context
from relay.workerbus import WorkerBus
from transports.validate import ip_key

log = logging.getLogger("chat_relay.worker")

AUTH_FAILURES = 5       # failed passwords per IP ...
AUTH_WINDOW = 60.0      # ... within this many seconds block the IP ...
AUTH_BLOCK = 60.0       # ... for this long
ACCEPT_BACKOFF = 0.1    # after EMFILE/ENFILE
# Every thread waiting for the GIL wakes once per switch interval. With the
# default 5 ms, 10,000 readers woken at once (a mass disconnect) make 2 million
# futex wake-ups a second and the worker took minutes to tear down 20,000
# clients; at 200 ms it takes seconds. Nothing here holds the GIL that long:
# every send, recv and poll releases it.
GIL_SWITCH_INTERVAL = 0.2


class Worker:
    def __init__(self, settings: Settings, worker_id: str, hub: str, listen_fd: int,
                 workers: int) -> None:
        self.settings = settings
        self.id = worker_id
        self.ctx = zmq.Context()
        self.bus = WorkerBus(self.ctx, worker_id, hub, settings)
        self.listener = socket.socket(fileno=listen_fd)
        self.listener.setblocking(False)
        self.tls_ctx = (server_context(settings.tls_cert, settings.tls_key)
                        if settings.tls_cert else None)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.per_ip: Counter[str] = Counter()
        self.total = 0
        # Limits are relay-wide; each of the W workers enforces its share.
        self.max_total = max(1, -(-settings.max_connections // workers))
        self.max_per_ip = max(1, -(-settings.max_per_ip // workers))
        self._auth_fail: dict[str, deque[float]] = {}
        self._blocked: dict[str, float] = {}
        self._all_closed = threading.Condition(self._lock)
        self._stop_r, self._stop_w = os.pipe()
        self.stopping = False

    # Limits and auth (called from client threads) -------------------------------

    def refusal(self, addr: str) -> str:
        """Why a new connection from `addr` must be refused, or "" to serve it."""
        ip = addr.rsplit(":", 1)[0]
        with self._lock:
            until = self._blocked.get(ip)
            if until is not None and until > time.monotonic():
                left = until - time.monotonic()
                return f"{ip} is blocked for {left:.0f} s after failed passwords"
            if self.total > self.max_total:
                return f"the relay is full ({self.settings.max_connections} connections)"
            if self.per_ip[ip] > self.max_per_ip:
                return f"too many connections from {ip} (limit {self.settings.max_per_ip})"
        return ""

    def banned(self, addr: str) -> str:
        """Why `addr` is banned (an operator's IP ban, as the hub told us), or ""."""
        bans = self.bus.banned_ips  # replaced whole by the bus thread, never mutated
        if not bans:
            return ""
        ip = ip_key(addr.rsplit(":", 1)[0])
        until = bans.get(ip) if ip is not None else None
        if until is None:
            return ""
        left = until - time.time() * 1000
        if until and left <= 0:
            return ""
        span = (f"for {max(1, int(-(-left // 60_000)))} more minute(s)" if until
                else "by an operator")
        return f"your address {ip} is banned {span}"

    def check_password(self, addr: str, given: str, expected: str) -> bool:
        if check_password(given, expected):
            return True
        ip = addr.rsplit(":", 1)[0]
        now = time.monotonic()
        with self._lock:
            fails = self._auth_fail.setdefault(ip, deque())
            fails.append(now)
            while fails and fails[0] < now - AUTH_WINDOW:
                fails.popleft()
            if len(fails) >= AUTH_FAILURES:
                self._blocked[ip] = now + AUTH_BLOCK
                log.warning("blocking %s for %.0f s: %d failed passwords", ip, AUTH_BLOCK,
                            len(fails))
        return False

    def connection_closed(self, addr: str) -> None:
        ip = addr.rsplit(":", 1)[0]
        with self._lock:
            self.total -= 1
            self.per_ip[ip] -= 1
            if self.per_ip[ip] <= 0:
                del self.per_ip[ip]
            if self.total <= 0:
                self._all_closed.notify_all()

    # Main loop -------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping = True
        os.write(self._stop_w, b"x")

    def wait_ready(self, timeout: float) -> bool:
        return self.bus.ready.wait(timeout)

    def serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        sel.register(self._stop_r, selectors.EVENT_READ)
        while not self.stopping:
            for key, _ in sel.select(timeout=1.0):
                if key.fileobj is self.listener:
                    self._accept_some()
        sel.close()

    def _accept_some(self) -> None:
        for _ in range(64):
            try:
                sock, peer = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept failed (%s); backing off %.1f s", exc.strerror,
                              ACCEPT_BACKOFF)
                    time.sleep(ACCEPT_BACKOFF)  # the accept loop survives running out of fds
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                    continue
                raise
            self._start_session(sock, peer)

    def _start_session(self, sock: socket.socket, peer: tuple[str, int] | tuple[str, int, int, int]
                       ) -> None:
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self.settings.sndbuf > 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.settings.sndbuf)
        # Idle peers that cannot answer a ping (nc) are checked by TCP itself:
        # probed after ping_interval, cut after two unanswered probes.
        idle = max(1, int(self.settings.ping_interval))
        for opt, val in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", idle), ("TCP_KEEPCNT", 2)):
            if hasattr(socket, opt):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), val)
        addr = f"{peer[0]}:{peer[1]}"
        ip = str(peer[0])
        with self._lock:
            self.total += 1
            self.per_ip[ip] += 1
        session = Session(self, sock, addr, next(self._ids))
        thread = threading.Thread(target=session.run, name=f"client-{addr}", daemon=True)
        thread.start()

    def shutdown(self) -> None:
        self.bus.stop()
        self.bus.stopped.wait(self.settings.shutdown_grace + 2.0)
        # Give peers a moment to read our last words and close first (no RST).
        with self._lock:
            self._all_closed.wait_for(lambda: self.total <= 0, timeout=1.0)
        self.listener.close()
        self.ctx.term()


def main(settings: Settings, worker_id: str, hub: str, listen_fd: int, status_fd: int,
         workers: int) -> None:
    die_with_parent()
    raise_fd_limit()
    setup_logging(settings.log_level, settings.log_format)
    threading.stack_size(512 * 1024)  # thousands of client threads: keep stacks small
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    worker = Worker(settings, worker_id, hub, listen_fd, workers)

    def on_signal(signum: int, frame: object) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.bus.start()
    while not worker.wait_ready(1.0):
        if worker.stopping:
            return
        log.info("worker %s waiting for the hub", worker_id)
    os.write(status_fd, f"ready {worker_id}\n".encode())
    os.close(status_fd)
    log.debug("worker %s serving", worker_id)
    try:
        worker.serve()
    finally:
        worker.shutdown()
