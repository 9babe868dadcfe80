"""Test helpers for a relay spread over hosts: a hub process, key dirs, free ports.

`Proc` runs any `python -m relay ...` command (optionally behind a prefix such
as `ip netns exec NS`), collects its output in a thread, and waits for lines
with deadlines; `stop()` ends exactly the process it started.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tests.relayproc import ROOT, UNIT

BANNER = re.compile(r"listening on \[?([0-9a-fA-F.:]+)\]?:(\d+)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def make_keys(directory: Path) -> Path:
    subprocess.run([sys.executable, "-m", "relay", "keys", "generate", str(directory)],
                   cwd=ROOT, check=True, capture_output=True, timeout=30)
    return directory


class Proc:
    def __init__(self, args: Sequence[str], prefix: Sequence[str] = ()) -> None:
        self.cmd = [*prefix, sys.executable, "-m", "relay", *args]
        self.output: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.output.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def text(self) -> str:
        with self._cond:
            return "".join(self.output)

    def wait_line(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """The first output line matching `pattern`; fails if the process ends first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout * UNIT
        with self._cond:
            while True:
                for line in self.output:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line matching {pattern!r} from {self.cmd}:\n"
                                         + "".join(self.output[-40:]))
                self._cond.wait(min(left, 0.5))

    def port(self, timeout: float = 20.0) -> int:
        """The client port from a relay's banner."""
        return int(self.wait_line(BANNER.pattern, timeout).group(2))

    def wait_exit(self, timeout: float = 20.0) -> int:
        code = self.proc.wait(timeout * UNIT)
        self._reader.join(5)
        return code

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout * UNIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_hub(bind: str, keys: Path | None, *extra: str, prefix: Sequence[str] = ()) -> Proc:
    args = ["hub", "--bind", bind, *(["--keys", str(keys)] if keys else []), *extra]
    hub = Proc(args, prefix)
    try:
        hub.wait_line(r"chat-relay hub listening on tcp://")
    except AssertionError:
        hub.stop()
        raise
    return hub
