"""Issue 19: every integer and structure a client sends is bounded where it is parsed.

One test per bound (transports/validate.py), each at the bound and one past
it, through every dialect that carries the field: native frames, WebSocket
JSON and msgpack messages, text lines, IRC lines. Sans-I/O: bytes in, events
or errors out. The three attacks that killed processes before are here too.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack
import pytest
from websockets.frames import Frame, Opcode

from transports.errors import ProtocolError
from transports.events import Ban, HistoryQuery, Mute, Ping, Pong, Say, Whisper
from transports.irc import IrcServerCodec
from transports.native import NativeServerCodec, frame_packed, unpack_body
from transports.text import TextServerCodec
from transports.validate import (
    HISTORY_MAX_LIMIT,
    ID_INT_MAX,
    ID_INT_MIN,
    ID_MAX_BYTES,
    MAX_DEPTH,
    MAX_HELLO_ROOMS,
    MAX_MINUTES,
    SEQ_MAX,
    TEXT_MAX_DIGITS,
    VERSION_MAX,
    depth_exceeds,
    json_depth_exceeds,
)
from transports.websocket import WebSocketServerCodec

BODY_DIALECTS = ("native", "ws-json", "ws-msgpack")
_WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def _ws_codec(subprotocol: str, max_frame: int) -> WebSocketServerCodec:
    codec = WebSocketServerCodec(max_frame=max_frame)
    head = (f"GET /ws HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {_WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n")
    assert codec.receive_data(head.encode()) == []
    assert codec.is_open
    codec.data_to_send()
    return codec


def decode_raw(dialect: str, data: bytes, max_frame: int = 65536) -> Any:
    """The one item a body dialect makes of one encoded body (`data`)."""
    if dialect == "native":
        items = NativeServerCodec(max_frame=max_frame).receive_data(frame_packed(data))
    else:
        sub, opcode = (("chat-relay.v1.json", Opcode.TEXT) if dialect == "ws-json"
                       else ("chat-relay.v1.msgpack", Opcode.BINARY))
        codec = _ws_codec(sub, max_frame)
        items = codec.receive_data(Frame(opcode, data).serialize(mask=True))
    assert len(items) == 1, items
    return items[0]


def decode(dialect: str, body: dict[str, Any]) -> Any:
    if dialect == "ws-json":
        return decode_raw(dialect, json.dumps(body).encode())
    return decode_raw(dialect, msgpack.packb(body, use_bin_type=True))


def refused(item: Any, code: str = "bad_field") -> ProtocolError:
    assert isinstance(item, ProtocolError), item
    assert item.code == code, item
    assert not item.fatal  # only the frame is refused; the connection stays
    return item


# Seqs: `after` and `resume` values ------------------------------------------------


@pytest.mark.parametrize("dialect", BODY_DIALECTS)
def test_after_is_a_seq(dialect: str) -> None:
    def history(after: int) -> Any:
        return decode(dialect, {"t": "history", "room": "lobby", "after": after})

    assert history(0) == HistoryQuery("lobby", 0)
    assert history(SEQ_MAX) == HistoryQuery("lobby", SEQ_MAX)
    assert "0 to 2^63-1" in refused(history(SEQ_MAX + 1)).text
    refused(history(-1))
    if dialect == "ws-json":  # only JSON can say a number msgpack cannot hold
        assert "of 65 bits" in refused(history(2**64)).text
        refused(history(10**400))


@pytest.mark.parametrize("dialect", BODY_DIALECTS)
def test_resume_values_are_seqs(dialect: str) -> None:
    def hello(seq: int) -> Any:
        return decode(dialect, {"t": "hello", "nick": "al", "resume": {"lobby": seq}})

    assert hello(SEQ_MAX).resume == {"lobby": SEQ_MAX}
    assert hello(0).resume == {"lobby": 0}
    assert refused(hello(SEQ_MAX + 1)).ref == "hello"
    refused(hello(-1))


def test_hello_names_at_most_64_rooms() -> None:
    names = [f"r{i}" for i in range(MAX_HELLO_ROOMS + 1)]
    for key, value in (("rooms", names), ("resume", dict.fromkeys(names, 1))):
        at = value[:MAX_HELLO_ROOMS] if key == "rooms" else dict(list(value.items())[:-1])
        assert len(at) == MAX_HELLO_ROOMS
        assert decode("native", {"t": "hello", "nick": "al", key: at}).nick == "al"
        refused(decode("native", {"t": "hello", "nick": "al", key: value}))


@pytest.mark.parametrize("dialect", BODY_DIALECTS)
def test_limit_is_1_to_500(dialect: str) -> None:
    def history(limit: int) -> Any:
        return decode(dialect, {"t": "history", "room": "lobby", "limit": limit})

    assert history(1).limit == 1
    assert history(HISTORY_MAX_LIMIT).limit == HISTORY_MAX_LIMIT
    refused(history(0))
    refused(history(HISTORY_MAX_LIMIT + 1))
    refused(history(SEQ_MAX + 1))


@pytest.mark.parametrize("dialect", BODY_DIALECTS)
def test_version_is_bounded(dialect: str) -> None:
    def hello(v: int) -> Any:
        return decode(dialect, {"t": "hello", "nick": "al", "v": v})

    assert hello(1).v == 1
    assert hello(VERSION_MAX).v == VERSION_MAX  # a newer client is still welcome
    refused(hello(0))
    refused(hello(VERSION_MAX + 1))


@pytest.mark.parametrize("dialect", BODY_DIALECTS)
@pytest.mark.parametrize("kind", ["ban", "mute"])
def test_minutes_are_bounded(dialect: str, kind: str) -> None:
    def sanction(minutes: int) -> Any:
        return decode(dialect, {"t": kind, "nick": "bob", "minutes": minutes})

    event = Ban if kind == "ban" else Mute
    assert isinstance(sanction(1), event) and sanction(1).minutes == 1
    assert sanction(MAX_MINUTES).minutes == MAX_MINUTES
    refused(sanction(0))
    refused(sanction(MAX_MINUTES + 1))
    refused(sanction(SEQ_MAX + 1))


# id ------------------------------------------------------------------------------

_ID_OK = [
    "x" * ID_MAX_BYTES,
    "\u00e9" * (ID_MAX_BYTES // 2),  # bytes count, not characters
    "",
    ID_INT_MIN,
    ID_INT_MAX,
    0,
]
_ID_BAD = [
    "x" * (ID_MAX_BYTES + 1),
    "\u00e9" * (ID_MAX_BYTES // 2) + "x",
    ID_INT_MIN - 1,
    ID_INT_MAX + 1,
    2**64 - 1,
    True,
    False,
    1.5,
    [1],
    {"a": 1},
]
_ID_EVENTS = {
    "say": ({"t": "say", "room": "lobby", "text": "hi"}, lambda i: Say("lobby", "hi", i)),
    "whisper": ({"t": "whisper", "to": "bob", "text": "hi"}, lambda i: Whisper("bob", "hi", i)),
    "ping": ({"t": "ping"}, Ping),
    "pong": ({"t": "pong"}, Pong),
}


@pytest.mark.parametrize("dialect", BODY_DIALECTS)
@pytest.mark.parametrize("kind", sorted(_ID_EVENTS))
def test_id_is_a_short_string_or_an_int64(dialect: str, kind: str) -> None:
    base, event = _ID_EVENTS[kind]
    for good in _ID_OK:
        assert decode(dialect, {**base, "id": good}) == event(good), good
    for bad in _ID_BAD:
        if dialect != "ws-json" and type(bad) is int and bad < ID_INT_MIN:
            continue  # msgpack holds no integer below -2^63
        error = refused(decode(dialect, {**base, "id": bad}))
        assert error.ref == kind
        assert f"at most {ID_MAX_BYTES} bytes" in error.text


def test_id_rule_in_json_only_numbers() -> None:
    for number in (b"18446744073709551616", b"1e3", b"-0.0", b"NaN", b"Infinity", b"1E400"):
        refused(decode_raw("ws-json", b'{"t":"ping","id":' + number + b"}"))


# Nothing but an integer is an integer -----------------------------------------------

_INT_KEYS = {
    "after": {"t": "history", "room": "lobby"},
    "limit": {"t": "history", "room": "lobby"},
    "v": {"t": "hello", "nick": "al"},
    "minutes": {"t": "ban", "nick": "bob"},
}
_NOT_INTS: list[Any] = [
    True, False, 1.0, math.nan, math.inf, -math.inf, b"1", "1", [1], {"n": 1},
    msgpack.ExtType(5, b"\x01"), msgpack.Timestamp(1, 0),
]


@pytest.mark.parametrize("key", sorted(_INT_KEYS))
@pytest.mark.parametrize("value", _NOT_INTS, ids=repr)
def test_no_other_type_passes_for_an_integer(key: str, value: Any) -> None:
    error = refused(decode("native", {**_INT_KEYS[key], key: value}))
    assert f"'{key}' must be an integer, got {type(value).__name__}" == error.text
    resume = {"t": "hello", "nick": "al", "resume": {"lobby": value}}
    refused(decode("native", resume))


@pytest.mark.parametrize("value", _NOT_INTS, ids=repr)
def test_no_other_type_passes_for_an_id(value: Any) -> None:
    if isinstance(value, str):
        return  # a string is an id
    refused(decode("native", {"t": "ping", "id": value}))


# Where PROTOCOL.md has a more specific code for a malformed name, that is the code.
_STR_KEYS = {
    "text": ({"t": "say", "room": "lobby"}, "bad_field"),
    "to": ({"t": "whisper", "text": "hi"}, "bad_field"),
    "password": ({"t": "hello", "nick": "al"}, "bad_field"),
    "reason": ({"t": "kick", "nick": "bob"}, "bad_field"),
    "ip": ({"t": "ban"}, "bad_field"),
    "room": ({"t": "join"}, "room_invalid"),
    "nick": ({"t": "nick"}, "nick_invalid"),
    "rooms": ({"t": "hello", "nick": "al"}, "bad_field"),
}


@pytest.mark.parametrize("key", sorted(_STR_KEYS))
@pytest.mark.parametrize("value", [v for v in _NOT_INTS if not isinstance(v, str)] + [1, 2**64 - 1],
                         ids=repr)
def test_no_other_type_passes_for_a_string(key: str, value: Any) -> None:
    base, code = _STR_KEYS[key]
    if key == "rooms" and isinstance(value, list):
        code = "room_invalid"  # a list, of something that is not a room name
    refused(decode("native", {**base, key: value}), code)
    if key == "rooms":
        refused(decode("native", {**base, key: [value]}), "room_invalid")


def test_t_must_be_a_string() -> None:
    for value in _NOT_INTS + [1]:
        if not isinstance(value, str):
            refused(decode("native", {"t": value}), "bad_frame")


@pytest.mark.parametrize("key", ["password", "reason", "resume"])
def test_nil_in_an_optional_key_is_absent(key: str) -> None:
    body = {"t": "hello", "nick": "al"} if key != "reason" else {"t": "kick", "nick": "bob"}
    assert decode("native", {**body, key: None}) == decode("native", body)


def test_nil_is_no_value_where_one_is_required() -> None:
    refused(decode("native", {"t": None}), "bad_frame")
    refused(decode("native", {"t": "hello", "nick": "al", "resume": {"lobby": None}}))
    refused(decode("native", {"t": "join", "room": None}), "room_invalid")


def test_unknown_keys_are_still_ignored_whatever_they_hold() -> None:
    for junk in _NOT_INTS + [2**64 - 1, -(2**63), "x" * 1000]:
        assert decode("native", {"t": "ping", "id": 1, "junk": junk}) == Ping(1)


# Depth ---------------------------------------------------------------------------


def nested_list(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nested_map(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize("dialect", BODY_DIALECTS)
@pytest.mark.parametrize("nest", [nested_list, nested_map])
def test_depth_at_the_limit_is_read_past_it_refused(dialect: str, nest: Any) -> None:
    # The body map is level 1, so its values may nest MAX_DEPTH - 1 more levels.
    assert decode(dialect, {"t": "ping", "x": nest(MAX_DEPTH - 1)}) == Ping()
    error = refused(decode(dialect, {"t": "ping", "x": nest(MAX_DEPTH)}), "bad_frame")
    assert f"more than {MAX_DEPTH} levels" in error.text


@pytest.mark.parametrize("dialect", BODY_DIALECTS)
@pytest.mark.parametrize("depth", [1_000, 1_025, 60_000])
def test_very_deep_bodies_are_bad_frames_not_crashes(dialect: str, depth: int) -> None:
    if dialect == "ws-json":
        data = b'{"t":"ping","id":' + b"[" * depth + b"]" * depth + b"}"
    else:
        data = b"\x82\xa1t\xa4ping\xa2id" + b"\x91" * depth + b"\x01"
    refused(decode_raw(dialect, data, max_frame=4 * depth + 64), "bad_frame")


def test_depth_of_100000_in_every_decoder() -> None:
    with pytest.raises(ProtocolError, match="not msgpack|levels"):
        unpack_body(b"\x91" * 100_000 + b"\x01")
    assert json_depth_exceeds("[" * 100_000 + "]" * 100_000)
    assert depth_exceeds(nested_list(100_000))


def test_json_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"t": "ping", "x": "[{" * 100, "y": "\\\"[[[[", "id": "]]]]"})
    assert not json_depth_exceeds(text)
    assert decode_raw("ws-json", text.encode()) == Ping("]]]]")
    # An escaped quote does not end the string early.
    text = '{"t":"ping","x":"\\"' + "[" * 40 + '"}'
    assert decode_raw("ws-json", text.encode()) == Ping()


# Text dialect: numbers are bounded in digits ------------------------------------------


def text_line(line: str) -> Any:
    items = TextServerCodec().receive_data(line.encode() + b"\n")
    assert len(items) == 1, items
    return items[0]


def test_text_history_count_at_its_bound_and_past() -> None:
    """`/history [ROOM] N` (transports/commands.py): N is 1-500, digits bounded first."""
    assert text_line(f"/history lobby {HISTORY_MAX_LIMIT}") == HistoryQuery(
        "lobby", None, HISTORY_MAX_LIMIT)
    assert text_line("/history lobby 0000000000000000001") == HistoryQuery("lobby", None, 1)
    assert "1 to" in refused(text_line(f"/history lobby {HISTORY_MAX_LIMIT + 1}")).text
    assert "1 to" in refused(text_line("/history 0")).text
    error = refused(text_line("/history lobby 00000000000000000001"))
    assert f"at most {TEXT_MAX_DIGITS} digits" in error.text
    refused(text_line("/history lobby " + "9" * 4000))
    # Digits of another script are not a number: a room name, refused as one.
    refused(text_line("/history lobby \u0663"))


def test_text_minutes_are_bounded() -> None:
    assert text_line(f"/ban bob {MAX_MINUTES} spam") == Ban("bob", None, MAX_MINUTES, "spam")
    refused(text_line(f"/ban bob {MAX_MINUTES + 1} spam"))
    refused(text_line("/mute bob " + "9" * (TEXT_MAX_DIGITS + 1)))
    # Digits of another script are not a number: they are the reason.
    assert text_line("/mute bob \u0663") == Mute("bob", None, "\u0663")


# IRC: the PING token travels as an id; lines are bounded ---------------------------------


def irc_registered() -> IrcServerCodec:
    codec = IrcServerCodec()
    codec.receive_data(b"NICK al\r\nUSER al 0 * :al\r\n")
    codec.encode({"t": "welcome", "v": 1, "nick": "al", "server": "x"})
    codec.data_to_send()
    return codec


def test_irc_ping_token_at_the_id_bound_and_past() -> None:
    codec = irc_registered()
    token = "t" * ID_MAX_BYTES
    assert codec.receive_data(f"PING :{token}\r\n".encode()) == [Ping(token)]
    # One byte more cannot be an id: the codec answers it itself, in full.
    long = "\u00e9" * (ID_MAX_BYTES // 2) + "t"
    assert codec.receive_data(f"PING :{long}\r\n".encode()) == []
    assert codec.data_to_send() == f":chat-relay PONG chat-relay :{long}\r\n".encode()


def test_irc_line_length_bound() -> None:
    codec = irc_registered()
    head = b"PRIVMSG #a :"
    at = head + b"x" * (codec.max_line - len(head) - 1) + b"\r"  # the bound counts the CR
    assert len(at) == codec.max_line
    assert codec.receive_data(at + b"\n") != []  # read (an error or an event, not a 417)
    assert b" 417 " not in codec.data_to_send()
    assert codec.receive_data(b"x" + at + b"\n") == []
    assert b" 417 " in codec.data_to_send()


# The attacks that killed a worker or the hub --------------------------------------------


def test_attack_text_history_with_23_digits() -> None:
    refused(text_line("/history lobby 99999999999999999999999"))


def test_attack_ws_json_ping_id_past_64_bits() -> None:
    refused(decode_raw("ws-json", b'{"t":"ping","id":18446744073709551616}'))


def test_attack_native_ping_id_1000_deep() -> None:
    data = msgpack.packb({"t": "ping", "id": nested_list(1_000)})
    refused(decode_raw("native", data), "bad_frame")


def test_a_map_of_scalars_skips_the_walk_and_one_container_does_not() -> None:
    # depth_exceeds proves a map of scalars one level deep without walking it
    # (every say, every dialect); a single list or map among its values is walked.
    flat = {"t": "say", "room": "lobby", "text": "hi", "id": 7, "action": True, "x": None,
            "f": 1.5, "b": b"\x00"}
    assert unpack_body(msgpack.packb(flat, use_bin_type=True)) == flat
    with pytest.raises(ProtocolError, match="levels"):
        unpack_body(msgpack.packb({**flat, "deep": nested_list(MAX_DEPTH)}))
    with pytest.raises(ProtocolError, match="levels"):
        unpack_body(msgpack.packb({**flat, "deep": nested_map(MAX_DEPTH)}))
