"""ngIRCd as a baseline: a C IRC server started on a loopback port for one run.

The config lifts what would otherwise measure ngIRCd's policy rather than
its speed: no penalty time (flood limit), no per-IP or total connection
cap, no DNS/ident lookups, long nicks and ping timeouts. Only the process
we started is stopped, by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from types import TracebackType

CONFIG = """\
[Global]
    Name = bench.local
    Info = chat-bench baseline
    Listen = 127.0.0.1
    Ports = {port}
    MotdPhrase = "chat-bench"
    ServerUID = {uid}
    ServerGID = {gid}
[Limits]
    MaxConnections = 0
    MaxConnectionsIP = 0
    MaxJoins = 0
    MaxNickLength = 30
    MaxPenaltyTime = 0
    PingTimeout = 600
    PongTimeout = 300
[Options]
    DNS = no
    Ident = no
    PAM = no
    ChrootDir =
"""


def binary() -> str | None:
    return shutil.which("ngircd") or (
        "/usr/sbin/ngircd" if os.path.exists("/usr/sbin/ngircd") else None)


def ensure_installed() -> tuple[str | None, str]:
    """The ngircd path, installing the Debian package when we are root; else why not."""
    found = binary()
    if found:
        return found, "found"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "ngircd is not installed (apt-get install ngircd, as root)"
    proc = subprocess.run(["apt-get", "install", "-y", "-q", "ngircd"], capture_output=True,
                          text=True, timeout=300, env={**os.environ,
                                                       "DEBIAN_FRONTEND": "noninteractive"})
    found = binary()
    if found:
        return found, "installed with apt-get"
    return None, f"apt-get install ngircd failed: {proc.stderr.strip()[-300:]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Ngircd:
    """`with Ngircd() as irc: irc.port` runs ngircd in the foreground for the block."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmp = tempfile.TemporaryDirectory(prefix="chat-bench-ngircd-")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 10.0) -> Ngircd:
        self.port = free_port()
        conf = os.path.join(self.tmp.name, "ngircd.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(CONFIG.format(port=self.port, uid=os.getuid(), gid=os.getgid()))
        self.proc = subprocess.Popen([self.path, "--nodaemon", "--config", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ngircd exited with {self.proc.returncode} at start")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ngircd did not listen on 127.0.0.1:{self.port} in {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.tmp.cleanup()

    def __enter__(self) -> Ngircd:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
