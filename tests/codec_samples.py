"""Feed a codec sample three ways and demand the same result (after h11's tr()).

A stream codec must not care how TCP cut its input. `tr()` feeds one sample
whole, one byte at a time, and followed by the first part of a further sample
("trailing data"), which must stay buffered until the rest of it arrives and
then decode on its own. Events and any bytes the codec queued itself
(`data_to_send`) must come out the same every way.

ProtocolErrors compare by identity, so results are compared through `norm()`,
which turns an error into a tuple of what the peer would see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from transports.errors import ProtocolError


class Feedable(Protocol):
    """What `tr()` needs: the sans-I/O input side of a codec."""

    def receive_data(self, data: bytes) -> Sequence[Any]: ...

    def data_to_send(self) -> bytes: ...


F = TypeVar("F", bound=Feedable)


@dataclass(frozen=True)
class Follow:
    """A further sample fed after the one under test, to check trailing data."""

    data: bytes
    expected: Sequence[Any]


def err(code: str, text: str, ref: str | None = None, *, fatal: bool = False) -> tuple[Any, ...]:
    """The normalized form of a ProtocolError, for writing expectations."""
    return ("error", code, text, ref, fatal)


def norm(items: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if isinstance(item, ProtocolError):
            out.append(err(item.code, item.text, item.ref, fatal=item.fatal))
        else:
            out.append(item)
    return out


def feed_whole(codec: Feedable, data: bytes) -> tuple[list[Any], bytes]:
    return norm(codec.receive_data(data)), codec.data_to_send()


def feed_bytewise(codec: Feedable, data: bytes) -> tuple[list[Any], bytes]:
    got: list[Any] = []
    sent = b""
    for i in range(len(data)):
        got += norm(codec.receive_data(data[i : i + 1]))
        sent += codec.data_to_send()
    return got, sent


def tr(
    factory: Callable[[], F],
    data: bytes,
    expected: Sequence[Any],
    *,
    follow: Follow | None = None,
    sent: bytes | None = None,
) -> F:
    """Check one sample fed whole, byte by byte, and with trailing data.

    Args:
        factory: makes a fresh codec.
        data: the sample.
        expected: what `data` decodes to (errors written with `err()`).
        follow: a further sample whose first bytes trail `data`: they must
            decode to nothing until the rest of `follow.data` arrives, and
            then to `follow.expected`. Skipped when None.
        sent: the bytes the codec must queue itself, if it matters.

    Returns:
        The codec that was fed `data` whole, for checks on its state.
    """
    want = norm(expected)
    codec = factory()
    got, queued = feed_whole(codec, data)
    assert got == want, "fed whole"
    if sent is not None:
        assert queued == sent, "queued bytes, fed whole"

    got_bytewise, queued_bytewise = feed_bytewise(factory(), data)
    assert got_bytewise == want, "fed one byte at a time"
    assert queued_bytewise == queued, "queued bytes, fed one byte at a time"

    if follow is not None:
        tail = follow.data
        for cut in sorted({1, len(tail) // 2, len(tail) - 1}):
            if not 0 < cut < len(tail):
                continue
            trailing = factory()
            got_trailing, queued_trailing = feed_whole(trailing, data + tail[:cut])
            assert got_trailing == want, f"fed with {cut} trailing bytes"
            assert queued_trailing == queued, f"queued bytes, with {cut} trailing bytes"
            rest, _ = feed_whole(trailing, tail[cut:])
            assert rest == norm(follow.expected), f"the trailing {cut} bytes, completed"
    return codec
