"""A server's process tree and its CPU time, read from /proc (Linux).

chat-bench weighs what a server spends per delivery: the relay is a
supervisor, a hub and workers, so its cost is the whole tree's. Everything
here reads /proc directly (psutil is only a test dependency) and returns
empty or zero for processes that are gone or unreadable: a server that exits
mid-run must not crash the run that measures it.

A process's CPU here is its own utime + stime plus cutime + cstime, the
totals of the children it has reaped: a worker that dies and is reaped
during a run moves its CPU into its parent's figure instead of losing it,
so the tree's total never goes down.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


def parse_stat(text: str) -> tuple[int, int]:
    """(ppid, CPU ticks incl. reaped children) from one /proc/PID/stat line.

    The command name sits in parentheses and may hold spaces or ')', so the
    fields are counted from the last ')'.
    """
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is state (stat field 3): ppid is field 4, utime..cstime 14..17.
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, utime + stime + cutime + cstime


def _read_stat(pid: int) -> tuple[int, int] | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError, IndexError):
        return None


def _all_pids() -> list[int]:
    try:
        return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return []


def tree(roots: Iterable[int]) -> list[int]:
    """The roots that exist and all their descendants, sorted.

    One pass over /proc/*/stat builds the parent map (kernels without
    CONFIG_PROC_CHILDREN have no /proc/PID/task/TID/children).
    """
    kids: dict[int, list[int]] = {}
    for pid in _all_pids():
        st = _read_stat(pid)
        if st is not None:
            kids.setdefault(st[0], []).append(pid)
    found: set[int] = set()
    todo = [pid for pid in roots if (PROC / str(pid)).exists()]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(kids.get(pid, []))
    return sorted(found)


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU-seconds (user + system, reaped children included) of exactly these PIDs."""
    ticks = 0
    for pid in pids:
        st = _read_stat(pid)
        if st is not None:
            ticks += st[1]
    return ticks / TICKS


def tree_cpu(roots: Iterable[int]) -> float:
    """CPU-seconds of the roots' whole process trees, walked afresh (a worker
    restarted since the last call is counted)."""
    return cpu_seconds(tree(roots))


def status_sum(pids: Iterable[int], field: str) -> int:
    """The sum of one numeric /proc/PID/status field ("VmRSS" in kB, "Threads")
    over these PIDs; gone ones and a missing field (a zombie's VmRSS) count 0."""
    total = 0
    for pid in pids:
        try:
            text = (PROC / str(pid) / "status").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1])
                break
    return total


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP `port`, IPv4 and IPv6, any address."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def listening_pids(port: int) -> list[int]:
    """PIDs holding a socket that listens on TCP `port` (all sharers of it:
    the relay's supervisor and the workers it passed the socket to)."""
    targets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not targets:
        return []
    pids: list[int] = []
    for pid in _all_pids():
        try:
            fds = os.scandir(PROC / str(pid) / "fd")
        except OSError:  # gone, or another user's and we are not root
            continue
        with fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) in targets:
                        pids.append(pid)
                        break
                except OSError:
                    continue
    return sorted(pids)


def server_roots(port: int) -> list[int]:
    """The topmost of the processes listening on `port`: those whose parent
    does not listen on it too. The relay's workers share the supervisor's
    socket, so this gives the supervisor, whose tree holds the hub as well.
    Climbing further by command line would be wrong: a relay started from a
    Python program (a test, the suite) has the same executable as its parent.
    """
    pids = listening_pids(port)
    mine = set(pids)
    roots = []
    for pid in pids:
        st = _read_stat(pid)
        if st is None or st[0] not in mine:
            roots.append(pid)
    return roots


def is_local(host: str) -> bool:
    """Whether `host` is an address of this machine (so /proc shows its server):
    an address it resolves to can be bound here."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, _, _, _, addr in infos:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((addr[0], 0))
            return True
        except OSError:
            continue
    return False


class CpuWindow:
    """The CPU-seconds the trees of `roots` spend between two monotonic_ns
    instants (the timed phase, not the warm-up), sampled by a thread that
    sleeps until each one: the parent is meanwhile blocked on its pipes."""

    def __init__(self, roots: Iterable[int], from_ns: int, to_ns: int) -> None:
        self.roots = list(roots)
        self.from_ns, self.to_ns = from_ns, to_ns
        self.pids: list[int] = []
        self.cpu_s: float | None = None
        # A daemon: a run that fails must not wait for its window to end.
        self._thread = threading.Thread(target=self._sample, daemon=True,
                                        name="chat-bench-server-cpu")
        self._thread.start()

    def _sleep_until(self, t_ns: int) -> None:
        left = (t_ns - time.monotonic_ns()) / 1e9
        if left > 0:
            time.sleep(left)

    def _sample(self) -> None:
        self._sleep_until(self.from_ns)
        self.pids = tree(self.roots)
        before = cpu_seconds(self.pids)
        self._sleep_until(self.to_ns)
        # Walked again: a worker started during the window counts from its start.
        self.cpu_s = tree_cpu(self.roots) - before

    def result(self, timeout: float = 5.0) -> float | None:
        """The window's CPU-seconds (None if the window has not ended yet)."""
        self._thread.join(timeout)
        return self.cpu_s
