"""The dialect sniffer: first bytes -> dialect, or None while undecided."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.codec_samples import Follow, tr
from transports.native import frame
from transports.sniff import SNIFF_MAX_BYTES, SNIFF_TIMEOUT, sniff


class Sniffer:
    """The relay's use of `sniff` as a stream: the answer comes out once."""

    def __init__(self) -> None:
        self.prefix = b""
        self.answer: str | None = None

    def receive_data(self, data: bytes) -> Sequence[Any]:
        if self.answer is not None:
            return []
        self.prefix += data
        self.answer = sniff(self.prefix)
        return [] if self.answer is None else [self.answer]

    def data_to_send(self) -> bytes:
        return b""


def test_constants() -> None:
    assert SNIFF_TIMEOUT == 0.3
    assert SNIFF_MAX_BYTES == len(b"NICK ") == 5


SAMPLES = [
    (frame({"t": "hello", "nick": "alice"}), "native"),
    (b"\x00", "native"),
    (b"GET /ws HTTP/1.1\r\n", "ws"),
    (b"GET / HTTP/1.0\r\n", "ws"),
    (b"CAP LS 302\r\n", "irc"),
    (b"NICK alice\r\n", "irc"),
    (b"PASS secret\r\n", "irc"),
    (b"USER alice 0 * :Alice\r\n", "irc"),
    (b"hello\n", "text"),
    (b"/join dev\n", "text"),
    (b"GETTING there\n", "text"),
    (b"NICKEL\n", "text"),
    (b"get lower case\n", "text"),
    (b"nick alice\n", "text"),
    (b"CA\n", "text"),
    (b"\n", "text"),
    (b"\xff\xfb\x01", "text"),  # telnet negotiation
    ("\u00e9t\u00e9\n".encode(), "text"),
]


@pytest.mark.parametrize(("data", "dialect"), SAMPLES, ids=lambda v: repr(v)[:30])
def test_sample(data: bytes, dialect: str) -> None:
    # The trailing sample is ignored: the answer came out already.
    tr(Sniffer, data, [dialect], follow=Follow(b"GET more", []))
    assert sniff(data) == dialect


@pytest.mark.parametrize(
    "prefix",
    [b"", b"G", b"GE", b"GET", b"C", b"CA", b"CAP", b"N", b"NI", b"NIC", b"NICK", b"P", b"PA",
     b"PAS", b"PASS", b"U", b"US", b"USE", b"USER"],
)
def test_undecided_prefixes(prefix: bytes) -> None:
    assert sniff(prefix) is None


@pytest.mark.parametrize(
    ("prefix", "dialect"),
    [(b"GE ", "text"), (b"CAPS", "text"), (b"NICKS", "text"), (b"PAS ", "text"),
     (b"USERS", "text"), (b"X", "text"), (b"\x01", "text"), (b"\x00GET ", "native")],
)
def test_decided_early(prefix: bytes, dialect: str) -> None:
    assert sniff(prefix) == dialect


@given(st.binary(max_size=12), st.binary(max_size=12))
def test_an_answer_never_changes(prefix: bytes, more: bytes) -> None:
    answer = sniff(prefix)
    if answer is not None:
        assert sniff(prefix + more) == answer
    assert answer in (None, "native", "ws", "irc", "tls", "text")


@given(st.binary(min_size=SNIFF_MAX_BYTES, max_size=20))
def test_max_bytes_always_decide(prefix: bytes) -> None:
    assert sniff(prefix) is not None
    assert sniff(prefix[:SNIFF_MAX_BYTES]) == sniff(prefix)
