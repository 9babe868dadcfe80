"""The native dialect codec: length-prefixed msgpack frames, relay side."""

from __future__ import annotations

import struct
from typing import Any
from unittest.mock import ANY

import msgpack
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.codec_samples import Follow, err, feed_whole, norm, tr
from transports.errors import ProtocolError
from transports.events import (
    Bye,
    ClientEvent,
    Hello,
    HistoryQuery,
    Join,
    ListRooms,
    NickChange,
    Part,
    Ping,
    Pong,
    Say,
    Whisper,
    Who,
)
from transports.native import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    NativeServerCodec,
    frame,
    frame_packed,
    pack_body,
)
from transports.registry import SERVER_CODECS
from transports.validate import ID_INT_MAX, ID_INT_MIN, ID_MAX_BYTES, SEQ_MAX, VERSION_MAX

PING = Follow(frame({"t": "ping", "id": 1}), [Ping(1)])


def raw_frame(value: Any) -> bytes:
    """A frame around any msgpack value, maps or not."""
    return frame_packed(msgpack.packb(value, use_bin_type=True))


def padded_ping(size: int) -> bytes:
    """A ping frame whose body is exactly `size` bytes (unknown keys are ignored)."""
    for pad in range(max(0, size - 40), size):
        body = pack_body({"t": "ping", "id": 9, "pad": "p" * pad})
        if len(body) == size:
            return frame_packed(body)
    raise AssertionError(f"no padding gives a body of {size} bytes")


def test_registered() -> None:
    assert SERVER_CODECS["native"] is NativeServerCodec
    assert NativeServerCodec.auto_hello is False


BAD_MAP = err("bad_frame", "a frame body must be a msgpack map with a string 't'")

SAMPLES: list[tuple[bytes, list[Any]]] = [
    (frame({"t": "say", "room": "lobby", "text": "hi", "id": 5}), [Say("lobby", "hi", 5)]),
    (frame({"t": "hello", "v": 1, "nick": "alice", "rooms": ["lobby", "dev"]}),
     [Hello("alice", ("lobby", "dev"))]),
    (frame({"t": "join", "room": "#dev"}) + frame({"t": "part", "room": "#dev"}),
     [Join("#dev"), Part("#dev")]),
    (frame({"t": "who", "room": "x", "extra": [1, 2]}), [Who("x")]),
    (frame({"t": "bye"}), [Bye()]),
    (raw_frame([1, 2]), [BAD_MAP]),
    (raw_frame({"room": "lobby"}), [BAD_MAP]),
    (raw_frame({"t": 7}), [BAD_MAP]),
    (frame_packed(b""), [err("bad_frame", ANY)]),
    (frame_packed(b"\xc1"), [err("bad_frame", ANY)]),
    (frame_packed(pack_body({"t": "ping"}) + b"\x00"), [err("bad_frame", ANY)]),
    # An array header that claims four billion items in a 5-byte body.
    (frame_packed(b"\xdd\xff\xff\xff\xff"), [err("bad_frame", ANY)]),
    (frame_packed(b"\xa2\xff\xfe"), [err("bad_frame", ANY)]),
    (frame({"t": "zzz"}), [err("unknown_type", "unknown frame type 'zzz'", "zzz")]),
    (frame({"t": "say", "room": "lobby"}) + frame({"t": "ping"}),
     [err("bad_field", "text must be a string, got NoneType", "say"), Ping()]),
]


@pytest.mark.parametrize(("data", "expected"), SAMPLES, ids=lambda v: repr(v)[:40])
def test_sample(data: bytes, expected: list[Any]) -> None:
    codec = tr(NativeServerCodec, data, expected, follow=PING)
    assert not codec.closed


def test_bad_bodies_keep_the_connection() -> None:
    codec = NativeServerCodec()
    for data, _ in SAMPLES:
        for item in codec.receive_data(data):
            assert not (isinstance(item, ProtocolError) and item.fatal)
    assert codec.receive_data(PING.data) == [Ping(1)]


def test_eof() -> None:
    codec = NativeServerCodec()
    assert codec.receive_data(b"\x00\x00") == []
    assert codec.receive_data(b"") == []
    assert codec.closed


# Bounds ----------------------------------------------------------------------


@pytest.mark.parametrize("max_frame", [64, DEFAULT_MAX_FRAME])
def test_frame_of_exactly_max_frame_passes(max_frame: int) -> None:
    data = padded_ping(max_frame)
    assert struct.unpack(">I", data[:4])[0] == max_frame
    tr(lambda: NativeServerCodec(max_frame=max_frame), data, [Ping(9)], follow=PING)


@pytest.mark.parametrize("max_frame", [64, DEFAULT_MAX_FRAME])
def test_frame_over_max_frame_is_fatal_and_ends_decoding(max_frame: int) -> None:
    too_large = err(
        "frame_too_large",
        f"frame length {max_frame + 1} exceeds the limit of {max_frame} bytes",
        fatal=True,
    )
    data = padded_ping(max_frame + 1)
    # Whatever follows the oversized length is never decoded: not even a ping.
    tr(lambda: NativeServerCodec(max_frame=max_frame), data, [too_large],
       follow=Follow(PING.data, []))
    # The header alone decides; the body never has to arrive.
    tr(lambda: NativeServerCodec(max_frame=max_frame), data[:4] + PING.data, [too_large])
    # Frames before it in the same read still count.
    tr(lambda: NativeServerCodec(max_frame=max_frame), PING.data + data[:4], [Ping(1), too_large])


def test_frame_too_large_is_a_fatal_protocol_error() -> None:
    [error] = NativeServerCodec(max_frame=10).receive_data(b"\x00\x00\x00\x0b")
    assert isinstance(error, ProtocolError) and error.fatal
    assert error.body()["code"] == "frame_too_large"


def test_huge_length_prefix() -> None:
    [error] = norm(NativeServerCodec().receive_data(b"\xff\xff\xff\xff"))
    assert error[1] == "frame_too_large" and "4294967295" in error[2]


@pytest.mark.parametrize("kind", ["say", "whisper"])
def test_text_bound(kind: str) -> None:
    def body(text: str) -> dict[str, Any]:
        if kind == "say":
            return {"t": "say", "room": "lobby", "text": text}
        return {"t": "whisper", "to": "bob", "text": text}

    ok = "\u00e9" * 2048  # 4096 bytes in 2048 characters
    event = Say("lobby", ok) if kind == "say" else Whisper("bob", ok)
    tr(NativeServerCodec, frame(body(ok)), [event], follow=PING)
    tr(NativeServerCodec, frame(body(ok + "x")),
       [err("text_too_long", "text is 4097 bytes, the limit is 4096", kind)], follow=PING)
    tr(lambda: NativeServerCodec(max_text=10), frame(body("x" * 11)),
       [err("text_too_long", "text is 11 bytes, the limit is 10", kind)])


# Encoding --------------------------------------------------------------------


def test_encode_is_a_frame() -> None:
    body = {"t": "msg", "room": "lobby", "seq": 1, "ts": 5, "from": "bob", "text": "hi"}
    codec = NativeServerCodec()
    assert codec.encode(body) == frame(body)
    assert NativeServerCodec.encode_fanout(body, codec.fanout_key("lobby")) == frame(body)
    assert codec.encode_own(body, None) == frame(body)
    assert codec.encode_own(body, "c1") == frame({**body, "id": "c1"})
    assert "id" not in body  # the shared body is not touched


# Properties ------------------------------------------------------------------

NICKS = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)
ROOMS = st.from_regex(r"[A-Za-z0-9_.#-]{1,64}", fullmatch=True)
TEXTS = st.text(
    st.characters(exclude_categories=["Cs"]), min_size=1, max_size=300
).filter(lambda s: len(s.encode()) <= 4096)
IDS = (st.none() | st.integers(min_value=ID_INT_MIN, max_value=ID_INT_MAX)
       | st.text(st.characters(exclude_categories=["Cs"]), max_size=ID_MAX_BYTES)
       .filter(lambda s: len(s.encode()) <= ID_MAX_BYTES))
SEQS = st.integers(min_value=0, max_value=SEQ_MAX)

CLIENT_EVENTS: st.SearchStrategy[ClientEvent] = st.one_of(
    st.builds(
        Hello,
        nick=NICKS,
        rooms=st.lists(ROOMS, unique=True, max_size=64).map(tuple),
        v=st.integers(min_value=1, max_value=VERSION_MAX),
        password=st.none() | st.text(max_size=30),
        resume=st.none() | st.dictionaries(ROOMS, SEQS, max_size=8),
    ),
    st.builds(Join, ROOMS),
    st.builds(Part, ROOMS),
    st.builds(Who, ROOMS),
    st.builds(Say, ROOMS, TEXTS, IDS),
    st.builds(Whisper, NICKS, TEXTS, IDS),
    st.builds(NickChange, NICKS),
    st.builds(
        HistoryQuery, ROOMS, st.none() | SEQS, st.integers(min_value=1, max_value=500)
    ),
    st.builds(Ping, IDS),
    st.builds(Pong, IDS),
    st.just(Bye()),
    st.just(ListRooms()),
)


@given(events=st.lists(CLIENT_EVENTS, min_size=1, max_size=5), cut=st.integers(min_value=0))
def test_any_client_event_round_trips(events: list[ClientEvent], cut: int) -> None:
    data = b"".join(frame(event.to_body()) for event in events)
    assert NativeServerCodec().receive_data(data) == events
    cut %= len(data) + 1
    codec = NativeServerCodec()
    got = codec.receive_data(data[:cut]) if cut else []
    assert got + codec.receive_data(data[cut:]) == events


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return [c for c in chunks if c]


@given(
    data=st.binary(max_size=400)
    | st.lists(st.binary(max_size=30).map(frame_packed), max_size=8).map(b"".join),
    cuts=st.lists(st.integers(min_value=0), max_size=6),
    max_frame=st.sampled_from([8, 64, DEFAULT_MAX_FRAME]),
)
def test_any_bytes_never_raise_and_split_does_not_matter(
    data: bytes, cuts: list[int], max_frame: int
) -> None:
    assume(data)
    want, _ = feed_whole(NativeServerCodec(max_frame=max_frame), data)
    codec = NativeServerCodec(max_frame=max_frame)
    got: list[Any] = []
    for chunk in _chunks(data, cuts):
        items = codec.receive_data(chunk)
        assert all(isinstance(item, ClientEvent | ProtocolError) for item in items)
        got += norm(items)
    assert got == want
    # At most one fatal error, and it is the last thing decoded.
    fatal = [i for i, item in enumerate(got) if isinstance(item, tuple) and item[4]]
    assert fatal in ([], [len(got) - 1])


@given(data=st.binary(max_size=2000), max_frame=st.sampled_from([16, 256]))
def test_decoder_buffer_stays_bounded(data: bytes, max_frame: int) -> None:
    decoder = FrameDecoder(max_frame)
    for i in range(0, len(data), 7):
        decoder.feed(data[i : i + 7])
        # Only a partial frame stays: less than its header plus max_frame.
        assert decoder.buffered < 4 + max_frame
