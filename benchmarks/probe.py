"""The probe that tells a bare-line server's connections apart from ready ones.

A server with no greeting (the seed, the design floor) says nothing when it
has taken a client in, and it registers clients in its own time: the seed
when its accept loop gets to them. Messages sent before then never reach
them and would count as lost. So while the load processes connect, one more
connection sends `dialects.PROBE_LINE` every `interval`, and a peer is ready
once the probe has come back through it; the probe stops when every load
process has reported `ready`. It reads and drops whatever the server sends
it, so a server with blocking sends (the seed) never waits on it.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from benchmarks.dialects import PROBE_LINE

INTERVAL = 0.05  # seconds between probes: what a ready connection waits at most


class Prober:
    def __init__(self, host: str, port: int, interval: float = INTERVAL) -> None:
        self.address = (host, port)
        self.interval = interval
        self.error: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chat-bench-probe", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        self._thread.join(5)

    def _run(self) -> None:
        try:
            with socket.create_connection(self.address, timeout=5) as sock:
                sock.setblocking(False)
                while not self._done.is_set():
                    try:
                        sock.sendall(PROBE_LINE)
                    except BlockingIOError:
                        pass  # a server slow to read: the next probe will do
                    self._drain(sock)
                    self._done.wait(self.interval)
        except OSError as exc:
            self.error = f"probe connection: {exc}"

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        try:
            while sock.recv(65536):
                pass
        except BlockingIOError:
            pass
