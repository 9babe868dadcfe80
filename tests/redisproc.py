"""Run a `redis-server` as a child process for tests and measurements.

The Redis engine's tests need a Redis they own: started on a free loopback
port, stopped by its PID (SIGTERM, the way an operator stops it, or SIGKILL)
and started again on the same port to see what the relay does meanwhile.
Readiness is a PING that answers, never a sleep.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

REDIS = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server on 127.0.0.1; `persist` gives it an append-only file in `dir`."""

    def __init__(self, port: int = 0, persist: Path | None = None) -> None:
        self.port = port or free_port()
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 10.0) -> RedisServer:
        import redis

        assert REDIS is not None, "redis-server missing"
        cmd = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if self.persist is not None:
            cmd += ["--dir", str(self.persist), "--appendonly", "yes", "--appendfsync",
                    "always"]
        else:
            cmd += ["--appendonly", "no"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on {self.port} did not start") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal our redis-server by PID and wait until it is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> RedisServer:
        return self.start() if self.proc is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
