"""chat-bench's timed phase in C (`loadengine.c`), built on first use, loaded with ctypes.

On a machine that the load generator shares with the relay, every µs the
generator spends per delivered message is taken from the server it
measures; the C engine spends a small fraction of what the Python receive
path does (`python -m benchmarks.experiments.feedbench`). Python keeps everything else:
connecting, every handshake, control and reporting. The library is compiled
once per source version into the user's cache directory with the system C
compiler (`$CC`, else `cc`); without one, chat-bench says so and runs the
pure-Python path, which checks exactly the same things.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_name("loadengine.c")
ABI = 4
DIALECT_CODES = {"native": 0, "text": 1, "irc": 2}
STATS = 11  # int64s per connection in eng_conn_stats
TOTALS = 4  # int64s in eng_totals before the per-room counts
_HIST_CHUNK = 4096

_I64P = ctypes.POINTER(ctypes.c_int64)
_IP = ctypes.POINTER(ctypes.c_int)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chat-relay"


def library_path() -> Path:
    """Where the library for this exact source lives (its name carries the hash)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    return cache_dir() / f"loadengine-{digest}.so"


def build() -> tuple[Path | None, str]:
    """Compile the engine unless this source's library exists; (path, why not)."""
    target = library_path()
    if target.exists():
        return target, ""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None, "no C compiler (cc); the Python engine is used"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return None, f"cannot create {target.parent}: {exc}"
    # Compile to a temporary name and rename: concurrent builds never see half a file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [cc, "-O2", "-shared", "-fPIC", "-o", tmp, str(SOURCE)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        os.unlink(tmp)
        return None, f"{cc} failed: {exc}"
    if done.returncode != 0:
        os.unlink(tmp)
        return None, f"{cc} failed: {done.stderr.strip()[-500:]}"
    os.replace(tmp, target)
    return target, ""


def load() -> tuple[ctypes.CDLL | None, str]:
    """The engine library with its signatures declared, or (None, why not)."""
    path, why = build()
    if path is None:
        return None, why
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        return None, f"cannot load {path}: {exc}"
    if lib.eng_abi() != ABI:
        return None, f"{path} is not ABI {ABI}"
    lib.eng_new.restype = ctypes.c_void_p
    lib.eng_new.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, _IP, _IP, _IP, _IP,
                            _I64P, _I64P, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
    lib.eng_free.argtypes = [ctypes.c_void_p]
    lib.eng_schedule.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_double,
                                 ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64]
    lib.eng_expect.argtypes = [ctypes.c_void_p, _I64P]
    lib.eng_run.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.eng_run.restype = ctypes.c_int
    lib.eng_conn_stats.argtypes = [ctypes.c_void_p, ctypes.c_int, _I64P]
    lib.eng_conn_error.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.eng_conn_error.restype = ctypes.c_char_p
    lib.eng_totals.argtypes = [ctypes.c_void_p, _I64P]
    lib.eng_drain_hist.argtypes = [ctypes.c_void_p, _I64P, _I64P, ctypes.c_int]
    lib.eng_drain_hist.restype = ctypes.c_int
    lib.eng_drain_lag.argtypes = [ctypes.c_void_p, _I64P, _I64P, ctypes.c_int]
    lib.eng_drain_lag.restype = ctypes.c_int
    lib.eng_set_pending.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p,
                                    ctypes.c_size_t]
    return lib, ""


@dataclass(slots=True)
class ConnStats:
    delivered: int
    corrupt: int
    unique: int
    duplicates: int
    reorders: int
    gaps: int
    alive: bool
    next: int
    counter: int
    overflow: bool
    error: str
    queued: int = 0  # bytes the socket has not taken yet (the server pushing back)


@dataclass(slots=True)
class Totals:
    next_index: int
    late: int
    max_lag_ns: int
    window_deliveries: int
    sent_per_room: list[int]


@dataclass(slots=True)
class EngineConn:
    """One connection handed to the engine (plain values, no Python socket)."""

    fd: int  # -1: already closed, skipped
    sender: bool
    room: str
    sender_id: int = -1
    next_seq: int = 1  # native receivers: the seq they expect next
    counter: int = 0  # senders: the last counter they used
    pending: bytes = b""  # a partial frame or line already received


class Engine:
    """A C engine over connections that have finished their handshakes."""

    def __init__(self, lib: ctypes.CDLL, dialect: str, size: int,
                 conns: Sequence[EngineConn]) -> None:
        self.lib = lib
        self.rooms = sorted({c.room for c in conns})
        index = {r: k for k, r in enumerate(self.rooms)}
        n = len(conns)
        ints = ctypes.c_int * max(1, n)
        longs = ctypes.c_int64 * max(1, n)
        names = (ctypes.c_char_p * max(1, len(self.rooms)))(*[r.encode() for r in self.rooms])
        ptr = lib.eng_new(DIALECT_CODES[dialect], size, n,
                          ints(*[c.fd for c in conns]), ints(*[int(c.sender) for c in conns]),
                          ints(*[index[c.room] for c in conns]),
                          ints(*[c.sender_id for c in conns]),
                          longs(*[c.next_seq for c in conns]), longs(*[c.counter for c in conns]),
                          len(self.rooms), names)
        if not ptr:
            raise MemoryError("the load engine could not allocate its state")
        self.ptr: int = ptr
        for i, c in enumerate(conns):
            if c.pending:
                lib.eng_set_pending(self.ptr, i, c.pending, len(c.pending))
        self._stats = (ctypes.c_int64 * STATS)()
        self._totals = (ctypes.c_int64 * (TOTALS + len(self.rooms)))()
        self._values = (ctypes.c_int64 * _HIST_CHUNK)()
        self._counts = (ctypes.c_int64 * _HIST_CHUNK)()

    def schedule(self, t0_ns: int, rate: float, count: int, measure_from_ns: int,
                 window_from_ns: int, window_to_ns: int) -> None:
        self.lib.eng_schedule(self.ptr, t0_ns, rate, count, measure_from_ns, window_from_ns,
                              window_to_ns)

    def expect(self, per_room: dict[str, int]) -> None:
        arr = (ctypes.c_int64 * max(1, len(self.rooms)))(
            *[per_room.get(r, 0) for r in self.rooms])
        self.lib.eng_expect(self.ptr, arr)

    def run(self, until_ns: int) -> bool:
        """Send and receive until `until_ns` (monotonic); True once all is in."""
        return bool(self.lib.eng_run(self.ptr, until_ns))

    def conn_stats(self, i: int) -> ConnStats:
        s = self._stats
        self.lib.eng_conn_stats(self.ptr, i, s)
        err = self.lib.eng_conn_error(self.ptr, i) or b""
        return ConnStats(s[0], s[1], s[2], s[3], s[4], s[5], bool(s[6]), s[7], s[8],
                         bool(s[9]), err.decode(errors="replace"), s[10])

    def totals(self) -> Totals:
        t = self._totals
        self.lib.eng_totals(self.ptr, t)
        return Totals(t[0], t[1], t[2], t[3], [t[TOTALS + k] for k in range(len(self.rooms))])

    def drain_latencies(self) -> dict[int, int]:
        """µs -> count since the last drain; the values are the floors of
        `histo`'s HDR buckets, each at most once, so no folding is needed."""
        return self._drain(self.lib.eng_drain_hist)

    def drain_lags(self) -> dict[int, int]:
        """The timed messages' send lag (how late each left), as `drain_latencies`."""
        return self._drain(self.lib.eng_drain_lag)

    def _drain(self, fn: Any) -> dict[int, int]:
        out: dict[int, int] = {}
        while True:
            got = fn(self.ptr, self._values, self._counts, _HIST_CHUNK)
            out.update(zip(self._values[:got], self._counts[:got], strict=True))
            if got < _HIST_CHUNK:
                return out

    def close(self) -> None:
        if self.ptr:
            self.lib.eng_free(self.ptr)
            self.ptr = 0
