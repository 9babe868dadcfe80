"""Properties of every server codec under hostile structure (issue 19).

tests/unit/transports/test_fuzz_short.py feeds bytes (mutated samples and random ones); here
hypothesis builds well-formed containers with hostile contents instead, so
the inputs get past the framing and reach every field check: bodies as
native frames, WebSocket JSON and msgpack messages, with every type in every
position (integers past 2^64, negatives, floats with NaN and infinities,
bytes, ext types, nil, lists and maps nested up to thousands of levels,
strings with NUL, U+2028, lone surrogates, 5,000 characters); and text and
IRC lines whose words are the same kind of trouble.

For every input, `feed_checked` (tests/fuzz/target.py) asserts the rules:
the codec raises nothing and logs nothing, and every ClientEvent it makes
keeps the field bounds and packs with msgpack, which is what the worker
does next with it and what killed processes before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from tests.fuzz.target import feed_checked
from transports.irc import IrcServerCodec
from transports.native import NativeServerCodec, frame_packed
from transports.text import TextServerCodec
from transports.validate import ID_INT_MAX, ID_INT_MIN, SEQ_MAX
from transports.websocket import WebSocketServerCodec

PROPS = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_WS_KEY: Final = "dGhlIHNhbXBsZSBub25jZQ=="


@dataclass(frozen=True)
class Deep:
    """A list nested `depth` levels around `leaf`, deeper than any encoder recurses:
    each encoder below writes it as raw brackets or array headers."""

    depth: int
    leaf: int = 1


# Values ------------------------------------------------------------------------------

_EDGE_INTS = st.sampled_from([
    0, -1, 1, SEQ_MAX, SEQ_MAX + 1, ID_INT_MIN, ID_INT_MIN - 1, ID_INT_MAX + 1, 2**64 - 1,
    2**64, -(2**64), 10**30, -(10**30), 500, 501, 65535, 65536,
])
_EDGE_TEXT = st.sampled_from([
    "", "\x00", "\u2028", "\u2029", "\ud800", "a\udfffb", "\ufeff", "\U0010ffff", "lobby",
    "alice", "#dev", "x" * 65, "\u00e9" * 33, "y" * 5000, "[[[[", '"\\', "NaN",
])
_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)  # surrogates included
SCALARS = st.one_of(
    st.none(), st.booleans(), _EDGE_INTS, st.integers(), st.floats(), _EDGE_TEXT, _TEXT,
    st.binary(max_size=16),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1)),
    st.builds(Deep, st.integers(1, 1500)),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)
_TYPES = st.sampled_from([
    "hello", "join", "part", "say", "whisper", "nick", "who", "history", "ping", "pong", "bye",
    "rooms", "oper", "kick", "ban", "unban", "mute", "unmute", "nope",
])
_KEYS = st.sampled_from([
    "room", "text", "nick", "rooms", "resume", "password", "id", "to", "after", "limit", "v",
    "minutes", "reason", "ip", "t",
]) | _TEXT


# A valid body of each type: hostile values replace one or two of its keys, so
# that the rest of the body passes and the hostile field is what gets judged.
_VALID: Final[list[dict[str, Any]]] = [
    {"t": "hello", "v": 1, "nick": "alice", "rooms": ["lobby"], "password": "pw",
     "resume": {"lobby": 1}},
    {"t": "say", "room": "lobby", "text": "hi", "id": 1},
    {"t": "whisper", "to": "bob", "text": "hi", "id": "m"},
    {"t": "history", "room": "lobby", "after": 1, "limit": 5},
    {"t": "ping", "id": 1},
    {"t": "pong", "id": 1},
    {"t": "ban", "nick": "bob", "minutes": 5, "reason": "r"},
    {"t": "mute", "nick": "bob", "minutes": 5, "reason": "r"},
    {"t": "kick", "nick": "bob", "reason": "r"},
    {"t": "join", "room": "lobby"},
    {"t": "nick", "nick": "al"},
    {"t": "oper", "password": "pw"},
    {"t": "unban", "ip": "10.0.0.1"},
]


@st.composite
def _hostile_field(draw: st.DrawFn) -> dict[str, Any]:
    body = dict(draw(st.sampled_from(_VALID)))
    for key in draw(st.lists(st.sampled_from(sorted(body)), min_size=1, max_size=2)):
        if key != "t":
            body[key] = draw(VALUES)
    if "resume" in body and draw(st.booleans()):  # a well-formed map, hostile seqs
        body["resume"] = draw(st.dictionaries(_EDGE_TEXT | _TEXT, VALUES, max_size=3))
    return body


@st.composite
def _any_keys(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"t": draw(_TYPES)}
    body.update(draw(st.dictionaries(_KEYS, VALUES, max_size=6)))
    return body


def bodies() -> st.SearchStrategy[dict[str, Any]]:
    """Maps with hostile values: in the keys of a valid body, or anywhere."""
    return st.one_of(_hostile_field(), _any_keys())


# Encoders: any value, including what each format cannot carry -----------------------------


def _placeholders(value: Any, deep: list[Deep]) -> Any:
    """`value` with each Deep replaced by a unique string, remembered in `deep`."""
    if isinstance(value, Deep):
        deep.append(value)
        return f"\x00deep{len(deep) - 1}\x00"
    if isinstance(value, list):
        return [_placeholders(v, deep) for v in value]
    if isinstance(value, dict):
        return {k: _placeholders(v, deep) for k, v in value.items()}
    return value


def _msgpackable(value: Any) -> Any:
    """msgpack holds integers -2^63 .. 2^64-1 only: out-of-range ones are cut to fit."""
    if type(value) is int:
        return max(ID_INT_MIN, min(value, 2**64 - 1))
    if isinstance(value, list):
        return [_msgpackable(v) for v in value]
    if isinstance(value, dict):
        return {k: _msgpackable(v) for k, v in value.items()}
    return value


_PACKER = msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass")


def encode_msgpack(body: dict[str, Any]) -> bytes:
    """msgpack bytes; lone surrogates go out as the invalid UTF-8 a peer could send."""
    deep: list[Deep] = []
    data = _PACKER.pack(_msgpackable(_placeholders(body, deep)))
    for i, d in enumerate(deep):
        nested = b"\x91" * d.depth + _PACKER.pack(d.leaf)
        data = data.replace(_PACKER.pack(f"\x00deep{i}\x00"), nested, 1)
    return data


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return repr(value)  # ExtType, Timestamp: JSON has no such thing


def encode_json(body: dict[str, Any]) -> bytes:
    """JSON text; NaN and Infinity as Python writes them, surrogates as \\u escapes."""
    deep: list[Deep] = []
    text = json.dumps(_placeholders(body, deep), default=_json_default)
    for i, d in enumerate(deep):
        text = text.replace(f'"\\u0000deep{i}\\u0000"', "[" * d.depth + str(d.leaf)
                            + "]" * d.depth, 1)
    return text.encode()


def _ws_open(subprotocol: str) -> tuple[WebSocketServerCodec, bytes]:
    head = (f"GET /ws HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {_WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n")
    return WebSocketServerCodec(), head.encode()


def _cut(data: bytes, at: int) -> list[bytes]:
    at %= len(data) + 1
    return [data[:at], data[at:]]


# Properties ----------------------------------------------------------------------------


@PROPS
@given(st.lists(bodies(), min_size=1, max_size=3), st.integers(0, 2**20))
def test_native_frames_of_any_structure(items: list[dict[str, Any]], at: int) -> None:
    data = b"".join(frame_packed(encode_msgpack(b)) for b in items)
    feed_checked(NativeServerCodec(), _cut(data, at))


@PROPS
@given(st.lists(bodies(), min_size=1, max_size=3), st.integers(0, 2**20))
def test_websocket_json_of_any_structure(items: list[dict[str, Any]], at: int) -> None:
    codec, head = _ws_open("chat-relay.v1.json")
    frames = b"".join(Frame(Opcode.TEXT, encode_json(b)).serialize(mask=True) for b in items)
    feed_checked(codec, [head, *_cut(frames, at)])


@PROPS
@given(st.lists(bodies(), min_size=1, max_size=3), st.integers(0, 2**20))
def test_websocket_msgpack_of_any_structure(items: list[dict[str, Any]], at: int) -> None:
    codec, head = _ws_open("chat-relay.v1.msgpack")
    frames = b"".join(Frame(Opcode.BINARY, encode_msgpack(b)).serialize(mask=True)
                      for b in items)
    feed_checked(codec, [head, *_cut(frames, at)])


# Lines: commands whose arguments are numbers of any size and strings of any kind.

_NUMBER_WORDS = st.one_of(
    _EDGE_INTS.map(str),
    st.integers().map(str),
    st.text("0123456789", min_size=1, max_size=40),
    st.sampled_from(["-1", "+5", "1e9", "0x10", "\u0663\u0664", "\uff11\uff12", "NaN", "1.5"]),
)
_WORDS = _NUMBER_WORDS | _EDGE_TEXT | _TEXT.filter(lambda w: "\n" not in w and "\r" not in w)


def _line(words: list[str]) -> bytes:
    # Lone surrogates become the invalid UTF-8 bytes a peer can send.
    return " ".join(words).replace("\n", " ").encode("utf-8", "surrogatepass") + b"\r\n"


_TEXT_COMMANDS = st.sampled_from([
    "/history", "/history lobby", "/ban bob", "/mute bob", "/ban 10.0.0.1", "/kick bob",
    "/join", "/part", "/msg bob", "/nick", "/who", "/ping", "/pass", "/oper", "/unban",
    "/unmute", "", "//",
])
_IRC_COMMANDS = st.sampled_from([
    "PING", "PING :", "PONG", "PRIVMSG #lobby :", "PRIVMSG bob", "JOIN", "PART", "NAMES",
    "WHO", "LIST", "TOPIC", "MODE #lobby +b", "KICK #lobby", "OPER op", "NICK", "WHOIS",
    "NOTICE #lobby :", "USERHOST", "ISON", "AWAY :", "CAP REQ :",
])


@PROPS
@given(st.lists(st.tuples(_TEXT_COMMANDS, st.lists(_WORDS, max_size=4)), min_size=1,
                max_size=6))
def test_text_lines_with_any_arguments(lines: list[tuple[str, list[str]]]) -> None:
    data = b"".join(_line([command, *words]) for command, words in lines)
    feed_checked(TextServerCodec(), [data])


@PROPS
@given(st.lists(st.tuples(_IRC_COMMANDS, st.lists(_WORDS, max_size=4)), min_size=1,
                max_size=6))
def test_irc_lines_with_any_arguments(lines: list[tuple[str, list[str]]]) -> None:
    codec = IrcServerCodec()
    assert feed_checked(codec, [b"NICK alice\r\nUSER alice 0 * :alice\r\n"], eof=False)
    codec.encode({"t": "welcome", "v": 1, "nick": "alice", "server": "x"})
    data = b"".join(_line([command, *words]) for command, words in lines)
    feed_checked(codec, [data])

