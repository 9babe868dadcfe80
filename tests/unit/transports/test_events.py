"""The shared event model: parse_client_body for every type and every error it gives."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transports.errors import ProtocolError
from transports.events import (
    Bye,
    ClientEvent,
    Error,
    Hello,
    HistoryPage,
    HistoryQuery,
    Join,
    Joined,
    KeepalivePing,
    ListRooms,
    Members,
    Msg,
    NickChange,
    Notice,
    Part,
    Parted,
    Ping,
    Pong,
    PongReply,
    Presence,
    RelayEvent,
    Renamed,
    RoomList,
    Say,
    Welcome,
    Whisper,
    WhisperMsg,
    Who,
    parse_client_body,
    parse_relay_body,
)

# Every client type, from the smallest body PROTOCOL.md allows.
VALID: list[tuple[dict[str, Any], ClientEvent]] = [
    ({"t": "hello", "nick": "alice"}, Hello("alice", ("lobby",))),
    ({"t": "hello", "v": 1, "nick": "a-b_9", "rooms": ["x", "y", "x"], "password": "pw",
      "resume": {"x": 41}},
     Hello("a-b_9", ("x", "y"), password="pw", resume={"x": 41})),
    ({"t": "hello", "nick": "alice", "rooms": []}, Hello("alice", ())),
    ({"t": "join", "room": "#a.b-c_1"}, Join("#a.b-c_1")),
    ({"t": "part", "room": "lobby"}, Part("lobby")),
    ({"t": "say", "room": "lobby", "text": "hi"}, Say("lobby", "hi")),
    ({"t": "say", "room": "lobby", "text": "hi", "id": "c1", "junk": 1}, Say("lobby", "hi", "c1")),
    ({"t": "whisper", "to": "bob", "text": "psst", "id": 2}, Whisper("bob", "psst", 2)),
    ({"t": "nick", "nick": "N" * 32}, NickChange("N" * 32)),
    ({"t": "who", "room": "r" * 64}, Who("r" * 64)),
    ({"t": "history", "room": "lobby"}, HistoryQuery("lobby", None, 100)),
    ({"t": "history", "room": "lobby", "after": 0, "limit": 500},
     HistoryQuery("lobby", 0, 500)),
    ({"t": "history", "room": "lobby", "after": 41, "limit": 1}, HistoryQuery("lobby", 41, 1)),
    ({"t": "ping"}, Ping()),
    ({"t": "ping", "id": 7}, Ping(7)),
    ({"t": "pong", "id": 7}, Pong(7)),
    ({"t": "bye"}, Bye()),
    ({"t": "rooms"}, ListRooms()),
]


@pytest.mark.parametrize(("body", "event"), VALID, ids=lambda v: str(v)[:50])
def test_parse_client_body(body: dict[str, Any], event: ClientEvent) -> None:
    assert parse_client_body(body) == event


@pytest.mark.parametrize(("body", "event"), VALID, ids=lambda v: str(v)[:50])
def test_to_body_parses_back(body: dict[str, Any], event: ClientEvent) -> None:
    assert parse_client_body(event.to_body()) == event


def _error(body: Any, max_text: int = 4096) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_body(body, max_text)
    assert not info.value.fatal  # parsing never ends a connection
    return info.value


BAD_FRAME = "a frame body must be a msgpack map with a string 't'"


@pytest.mark.parametrize("body", [None, 1, "say", [("t", "say")], {}, {"t": 1}, {"t": None},
                                  {"t": b"say"}, {"type": "say"}])
def test_bad_frame(body: Any) -> None:
    error = _error(body)
    assert (error.code, error.text, error.ref) == ("bad_frame", BAD_FRAME, None)


def test_unknown_type() -> None:
    error = _error({"t": "shout", "room": "lobby"})
    assert (error.code, error.text, error.ref) == ("unknown_type", "unknown frame type 'shout'",
                                                   "shout")
    # The type is echoed cut short: a peer cannot make us repeat 60 KB.
    error = _error({"t": "x" * 1000})
    assert error.ref == "x" * 40 and len(error.text) < 100


@pytest.mark.parametrize(
    ("body", "ref", "needle"),
    [
        ({"t": "say", "room": "lobby"}, "say", "text must be a string"),
        ({"t": "say", "room": "lobby", "text": b"hi"}, "say", "got bytes"),
        ({"t": "say", "room": "lobby", "text": ""}, "say", "text must not be empty"),
        ({"t": "whisper", "text": "hi"}, "whisper", "'to' must be a nick"),
        ({"t": "whisper", "to": 5, "text": "hi"}, "whisper", "'to' must be a nick"),
        ({"t": "whisper", "to": "bob", "text": 5}, "whisper", "got int"),
        ({"t": "hello", "nick": "a", "rooms": "lobby"}, "hello", "'rooms' must be a list"),
        ({"t": "hello", "nick": "a", "rooms": ["r"] * 65}, "hello", "at most 64"),
        ({"t": "hello", "nick": "a", "password": 5}, "hello", "'password' must be a string"),
        ({"t": "hello", "nick": "a", "resume": [1]}, "hello", "'resume' must map"),
        ({"t": "hello", "nick": "a", "resume": {"r": -1}}, "hello",
         "resume seq for 'r' must be 0 to 2^63-1, got -1"),
        ({"t": "hello", "nick": "a", "resume": {"r": True}}, "hello",
         "resume seq for 'r' must be an integer, got bool"),
        ({"t": "hello", "nick": "a", "resume": {"r": "1"}}, "hello",
         "resume seq for 'r' must be an integer, got str"),
        ({"t": "hello", "nick": "a", "v": "1"}, "hello", "'v' must be an integer"),
        ({"t": "history", "room": "r", "after": -1}, "history",
         "'after' must be 0 to 2^63-1, got -1"),
        ({"t": "history", "room": "r", "after": "1"}, "history", "'after' must be an integer"),
        ({"t": "history", "room": "r", "after": True}, "history", "'after' must be an integer"),
        ({"t": "history", "room": "r", "limit": 0}, "history", "'limit' must be 1 to 500, got 0"),
        ({"t": "history", "room": "r", "limit": 501}, "history",
         "'limit' must be 1 to 500, got 501"),
        ({"t": "history", "room": "r", "limit": 1.5}, "history", "'limit' must be an integer"),
    ],
    ids=lambda v: str(v)[:50],
)
def test_bad_field(body: dict[str, Any], ref: str, needle: str) -> None:
    error = _error(body)
    assert (error.code, error.ref) == ("bad_field", ref)
    assert needle in error.text


@pytest.mark.parametrize(
    "body",
    [
        {"t": "hello"},
        {"t": "hello", "nick": ""},
        {"t": "hello", "nick": "N" * 33},
        {"t": "hello", "nick": "al ice"},
        {"t": "hello", "nick": "\u00e9"},
        {"t": "nick", "nick": "a.b"},
        {"t": "nick", "nick": 5},
        {"t": "nick"},
    ],
    ids=str,
)
def test_nick_invalid(body: dict[str, Any]) -> None:
    error = _error(body)
    assert (error.code, error.ref) == ("nick_invalid", body["t"])
    assert error.text.startswith("nick must be 1-32 characters of A-Z a-z 0-9 _ -, got ")


@pytest.mark.parametrize(
    "body",
    [
        {"t": "join"},
        {"t": "join", "room": ""},
        {"t": "part", "room": "r" * 65},
        {"t": "who", "room": "a b"},
        {"t": "say", "room": "a/b", "text": "hi"},
        {"t": "history", "room": 5},
        {"t": "hello", "nick": "a", "rooms": ["ok", "not ok"]},
        {"t": "hello", "nick": "a", "resume": {"not ok": 1}},
    ],
    ids=str,
)
def test_room_invalid(body: dict[str, Any]) -> None:
    error = _error(body)
    assert (error.code, error.ref) == ("room_invalid", body["t"])
    assert error.text.startswith("room must be 1-64 characters of A-Z a-z 0-9 _ . # -, got ")


def test_long_values_are_cut_in_error_text() -> None:
    assert len(_error({"t": "nick", "nick": "!" * 10_000}).text) < 150
    assert len(_error({"t": "join", "room": "!" * 10_000}).text) < 150


@pytest.mark.parametrize("kind", ["say", "whisper"])
def test_text_too_long(kind: str) -> None:
    def body(text: str) -> dict[str, Any]:
        return {"t": kind, "room": "lobby", "to": "bob", "text": text}

    assert parse_client_body(body("x" * 4096)) is not None
    error = _error(body("x" * 4097))
    assert (error.code, error.text, error.ref) == (
        "text_too_long", "text is 4097 bytes, the limit is 4096", kind
    )
    # Bytes count, not characters.
    assert parse_client_body(body("\u20ac" * 3), max_text=9) is not None
    assert _error(body("\u20ac" * 3 + "x"), max_text=9).text == "text is 10 bytes, the limit is 9"


def test_error_body() -> None:
    error = _error({"t": "join", "room": ""})
    assert error.body() == {"t": "error", "code": "room_invalid", "text": error.text,
                            "ref": "join"}


# Fuzz: any map of plausible keys gives an event or a ProtocolError, nothing else.

_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats() | st.text(max_size=70) | st.binary(max_size=8)
    | st.sampled_from(["lobby", "alice", "#dev", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10,
)
_KEYS = st.sampled_from(["room", "text", "nick", "rooms", "resume", "password", "id", "to",
                         "after", "limit", "v"])
_TYPES = st.sampled_from(["hello", "join", "part", "say", "whisper", "nick", "who", "history",
                          "ping", "pong", "bye", "rooms", "nope"])


@given(t=_TYPES, rest=st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_any_body_gives_an_event_or_a_protocol_error(t: str, rest: dict[str, Any]) -> None:
    try:
        event = parse_client_body({"t": t, **rest})
    except ProtocolError as error:
        assert error.code in {"bad_field", "nick_invalid", "room_invalid", "text_too_long",
                              "unknown_type"}
    else:
        assert isinstance(event, ClientEvent) and event.T == t


# Relay events: to_body() then parse_relay_body() is the identity.

_MSG = Msg("lobby", 3, 1_700_000_000_000, "bob", "hi", None)
RELAY: list[RelayEvent] = [
    Welcome("alice", "chat-relay/0.1.0"),
    Joined("lobby", ("alice", "bob"), 41),
    Parted("lobby"),
    Renamed("al"),
    _MSG,
    Msg("lobby", 4, 5, "alice", "mine", "c1"),
    WhisperMsg("bob", "alice", "psst", 5),
    Presence("lobby", "bob", "join"),
    Presence("lobby", "bob", "nick", "bobby"),
    Members("lobby", ("alice",)),
    HistoryPage("lobby", (_MSG,), True),
    PongReply(3),
    KeepalivePing(),
    Notice("hello"),
    RoomList({"lobby": 2}),
    RoomList({"big": 9, "lobby": 2}, total=900),
    Error("no_such_nick", "nobody called zed", "whisper", nick="zed"),
]


@pytest.mark.parametrize("event", RELAY, ids=lambda e: type(e).__name__)
def test_relay_events_round_trip(event: RelayEvent) -> None:
    body = event.to_body()
    assert body["t"] == event.T
    assert parse_relay_body(body) == event


def test_wire_key_from() -> None:
    assert _MSG.to_body() == {"t": "msg", "room": "lobby", "seq": 3, "ts": 1_700_000_000_000,
                              "from": "bob", "text": "hi"}


@pytest.mark.parametrize("body", [{"t": "msg", "room": "x"}, {"t": "joined"}, {"t": 1}, []])
def test_malformed_relay_body(body: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_relay_body(body)
    assert info.value.code == "bad_frame"
