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
from collections import Counter

import zmq

from relay.admission import RefusalPen, Refused
from relay.config import Settings
from relay.hub.authguard import auth_key
from relay.procutil import die_with_parent, raise_fd_limit, setup_logging
from relay.session import Session
from relay.tls import server_context
from relay.workerbus import WorkerBus
from transports.validate import ip_key

log = logging.getLogger("chat_relay.worker")

ACCEPT_BACKOFF = 0.1    # after EMFILE/ENFILE
AUTH_DELAY_CAP = 8.0    # seconds: the longest wait before a wrong-password answer
# Every thread waiting for the GIL wakes once per switch interval. With the
# default 5 ms, 10,000 readers woken at once (a mass disconnect) make 2 million
# futex wake-ups a second and the worker took minutes to tear down 20,000
# clients; at 200 ms it takes seconds. Nothing here holds the GIL that long:
# every send, recv and poll releases it.
GIL_SWITCH_INTERVAL = 0.2


def peer_ip(addr: str) -> str:
    """The IP of an "ip:port" address (IPv6 keeps its colons)."""
    return addr.rsplit(":", 1)[0]


def _share(limit: int, workers: int) -> int:
    """Each of the W workers enforces its share of a relay-wide limit."""
    return max(1, -(-limit // workers))


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
        self.handshakes = 0  # sessions not yet past hello
        self.max_total = _share(settings.max_connections, workers)
        self.max_per_ip = _share(settings.max_per_ip, workers)
        self.max_handshakes = _share(settings.max_handshakes, workers)
        self.refused: Counter[str] = Counter()  # refusals at accept, by code
        self._all_closed = threading.Condition(self._lock)
        self._stop_r, self._stop_w = os.pipe()
        self.stopping = False

    # Admission (acceptor thread) and auth (client threads) ----------------------

    def refusal(self, ip: str) -> tuple[str, str] | None:
        """(code, why) a new connection from `ip` is refused, or None to serve it.

        Checked right after accept(), before any thread exists.
        """
        blocked = self.auth_blocked(ip)
        if blocked:
            return "too_many_connections", blocked
        ban = self.banned(ip)
        if ban:
            return "banned", ban
        s = self.settings
        with self._lock:
            if self.total >= self.max_total:
                why = f"the relay is full ({s.max_connections} connections)"
            elif self.per_ip[ip] >= self.max_per_ip:
                why = f"too many connections from {ip} (limit {s.max_per_ip})"
            elif self.handshakes >= self.max_handshakes:
                why = (f"too many connections still in their handshake (limit "
                       f"{s.max_handshakes}); try again")
            else:
                return None
        return "too_many_connections", why

    def banned(self, ip: str) -> str:
        """Why `ip` is banned (an operator's IP ban, as the hub told us), or ""."""
        bans = self.bus.banned_ips  # replaced whole by the bus thread, never mutated
        if not bans:
            return ""
        key = ip_key(ip)
        until = bans.get(key) if key is not None else None
        if until is None:
            return ""
        left = until - time.time() * 1000
        if until and left <= 0:
            return ""
        span = (f"for {max(1, int(-(-left // 60_000)))} more minute(s)" if until
                else "by an operator")
        return f"your address {key} is banned {span}"

    def auth_blocked(self, ip: str) -> str:
        """Why `ip` may not try a password now (the hub blocked it), or ""."""
        blocks = self.bus.auth_blocks  # replaced whole by the bus thread, never mutated
        if not blocks:
            return ""
        key = auth_key(ip)
        left = (blocks.get(key, 0) if key else 0) - time.time() * 1000
        if left <= 0:
            return ""
        return f"{key} is blocked for {-(-left // 1000):.0f} s after failed passwords"

    def auth_failed(self, ip: str, failures: int) -> None:
        """Count a wrong password relay-wide, then make its sender wait.

        The hub counts (so every worker and host sees the failure) and blocks;
        the wait (auth_delay, doubling per failure on this connection, capped)
        holds only the calling client's reader thread.
        """
        self.bus.submit(None, {"op": "auth_fail", "ip": ip})
        delay = min(AUTH_DELAY_CAP, self.settings.auth_delay * 2 ** max(0, failures - 1))
        if delay > 0:
            time.sleep(delay)

    def handshake_over(self) -> None:
        with self._lock:
            self.handshakes -= 1

    def connection_closed(self, addr: str) -> None:
        ip = peer_ip(addr)
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
        s = self.settings
        pen = RefusalPen(sel, s.max_frame, s.max_text, tls=self.tls_ctx is not None)
        while not self.stopping:
            due = pen.next_deadline()
            timeout = 1.0 if due is None else max(0.0, min(1.0, due - time.monotonic()))
            for key, _ in sel.select(timeout=timeout):
                if key.fileobj is self.listener:
                    self._accept_some(pen)
                elif isinstance(key.data, Refused):
                    pen.readable(key.data)
            pen.expire(time.monotonic())
        pen.close_all()
        sel.close()

    def _accept_some(self, pen: RefusalPen) -> None:
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
            refused = self.refusal(str(peer[0]))
            if refused is not None:
                self.refused[refused[0]] += 1
                log.debug("refused %s:%s: %s", peer[0], peer[1], refused[1])
                pen.add(sock, *refused)
                continue
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
            self.handshakes += 1
        session = Session(self, sock, addr, next(self._ids))
        thread = threading.Thread(target=session.run, name=f"client-{addr}", daemon=True)
        try:
            thread.start()
        except (RuntimeError, MemoryError) as exc:
            # Out of threads or memory: this connection is lost, the worker goes on.
            log.error("cannot start a thread for %s (%s); closing that connection", addr, exc)
            sock.close()
            self.handshake_over()
            self.connection_closed(addr)

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
