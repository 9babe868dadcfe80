"""Network namespaces for tests: "hosts" joined by a bridge that acts as a switch.

`Lab.build(hosts)` makes one namespace per host plus a switch namespace `s`
holding a bridge; host i gets 10.231.0.i on an eth0 whose veth peer sits on
the bridge. Every namespace carries the test process's pid in its name, and
`close()` deletes all of them. Needs root and `ip netns`: `lab_of` skips,
loudly, where a namespace cannot be made.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from tests.hubproc import Proc

CLONE_NEWNET = 0x40000000
SUBNET = "10.231.0"
T = TypeVar("T")


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def netns_unavailable() -> str:
    """Why namespaces cannot be made here, or "" (tries a real `ip netns add`)."""
    probe = f"crprobe{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return f"cannot create network namespaces here ({exc}); run as root on Linux"
    ip("netns", "del", probe)
    return ""


class Lab:
    """The namespaces, veths and bridge of one test; `close()` deletes all of them."""

    def __init__(self) -> None:
        self.tag = f"cr{os.getpid()}"
        self.made: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.tag}{host}"

    def _add(self, host: str) -> str:
        name = self.ns(host)
        if Path(f"/run/netns/{name}").exists():  # left by a crashed run with our pid
            ip("netns", "del", name)
        ip("netns", "add", name)
        self.made.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def build(self, hosts: list[str]) -> None:
        switch = self._add("s")
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        for i, host in enumerate(hosts, start=1):
            name = self._add(host)
            port = f"p{host}"
            ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", name)
            ip("-n", switch, "link", "set", port, "master", "br0", "up")
            ip("-n", name, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")

    @staticmethod
    def addr(i: int) -> str:
        return f"{SUBNET}.{i}"

    def cable(self, host: str, up: bool) -> None:
        """Plug or pull `host`'s cable at the switch."""
        ip("-n", self.ns("s"), "link", "set", f"p{host}", "up" if up else "down")

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host)]

    def inside(self, host: str, fn: Callable[[], T]) -> T:
        """Run `fn` in a thread that joined `host`'s namespace (sockets stay there)."""
        result: list[T] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/run/netns/{self.ns(host)}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                finally:
                    os.close(fd)
                result.append(fn())
            except BaseException as exc:  # handed to the caller below
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(30)
        if errors:
            raise errors[0]
        return result[0]

    def close(self) -> None:
        for name in reversed(self.made):
            try:
                ip("netns", "del", name)
            except (OSError, RuntimeError):
                pass
        self.made.clear()


@contextmanager
def lab_of(hosts: list[str]) -> Iterator[Lab]:
    """A built lab of `hosts` (host i at 10.231.0.i), deleted on the way out."""
    why = netns_unavailable()
    if why:
        pytest.skip(f"NETWORK NAMESPACE TEST SKIPPED: {why}")
    lab = Lab()
    try:
        lab.build(hosts)
        yield lab
    finally:
        lab.close()


@contextmanager
def stopped_after() -> Iterator[list[Proc]]:
    """A list to append started processes to; each is stopped, last first, on the way out."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            proc.stop()
