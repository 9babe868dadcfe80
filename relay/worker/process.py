"""A worker process: accepts on the shared listening socket, one thread per client.

The acceptor (this module) checks admission (admission.py) and starts a
reader thread per client (reader.py); the bus thread (busloop.py) does
everything that touches the hub. Readers reach the bus thread only through
its inbox (inbox.py).

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

import zmq

from relay.child import die_with_parent, freeze_survivors, raise_fd_limit
from relay.config import Settings
from relay.logs import setup_logging
from relay.tls import server_context
from relay.worker.admission import Admission, RefusalPen, Refused
from relay.worker.busloop import BusLoop
from relay.worker.inbox import Inbox
from relay.worker.reader import Reader

log = logging.getLogger("chat_relay.worker")

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
        self.inbox = Inbox(settings.max_inflight)
        self.admission = Admission(settings, workers, lambda req: self.inbox.submit(None, req))
        self.bus = BusLoop(self.ctx, worker_id, hub, settings, self.admission, self.inbox)
        self.listener = socket.socket(fileno=listen_fd)
        self.listener.setblocking(False)
        self.tls_ctx = (server_context(settings.tls_cert, settings.tls_key)
                        if settings.tls_cert else None)
        self._ids = itertools.count(1)
        self._stop_r, self._stop_w = os.pipe()
        self.stopping = False

    @property
    def total(self) -> int:
        return self.admission.total

    @property
    def handshakes(self) -> int:
        return self.admission.handshakes

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
            refused = self.admission.refusal(str(peer[0]))
            if refused is not None:
                self.admission.refused[refused[0]] += 1
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
        self.admission.admitted(ip)
        reader = Reader(self.inbox, self.admission, self.settings, self.tls_ctx, sock, addr,
                        next(self._ids))
        thread = threading.Thread(target=reader.run, name=f"client-{addr}", daemon=True)
        try:
            thread.start()
        except (RuntimeError, MemoryError) as exc:
            # Out of threads or memory: this connection is lost, the worker goes on.
            log.error("cannot start a thread for %s (%s); closing that connection", addr, exc)
            sock.close()
            self.admission.handshake_over()
            self.admission.connection_closed(addr)

    def shutdown(self) -> None:
        self.bus.stop()
        self.bus.stopped.wait(self.settings.shutdown_grace + 2.0)
        # Give peers a moment to read our last words and close first (no RST).
        self.admission.wait_all_closed(1.0)
        self.listener.close()
        self.ctx.term()


def main(settings: Settings, worker_id: str, hub: str, listen_fd: int, status_fd: int,
         workers: int) -> None:
    die_with_parent()
    raise_fd_limit()
    freeze_survivors()
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
