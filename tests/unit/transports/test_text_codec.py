"""The text dialect codec: lines in, events out; relay bodies in, lines out."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.codec_samples import Follow, err, feed_bytewise, feed_whole, norm, tr
from transports.errors import ProtocolError
from transports.events import (
    Bye,
    ClientEvent,
    HistoryQuery,
    Join,
    ListRooms,
    NickChange,
    Part,
    Ping,
    Say,
    Whisper,
    Who,
)
from transports.registry import SERVER_CODECS
from transports.text import HELP_LINES, MAX_LISTED_MEMBERS, TextServerCodec

LIMIT = 4096
# Independent of the current room, which some samples change.
TAIL = Follow(b"/who lobby\n", [Who("lobby")])


def welcomed(max_text: int = LIMIT) -> TextServerCodec:
    """A codec as it is once the relay's auto-hello went through: alice in lobby."""
    codec = TextServerCodec(max_text=max_text)
    codec.encode({"t": "welcome", "v": 1, "nick": "alice", "server": "chat-relay/0.1.0"})
    codec.encode({"t": "joined", "room": "lobby", "members": ["alice", "bob"], "seq": 0})
    return codec


def too_long(size: int, limit: int = LIMIT) -> tuple[Any, ...]:
    return err("text_too_long", f"line of {size} bytes dropped: the limit is {limit}", "say")


def msg(room: str, text: str, sender: str = "bob", seq: int = 1) -> dict[str, Any]:
    return {"t": "msg", "room": room, "seq": seq, "ts": 1_700_000_000_000, "from": sender,
            "text": text}


def test_registered() -> None:
    assert SERVER_CODECS["text"] is TextServerCodec
    assert TextServerCodec.name == "text"
    assert TextServerCodec.auto_hello is True


# Input: samples fed whole, byte by byte, and with trailing data -------------

SAMPLES: list[tuple[bytes, list[Any]]] = [
    (b"hello\n", [Say("lobby", "hello")]),
    (b"hello\r\n", [Say("lobby", "hello")]),
    (b"a\nb\r\nc\n", [Say("lobby", "a"), Say("lobby", "b"), Say("lobby", "c")]),
    (b"\n\r\n \t \r\n", []),
    (b"  spaced  \n", [Say("lobby", "  spaced  ")]),
    (b"in\rside\n", [Say("lobby", "in\rside")]),
    (b"caf\xc3\xa9 \xe2\x98\x95\n", [Say("lobby", "caf\u00e9 \u2615")]),
    (b"//shrug\n", [Say("lobby", "/shrug")]),
    (b"//\n", [Say("lobby", "/")]),
    (b" /join x\n", [Say("lobby", " /join x")]),
    (b"/nick bob2\n", [NickChange("bob2")]),
    (b"/NiCk bob2\r\n", [NickChange("bob2")]),
    (b"/nick\n", [err("bad_field", "usage: /nick NAME", "/nick")]),
    (b"/nick b@d\n", [err("nick_invalid",
                          "nick must be 1-32 characters of A-Z a-z 0-9 _ -, got 'b@d'", "/nick")]),
    (b"/join dev\n", [Join("dev")]),
    (b"/join #dev\n", [Join("#dev")]),
    (b"/join\n", [err("bad_field", "usage: /join ROOM", "/join")]),
    (b"/join two words\n", [err(
        "room_invalid", "room must be 1-64 characters of A-Z a-z 0-9 _ . # -, got 'two words'",
        "/join")]),
    (b"/part\n", [Part("lobby")]),
    (b"/part dev\n", [Part("dev")]),
    (b"/msg bob hi  there \n", [Whisper("bob", "hi  there ")]),
    (b"/msg bob\n", [err("bad_field", "usage: /msg NICK TEXT", "/msg")]),
    (b"/msg bob   \n", [err("bad_field", "usage: /msg NICK TEXT", "/msg")]),
    (b"/msg\n", [err("bad_field", "usage: /msg NICK TEXT", "/msg")]),
    (b"/who\n", [Who("lobby")]),
    (b"/who dev\n", [Who("dev")]),
    (b"/rooms\n", [ListRooms()]),
    (b"/ping\n", [Ping()]),
    (b"/history\n", [HistoryQuery("lobby", limit=20)]),
    (b"/history 5\n", [HistoryQuery("lobby", limit=5)]),
    (b"/history dev\n", [HistoryQuery("dev", limit=20)]),
    (b"/history dev 41\n", [HistoryQuery("dev", limit=41)]),
    (b"/history 5 7\n", [HistoryQuery("5", limit=7)]),
    (b"/history dev x\n", [err("bad_field", "N must be a number: usage: /history [N] or "
                                "/history ROOM [N]", "/history")]),
    (b"/foo bar\n", [err("unknown_type", "unknown command /foo; /help lists the commands",
                         "/foo")]),
    (b"/ x\n", [err("unknown_type", "unknown command /; /help lists the commands", "/")]),
    (b"/help\n", []),
    (b"\xff\xfeok\n", [err("bad_frame",
                           "line is not valid UTF-8 (byte 0xff at offset 0 of 4); it was dropped",
                           "say")]),
    (b"bad \xc3\n", [err("bad_frame",
                         "line is not valid UTF-8 (byte 0xc3 at offset 4 of 5); it was dropped",
                         "say")]),
    (b"x" * LIMIT + b"\n", [Say("lobby", "x" * LIMIT)]),
    (b"x" * LIMIT + b"\r\n", [Say("lobby", "x" * LIMIT)]),
    ("\u00e9".encode() * (LIMIT // 2) + b"\n", [Say("lobby", "\u00e9" * (LIMIT // 2))]),
    (b"x" * (LIMIT + 1) + b"\n", [too_long(LIMIT + 1)]),
    (b"x" * (LIMIT + 1) + b"\r\n", [too_long(LIMIT + 1)]),
    ("\u00e9".encode() * (LIMIT // 2) + b"x\n", [too_long(LIMIT + 1)]),
    (b"x" * LIMIT + b"\ry\n", [too_long(LIMIT + 2)]),
    (b"x" * 20_000 + b"\r\n", [too_long(20_000)]),
    (b"\r" * 5_000 + b"\n", [too_long(4_999)]),
    (b"one\n" + b"x" * 9_000 + b"\ntwo\n",
     [Say("lobby", "one"), too_long(9_000), Say("lobby", "two")]),
]


@pytest.mark.parametrize(("data", "expected"), SAMPLES, ids=lambda v: repr(v)[:40])
def test_sample(data: bytes, expected: list[Any]) -> None:
    tr(welcomed, data, expected, follow=TAIL)


def test_help_is_queued_not_decoded() -> None:
    codec = tr(welcomed, b"/help\n", [], follow=TAIL)
    # tr() drained data_to_send; ask again for a fresh copy.
    codec.receive_data(b"/HELP\n")
    lines = codec.data_to_send().decode().split("\n")
    assert lines[0] == "* you are alice; current room: lobby; your rooms: lobby"
    assert tuple(lines[1:-1]) == HELP_LINES
    assert lines[-1] == ""
    assert all(line.startswith("* ") for line in lines[:-1])
    assert codec.data_to_send() == b""


def test_join_switches_current_room_at_once() -> None:
    codec = tr(welcomed, b"/join dev\nhi\n", [Join("dev"), Say("dev", "hi")])
    assert codec.current_room == "dev"


def test_quit_closes_and_ignores_the_rest() -> None:
    codec = tr(welcomed, b"/quit\nafter\n", [Bye()], follow=Follow(b"more\n", []))
    assert codec.closed
    assert codec.receive_data(b"again\n") == []
    assert codec.farewell() == b"* bye, alice: the relay closed your connection\n"


def roomless() -> TextServerCodec:
    codec = welcomed()
    codec.encode({"t": "parted", "room": "lobby"})
    return codec


def test_no_current_room() -> None:
    not_in_room = ("not_in_room", "you are in no room: /join ROOM first")
    tr(roomless, b"hi\n", [err(*not_in_room, "say")])
    tr(roomless, b"/part\n", [err(*not_in_room, "/part")])
    tr(roomless, b"/who\n", [err(*not_in_room, "/who")])
    tr(roomless, b"/history\n", [err(*not_in_room, "/history")])
    # Naming the room works without a current one.
    tr(roomless, b"/who lobby\n", [Who("lobby")])


def test_lines_before_joined_go_to_lobby() -> None:
    # The relay's auto-hello joins lobby; its `joined` may be encoded after
    # the client's first line was read (printf 'hi\n' | nc).
    codec = tr(TextServerCodec, b"hi\n", [Say("lobby", "hi")])
    assert codec.current_room == "lobby" and codec.rooms == ()
    codec.encode({"t": "welcome", "v": 1, "nick": "guest1", "server": "x"})
    codec.encode({"t": "joined", "room": "lobby", "members": ["guest1"], "seq": 0})
    assert codec.current_room == "lobby" and codec.rooms == ("lobby",)


def test_unknown_command_echo_is_cut() -> None:
    name = "z" * 500
    [error] = norm(welcomed().receive_data(f"/{name}\n".encode()))
    assert error[3] == "/" + "z" * 40


# Bounds ----------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 8, 100])
def test_line_bound_follows_max_text(limit: int) -> None:
    tr(lambda: welcomed(limit), b"x" * limit + b"\r\n", [Say("lobby", "x" * limit)])
    tr(lambda: welcomed(limit), b"x" * (limit + 1) + b"\n", [too_long(limit + 1, limit)],
       follow=Follow(b"y\n", [Say("lobby", "y")]))


def test_overlong_line_is_never_buffered() -> None:
    codec = welcomed()
    for _ in range(100):
        assert codec.receive_data(b"y" * 1000) == []
        assert codec.buffered <= LIMIT + 1
    assert norm(codec.receive_data(b"\r\nok\n")) == [too_long(100_000), Say("lobby", "ok")]
    assert codec.buffered == 0


def test_overlong_line_fed_byte_by_byte_stays_bounded() -> None:
    codec = welcomed()
    for _ in range(LIMIT * 3):
        codec.receive_data(b"z")
        assert codec.buffered <= LIMIT + 1
    assert norm(codec.receive_data(b"\n")) == [too_long(LIMIT * 3)]


# EOF -------------------------------------------------------------------------


def test_eof_takes_the_unterminated_last_line() -> None:
    codec = welcomed()
    assert codec.receive_data(b"bye now") == []
    assert codec.receive_data(b"") == [Say("lobby", "bye now")]
    assert codec.closed
    assert codec.receive_data(b"late\n") == []


def test_eof_mid_overlong_line_reports_it() -> None:
    codec = welcomed()
    codec.receive_data(b"x" * 5000 + b"\r")
    assert norm(codec.receive_data(b"")) == [too_long(5000)]


def test_eof_with_nothing_pending() -> None:
    codec = welcomed()
    assert codec.receive_data(b"") == []
    assert codec.closed


# Properties ------------------------------------------------------------------

_line_text = st.text(
    alphabet=st.characters(exclude_characters="\n\r", exclude_categories=["Cs"]),
    min_size=1,
).filter(lambda s: not s.startswith("/") and s.strip() != "" and len(s.encode()) <= LIMIT)


@given(text=_line_text, crlf=st.booleans())
def test_plain_line_round_trips_to_say(text: str, crlf: bool) -> None:
    data = text.encode() + (b"\r\n" if crlf else b"\n")
    assert welcomed().receive_data(data) == [Say("lobby", text)]
    got, _ = feed_bytewise(welcomed(), data)
    assert got == [Say("lobby", text)]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return [c for c in chunks if c]  # b"" would mean EOF


@given(
    data=st.binary(max_size=300) | st.lists(
        st.sampled_from([b"/join a", b"//", b"hi", b"\n", b"\r", b"\xc3", b"\xa9", b"x" * 9,
                         b"/quit", b"/help", b"/msg b t", b" "]),
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    limit=st.sampled_from([4, 16, LIMIT]),
)
def test_any_bytes_any_split_same_result_bounded(data: bytes, cuts: list[int], limit: int) -> None:
    assume(data)  # b"" is EOF, not a chunk
    whole = welcomed(limit)
    want, want_sent = feed_whole(whole, data)
    for item in want:
        assert isinstance(item, ClientEvent) or item[0] == "error"
    split = welcomed(limit)
    got: list[Any] = []
    sent = b""
    for chunk in _split(data, cuts):
        for item in split.receive_data(chunk):
            assert isinstance(item, ClientEvent | ProtocolError)
            got += norm([item])
        sent += split.data_to_send()
        assert split.buffered <= limit + 1
    assert got == want
    assert sent == want_sent
    assert split.closed == whole.closed
    split.receive_data(b"")
    assert split.closed


@given(
    sender=st.text(max_size=20),
    room=st.text(max_size=20),
    text=st.text(max_size=50),
    key=st.booleans(),
)
def test_output_is_always_exactly_one_line(sender: str, room: str, text: str, key: bool) -> None:
    for body in (
        msg(room, text, sender),
        {"t": "whisper", "from": sender, "to": room, "text": text, "ts": 0},
        {"t": "notice", "text": text},
        {"t": "error", "code": "bad_field", "text": text},
        {"t": "presence", "room": room, "nick": sender, "event": "nick", "new": text},
    ):
        out = TextServerCodec.encode_fanout(body, key)
        assert out.count(b"\n") == 1 and out.endswith(b"\n"), out
        assert b"\r" not in out and b"\x1b" not in out
        out.decode("utf-8")


# Output ----------------------------------------------------------------------


def lines(codec: TextServerCodec, body: dict[str, Any]) -> list[str]:
    out = codec.encode(body)
    assert out.endswith(b"\n")
    return out.decode().split("\n")[:-1]


def test_welcome_and_joined_set_state() -> None:
    codec = TextServerCodec()
    assert codec.nick is None and codec.rooms == ()
    assert lines(codec, {"t": "welcome", "v": 1, "nick": "guest7", "server": "x"}) == [
        "* welcome to chat-relay, you are guest7; type /help for commands"
    ]
    assert codec.nick == "guest7"
    assert lines(codec, {"t": "joined", "room": "lobby", "members": ["guest7", "bob", "carol"],
                         "seq": 4}) == ["* you joined lobby (3 members: guest7, bob, carol)"]
    assert codec.rooms == ("lobby",) and codec.current_room == "lobby"
    # A second join adds a room; the current room moves only with /join.
    assert lines(codec, {"t": "joined", "room": "dev", "members": ["guest7"], "seq": 0}) == [
        "* you joined dev (1 member: guest7)"
    ]
    assert codec.rooms == ("lobby", "dev") and codec.current_room == "lobby"


def test_joined_lists_at_most_twenty_names() -> None:
    members = [f"n{i}" for i in range(MAX_LISTED_MEMBERS + 5)]
    [line] = lines(welcomed(), {"t": "joined", "room": "big", "members": members, "seq": 0})
    assert line == (
        f"* you joined big (25 members: {', '.join(members[:MAX_LISTED_MEMBERS])} and 5 more)"
    )
    exactly = members[:MAX_LISTED_MEMBERS]
    [line] = lines(welcomed(), {"t": "joined", "room": "big", "members": exactly, "seq": 0})
    assert line == f"* you joined big (20 members: {', '.join(exactly)})"


def test_parted_moves_current_room_to_latest_joined() -> None:
    codec = welcomed()
    for room in ("a", "b", "c"):
        codec.encode({"t": "joined", "room": room, "members": ["alice"], "seq": 0})
    codec.receive_data(b"/join b\n")
    assert codec.current_room == "b"
    assert lines(codec, {"t": "parted", "room": "b"}) == [
        "* you left b", "* your lines now go to c"
    ]
    assert codec.current_room == "c" and codec.rooms == ("lobby", "a", "c")
    # Leaving a room that is not current changes nothing else.
    assert lines(codec, {"t": "parted", "room": "a"}) == ["* you left a"]
    assert codec.current_room == "c"
    lines(codec, {"t": "parted", "room": "c"})
    assert codec.current_room == "lobby"
    assert lines(codec, {"t": "parted", "room": "lobby"}) == [
        "* you left lobby", "* you are in no room now: /join ROOM to talk"
    ]
    assert codec.current_room is None and codec.rooms == ()
    assert norm(codec.receive_data(b"hi\n")) == [
        err("not_in_room", "you are in no room: /join ROOM first", "say")
    ]
    # The next joined room becomes current again.
    codec.encode({"t": "joined", "room": "z", "members": ["alice"], "seq": 0})
    assert codec.current_room == "z"


def test_rejoin_counts_as_most_recent() -> None:
    codec = welcomed()
    codec.encode({"t": "joined", "room": "a", "members": [], "seq": 0})
    codec.encode({"t": "joined", "room": "lobby", "members": [], "seq": 0})
    assert codec.rooms == ("a", "lobby")
    codec.receive_data(b"/join x\n")
    codec.encode({"t": "joined", "room": "x", "members": [], "seq": 0})
    codec.encode({"t": "parted", "room": "x"})
    assert codec.current_room == "lobby"


def test_renamed_sets_nick() -> None:
    codec = welcomed()
    assert lines(codec, {"t": "renamed", "nick": "al"}) == ["* you are now known as al"]
    assert codec.nick == "al"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (msg("lobby", "hi all"), ["<bob> hi all"]),
        (msg("dev", "over here"), ["[dev] <bob> over here"]),
        ({"t": "presence", "room": "lobby", "nick": "carol", "event": "join"},
         ["* carol joined lobby"]),
        ({"t": "presence", "room": "dev", "nick": "carol", "event": "part"},
         ["* carol left dev"]),
        ({"t": "presence", "room": "dev", "nick": "carol", "event": "nick", "new": "caz"},
         ["* carol is now known as caz"]),
        ({"t": "whisper", "from": "bob", "to": "alice", "text": "psst", "ts": 1},
         ["*bob* psst"]),
        ({"t": "whisper", "from": "alice", "to": "bob", "text": "hey", "ts": 1},
         ["-> *bob* hey"]),
        ({"t": "members", "room": "lobby", "members": ["alice", "bob"]},
         ["* members of lobby: alice, bob"]),
        ({"t": "rooms", "rooms": {"lobby": 3, "dev": 1}}, ["* rooms: lobby (3), dev (1)"]),
        ({"t": "rooms", "rooms": {}}, ["* rooms: none"]),
        ({"t": "parted", "room": "dev"}, ["* you left dev"]),
        ({"t": "notice", "text": "relay restarts at noon"}, ["* relay restarts at noon"]),
        ({"t": "error", "code": "no_such_nick", "text": "no one is called zed"},
         ["* error: no one is called zed"]),
        ({"t": "pong", "id": 3}, ["* pong"]),
        ({"t": "history", "room": "lobby", "more": True,
          "messages": [msg("lobby", "one", seq=1), msg("lobby", "two", "carol", 2)]},
         ["* history of lobby:", "<bob> one", "<carol> two",
          "* (older messages too: /history N shows the N latest)"]),
        ({"t": "history", "room": "dev", "more": False, "messages": [msg("dev", "one")]},
         ["* history of dev:", "[dev] <bob> one"]),
        ({"t": "history", "room": "dev", "more": False, "messages": []},
         ["* history of dev:", "* (no messages)"]),
    ],
    ids=lambda v: str(v)[:50],
)
def test_encode_lines(body: dict[str, Any], expected: list[str]) -> None:
    assert lines(welcomed(), body) == expected


@pytest.mark.parametrize("body", [{"t": "ping"}, {"t": "ping", "id": 1}, {"t": "whatever"}, {}])
def test_encode_shows_nothing(body: dict[str, Any]) -> None:
    assert welcomed().encode(body) == b""


def test_no_line_injection() -> None:
    codec = welcomed()
    out = codec.encode(msg("lobby", "hi\r\n* welcome to chat-relay, you are root\nx", "ev\nil"))
    assert out == b"<ev il> hi  * welcome to chat-relay, you are root x\n"
    out = codec.encode({"t": "notice", "text": "a\rb"})
    assert out == b"* a b\n"


def test_no_terminal_control() -> None:
    # ESC sequences would reach the terminal of everyone reading through nc.
    out = welcomed().encode(msg("lobby", "\x1b[2Jclear\x07\x00\x7f\x9b1m\tok"))
    assert out == b"<bob>  [2Jclear    1m\tok\n"


def test_unencodable_text_does_not_crash() -> None:
    # A JSON (WebSocket) peer can send a lone surrogate; UTF-8 has no form for it.
    assert welcomed().encode(msg("lobby", "a\ud800b")) == b"<bob> a?b\n"


# Fan-out -----------------------------------------------------------------------


def test_fanout_key_is_whether_the_room_is_current() -> None:
    codec = welcomed()
    assert codec.fanout_key("lobby") is True
    assert codec.fanout_key("dev") is False
    assert hash(codec.fanout_key("dev")) == hash(welcomed().fanout_key("other"))


@pytest.mark.parametrize("room", ["lobby", "dev"])
def test_encode_matches_encode_fanout(room: str) -> None:
    codec = welcomed()
    for body in (
        msg(room, "hello"),
        {"t": "presence", "room": room, "nick": "carol", "event": "join"},
        {"t": "presence", "room": room, "nick": "carol", "event": "nick", "new": "c2"},
    ):
        assert codec.encode(body) == TextServerCodec.encode_fanout(body, codec.fanout_key(room))


def test_encode_fanout_uses_no_instance_state() -> None:
    body = msg("dev", "x")
    assert TextServerCodec.encode_fanout(body, True) == b"<bob> x\n"
    assert TextServerCodec.encode_fanout(body, False) == b"[dev] <bob> x\n"


def test_own_messages_are_not_echoed() -> None:
    codec = welcomed()
    assert codec.encode_own(msg("lobby", "mine", "alice"), None) == b""
    assert codec.encode_own(msg("lobby", "mine", "alice"), 7) == b""
    for event in ("join", "part", "nick"):
        body = {"t": "presence", "room": "lobby", "nick": "alice", "event": event, "new": "al"}
        assert codec.encode_own(body, None) == b""
    notice = {"t": "notice", "text": "x"}
    assert codec.encode_own(notice, None) == codec.encode(notice) == b"* x\n"


def test_flush_partial_takes_a_newline_less_line() -> None:
    codec = TextServerCodec()
    assert codec.receive_data(b"no newline") == [] and codec.partial
    (event,) = codec.flush_partial()
    assert event == Say(room="lobby", text="no newline")
    assert not codec.partial and codec.flush_partial() == []
    assert codec.receive_data(b"x" * 5000) == [] and not codec.partial  # overlong: not kept
