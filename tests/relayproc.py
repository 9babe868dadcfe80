"""Run `chat-relay start` as a child process for tests and the experiments.

One launcher for everything that needs a real relay: readiness comes from the
banner line (never a sleep), every line the relay tree prints is kept, and
`stop()` signals only the process it started, then kills only that process's
own children if any outlived it.

Every wait is a multiple of one unit that $CHAT_RELAY_TEST_UNIT scales (2 on
a slow machine doubles them all); $CHAT_RELAY_TEST_LOG sets the relay's log
level (WARNING by default, so a test's output stays readable).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import psutil

ROOT = Path(__file__).resolve().parent.parent
BANNER = re.compile(r"listening on \[?([0-9a-fA-F.:]+)\]?:(\d+)")
UNIT = float(os.environ.get("CHAT_RELAY_TEST_UNIT", "1.0"))
LOG_LEVEL = os.environ.get("CHAT_RELAY_TEST_LOG", "WARNING")


class RelayProcess:
    def __init__(self, workers: int = 2, args: Sequence[str] = (), host: str = "127.0.0.1",
                 port: int = 0, wrapper: Sequence[str] = (), log_level: str = LOG_LEVEL,
                 unit: float = UNIT) -> None:
        self.workers = workers
        self.args = list(args)
        self.host = host
        self.requested_port = port
        self.wrapper = list(wrapper)  # e.g. ["prlimit", "--nofile=64:64"]
        self.log_level = log_level
        self.unit = unit  # scales every deadline (slow machines)
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> RelayProcess:
        cmd = [*self.wrapper, sys.executable, "-m", "relay", "start", "--host", self.host,
               "--port", str(self.requested_port), "--workers", str(self.workers),
               "--log-level", self.log_level, *self.args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        found = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                m = BANNER.search(line)
                if m and not found.is_set():
                    self.port = int(m.group(2))
                    found.set()
            found.set()

        threading.Thread(target=pump, daemon=True).start()
        if not found.wait(timeout * self.unit) or not self.port:
            self.stop()
            raise RuntimeError("relay did not start:\n" + "".join(self.output[-40:]))
        return self

    def children(self) -> list[psutil.Process]:
        try:
            return list(psutil.Process(self.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            return []

    def role_pids(self, role: str) -> list[int]:
        """Pids of live children started as `_hub` or `_worker`."""
        pids = []
        for child in self.children():
            try:
                if role in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                    pids.append(child.pid)
            except psutil.NoSuchProcess:
                continue
        return sorted(pids)

    def worker_pids(self) -> list[int]:
        return self.role_pids("_worker")

    def hub_pid(self) -> int:
        pids = self.role_pids("_hub")
        assert len(pids) == 1, pids
        return pids[0]

    def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> None:
        """Poll `predicate` until it is true; TimeoutError after `timeout` (scaled)."""
        deadline = time.monotonic() + timeout * self.unit
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise TimeoutError("condition not met in time")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        children = self.children()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout * self.unit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for child in children:  # never leave an orphan behind, but only ours
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        return code

    def __enter__(self) -> RelayProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
