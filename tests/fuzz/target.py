"""One fuzz case: feed bytes to a fresh codec the way a socket would, check the rules.

The rules every server codec keeps, whatever the peer sends (transports/codec.py,
STYLE.md "its parser never raises into the I/O loop"):

- `receive_data` returns a list of ClientEvents and ProtocolErrors and raises
  nothing; `data_to_send` and `encode` return bytes and raise nothing.
- A codec never logs an error: the ws and IRC codecs catch their own bugs and
  close the connection, which keeps the relay up but hides the bug, so a
  logged error counts as a crash here.
- Buffers stay bounded by the limits (`max_frame`, `max_text`), however the
  input is cut, so a peer cannot make the relay hold more than a frame.
- After EOF (b"") the codec is closed, and more input still raises nothing.
- Every ClientEvent keeps the field bounds (transports/validate.py: seqs,
  limits, versions and minutes in range, `id` a short string or a signed
  64-bit int, nothing nested) and its body packs with msgpack, as the worker
  must pack it for the hub: a value that cannot be packed kills a process.

`Mutator` makes inputs: mostly real samples with a few edits (bit flips,
interesting lengths, splices of two samples, cut lines), some random bytes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from tests.fuzz.samples import MAX_FRAME, MAX_TEXT, RELAY_BODIES, SEEDS
from transports.codec import ServerCodec
from transports.errors import ProtocolError
from transports.events import Ban, ClientEvent, Hello, HistoryQuery, Mute
from transports.registry import SERVER_CODECS
from transports.validate import (
    HISTORY_MAX_LIMIT,
    ID_INT_MAX,
    ID_INT_MIN,
    ID_MAX_BYTES,
    MAX_DEPTH,
    MAX_MINUTES,
    SEQ_MAX,
    VERSION_MAX,
    depth_exceeds,
)

DIALECTS: Final[tuple[str, ...]] = tuple(d for d in ("native", "text", "ws", "irc")
                                         if d in SERVER_CODECS)
MAX_INPUT: Final = 16 * 1024


class FuzzFailure(AssertionError):
    """A codec broke a rule; the message says which, for which dialect."""


class _ErrorLog(logging.Handler):
    """Remembers ERROR records of the transports loggers (swallowed codec bugs)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_errors = _ErrorLog()
_transports_log = logging.getLogger("transports")
_transports_log.addHandler(_errors)
_transports_log.propagate = False  # a fuzz run would print thousands of tracebacks


# Bounds --------------------------------------------------------------------------


def _buffered(codec: ServerCodec) -> dict[str, int]:
    """Bytes each dialect holds of input it has not decoded yet, with its limit."""
    name = codec.name
    if name == "native":
        return {"frame buffer": codec._decoder.buffered - (MAX_FRAME + 4)}  # type: ignore[attr-defined]
    if name == "text":
        return {"line buffer": len(codec._buf) - (MAX_TEXT + 1)}  # type: ignore[attr-defined]
    if name == "irc":
        return {
            "line buffer": len(codec._buf) - codec.max_line,  # type: ignore[attr-defined]
            "NAMES/WHO records": len(codec._asked) - codec.max_pending,  # type: ignore[attr-defined]
        }
    if name == "ws":
        ws = codec._ws  # type: ignore[attr-defined]
        # An HTTP line is at most 8,192 bytes (websockets' limit), a frame header 14.
        return {
            "reader buffer": len(ws.reader.buffer) - max(MAX_FRAME + 14, 8192 + 2),
            "fragments": codec._fragments.held - MAX_FRAME,  # type: ignore[attr-defined]
            "fragment count": codec._fragments.frames - codec.max_fragments,  # type: ignore[attr-defined]
        }
    return {}


def check_bounds(codec: ServerCodec, where: str) -> None:
    for what, over in _buffered(codec).items():
        if over > 0:
            raise FuzzFailure(f"{codec.name}: {what} is {over} bytes over its limit {where}")


# One case ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    dialect: str
    data: bytes
    seed: int  # cuts the input into chunks and picks the bodies encoded between them

    def describe(self) -> str:
        return f"Case(dialect={self.dialect!r}, seed={self.seed}, data={self.data!r})"


def _int_in(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _id_ok(value: object) -> bool:
    if value is None or _int_in(value, ID_INT_MIN, ID_INT_MAX):
        return True
    return type(value) is str and len(value.encode("utf-8")) <= ID_MAX_BYTES


def bound_violations(event: ClientEvent) -> list[str]:
    """What in `event` breaks a field bound or cannot be packed (empty: nothing)."""
    bad: list[str] = []
    if not _id_ok(getattr(event, "id", None)):
        bad.append(f"id {getattr(event, 'id', None)!r:.80}")
    if isinstance(event, Hello):
        if not _int_in(event.v, 1, VERSION_MAX):
            bad.append(f"v {event.v!r:.80}")
        for room, seq in (event.resume or {}).items():
            if not _int_in(seq, 0, SEQ_MAX):
                bad.append(f"resume[{room!r}] {seq!r:.80}")
    if isinstance(event, HistoryQuery):
        if event.after is not None and not _int_in(event.after, 0, SEQ_MAX):
            bad.append(f"after {event.after!r:.80}")
        if not _int_in(event.limit, 1, HISTORY_MAX_LIMIT):
            bad.append(f"limit {event.limit!r:.80}")
    if isinstance(event, Ban | Mute) and event.minutes is not None:
        if not _int_in(event.minutes, 1, MAX_MINUTES):
            bad.append(f"minutes {event.minutes!r:.80}")
    body = event.to_body()
    if depth_exceeds(body, MAX_DEPTH):
        bad.append(f"body nested over {MAX_DEPTH} levels")
    try:
        msgpack.packb(body, use_bin_type=True)
    except Exception as exc:  # OverflowError, ValueError, UnicodeEncodeError, TypeError
        bad.append(f"msgpack cannot pack the body: {type(exc).__name__}: {exc}")
    return bad


def _check_decoded(codec: ServerCodec, items: Any, where: str) -> None:
    if not isinstance(items, list):
        raise FuzzFailure(f"{codec.name}: receive_data returned {type(items).__name__} {where}")
    for item in items:
        if not isinstance(item, ClientEvent | ProtocolError):
            raise FuzzFailure(f"{codec.name}: receive_data produced {item!r} {where}")
        if isinstance(item, ClientEvent):
            bad = bound_violations(item)
            if bad:
                raise FuzzFailure(f"{codec.name}: {type(item).__name__} {where} breaks "
                                  f"a bound: {'; '.join(bad)}")


def _bytes(codec: ServerCodec, value: Any, what: str) -> None:
    if not isinstance(value, bytes):
        raise FuzzFailure(f"{codec.name}: {what} returned {type(value).__name__}, not bytes")


def run_case(case: Case) -> int:
    """Run one case; returns the number of items decoded. Raises FuzzFailure."""
    cls = SERVER_CODECS[case.dialect]
    rng = random.Random(case.seed)
    _errors.records.clear()
    codec = cls(MAX_FRAME, MAX_TEXT)
    data = case.data
    pos = 0
    decoded = 0
    step = 0
    try:
        while pos < len(data):
            size = rng.choice((1, 2, 3, 7, 64, 512, 4096, len(data)))
            chunk = data[pos:pos + size]
            where = f"after byte {pos + len(chunk)} of {len(data)} (chunk {step})"
            items = codec.receive_data(chunk)
            _check_decoded(codec, items, where)
            decoded += len(items)
            _bytes(codec, codec.data_to_send(), "data_to_send")
            check_bounds(codec, where)
            if rng.random() < 0.3:
                body = rng.choice(RELAY_BODIES)
                _bytes(codec, codec.encode(body), f"encode({body['t']})")
                if body["t"] == "msg":
                    _bytes(codec, codec.encode_own(body, rng.choice((None, "id1"))),
                           "encode_own")
            pos += len(chunk)
            step += 1
        items = codec.receive_data(b"")
        _check_decoded(codec, items, "at EOF")
        _bytes(codec, codec.data_to_send(), "data_to_send at EOF")
        if not codec.closed:
            raise FuzzFailure(f"{codec.name}: still open after EOF")
        _check_decoded(codec, codec.receive_data(b"more"), "after EOF")
    except FuzzFailure:
        raise
    except Exception as exc:
        raise FuzzFailure(f"{case.dialect}: {type(exc).__name__}: {exc}") from exc
    _raise_logged(case.dialect)
    return decoded


def _raise_logged(dialect: str) -> None:
    if _errors.records:
        record = _errors.records[0]
        cause = f" ({record.exc_info[1]!r})" if record.exc_info else ""
        raise FuzzFailure(f"{dialect}: the codec logged an error: "
                          f"{record.getMessage()}{cause}")


def feed_checked(codec: ServerCodec, chunks: Sequence[bytes], eof: bool = True) -> list[Any]:
    """Feed `chunks` (and then EOF) to `codec`, checking the rules above that
    hold at any limits (no exception, nothing logged, events within the field
    bounds and packable); returns what it decoded. Raises FuzzFailure."""
    _errors.records.clear()
    out: list[Any] = []
    try:
        for i, chunk in enumerate((*chunks, b"") if eof else chunks):
            items = codec.receive_data(chunk)
            _check_decoded(codec, items, f"in chunk {i} of {len(chunks)}")
            _bytes(codec, codec.data_to_send(), "data_to_send")
            out += items
    except FuzzFailure:
        raise
    except Exception as exc:
        raise FuzzFailure(f"{codec.name}: {type(exc).__name__}: {exc}") from exc
    _raise_logged(codec.name)
    return out


# Inputs ----------------------------------------------------------------------------------

_INTERESTING: Final[tuple[bytes, ...]] = (
    b"\x00", b"\xff", b"\x7f", b"\x80", b"\r", b"\n", b"\r\n", b" ", b":", b"#", b"/", b"\x01",
    b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x00\x00\x02\x00", b"\x00\x00\x02\x01",
    b"\x7f\xff\xff\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
    b"\xdd\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xc1", b"\x92\x93\x94",
    b"\x81\xa1t\xa5hello", b"\\ud800", b'{"t":', b"\x88\x80", b"\x89\x80", b"\x8a\x80",
    b"\x7f\x00\x00\x00\x00\xff\xff\xff\xff", b"\x7e\xff\xff", b"HTTP/1.1\r\n",
    b"Content-Length: 99999999\r\n", b"Transfer-Encoding: chunked\r\n",
)


class Mutator:
    """Makes fuzz inputs for one dialect from its seeds (deterministic per rng)."""

    def __init__(self, dialect: str, rng: random.Random) -> None:
        self.dialect = dialect
        self.rng = rng
        self.seeds = SEEDS[dialect]
        self.others = [s for d, seeds in SEEDS.items() if d != dialect for s in seeds]
        self.ops: Sequence[Callable[[bytearray], None]] = (
            self._flip, self._set_byte, self._insert_interesting, self._insert_random,
            self._delete, self._duplicate, self._splice, self._truncate, self._repeat,
        )

    def make(self) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.05:
            return rng.randbytes(rng.randrange(1, 2048))
        if roll < 0.08:
            return bytes(rng.choice(self.seeds))  # unchanged: the happy path stays covered
        data = bytearray(rng.choice(self.seeds))
        for _ in range(1 + int(rng.expovariate(0.7))):
            rng.choice(self.ops)(data)
        return bytes(data[:MAX_INPUT])

    def _at(self, data: bytearray) -> int:
        return self.rng.randrange(len(data) + 1)

    def _flip(self, data: bytearray) -> None:
        if data:
            i = self.rng.randrange(len(data))
            data[i] ^= 1 << self.rng.randrange(8)

    def _set_byte(self, data: bytearray) -> None:
        if data:
            data[self.rng.randrange(len(data))] = self.rng.randrange(256)

    def _insert_interesting(self, data: bytearray) -> None:
        data[self._at(data):0] = self.rng.choice(_INTERESTING)

    def _insert_random(self, data: bytearray) -> None:
        data[self._at(data):0] = self.rng.randbytes(self.rng.randrange(1, 32))

    def _delete(self, data: bytearray) -> None:
        if data:
            i = self.rng.randrange(len(data))
            del data[i:i + self.rng.randrange(1, 64)]

    def _duplicate(self, data: bytearray) -> None:
        if data:
            i = self.rng.randrange(len(data))
            piece = data[i:i + self.rng.randrange(1, 256)]
            data[self._at(data):0] = piece

    def _splice(self, data: bytearray) -> None:
        pool = self.seeds if self.rng.random() < 0.7 else self.others
        other = self.rng.choice(pool)
        i = self.rng.randrange(len(other) + 1)
        data[self._at(data):] = other[i:]

    def _truncate(self, data: bytearray) -> None:
        if data:
            del data[self.rng.randrange(len(data)):]

    def _repeat(self, data: bytearray) -> None:
        if data:
            i = self.rng.randrange(len(data))
            piece = bytes(data[i:i + self.rng.randrange(1, 16)])
            data[i:i] = piece * self.rng.randrange(2, 400)


def cases(count: int, seed: int, dialects: Sequence[str] = DIALECTS) -> list[Case]:
    """`count` deterministic cases spread over `dialects`."""
    rng = random.Random(seed)
    mutators = {d: Mutator(d, rng) for d in dialects}
    out = []
    for i in range(count):
        dialect = dialects[i % len(dialects)]
        out.append(Case(dialect, mutators[dialect].make(), rng.randrange(1 << 30)))
    return out
