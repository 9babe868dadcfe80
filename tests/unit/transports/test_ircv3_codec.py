"""IRCv3 in the IRC codec, sans-I/O: tags, caps, labels, batches, CHATHISTORY,
SASL, ACTION. Expected lines follow the IRCv3 specifications' examples."""

from __future__ import annotations

import base64
from collections import deque
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.hub.chathistory import select
from transports.events import Bye, ChatHistory, Hello, Say, Whisper, Whois, hhmm
from transports.irc import IrcServerCodec
from transports.irc_lines import parse_line
from transports.ircv3_caps import SASL_CHUNK, SASL_MAX, ls_value, request
from transports.ircv3_tags import (
    escape_value,
    parse_room_msgid,
    parse_server_time,
    parse_tags,
    room_msgid,
    server_time,
    set_hub_epoch,
    tag_prefix,
    unescape_value,
)

WELCOME = {"t": "welcome", "v": 1, "nick": "alice", "server": "chat-relay/0.1.0"}
TS = 1_796_385_600_000  # 2026-12-04T12:00:00.000Z


def lines(data: bytes | str) -> list[str]:
    text = data.decode() if isinstance(data, bytes) else data
    assert text.endswith("\r\n") or text == ""
    return text.split("\r\n")[:-1]


def codec_with(caps: str, nick: str = "alice") -> IrcServerCodec:
    codec = IrcServerCodec()
    codec.receive_data(f"CAP LS 302\r\nCAP REQ :{caps}\r\nNICK {nick}\r\nUSER {nick} 0 * :x\r\n"
                       "CAP END\r\n".encode())
    codec.encode({**WELCOME, "nick": nick})
    codec.encode({"t": "joined", "room": "lobby", "members": [nick], "seq": 0})
    codec.data_to_send()
    return codec


def msg(seq: int, sender: str = "bob", text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"t": "msg", "room": "lobby", "seq": seq, "ts": TS + seq, "from": sender,
            "text": text, **extra}


# Tags (message-tags, server-time) ---------------------------------------------------


def test_tag_escaping_follows_the_spec_table() -> None:
    assert escape_value("a;b c\\d\re\nf") == "a\\:b\\sc\\\\d\\re\\nf"
    assert unescape_value("a\\:b\\sc\\\\d\\re\\nf") == "a;b c\\d\re\nf"
    # An unknown escape drops the backslash; a trailing lone one is dropped.
    assert unescape_value("\\b\\") == "b"
    assert parse_tags("aaa=bbb;ccc;example.com/ddd=eee") == {
        "aaa": "bbb", "ccc": "", "example.com/ddd": "eee"}
    assert tag_prefix([("a", "x y"), ("b", None), ("c", "")]) == "@a=x\\sy;c "


@given(st.text(max_size=40))
def test_tag_values_round_trip(value: str) -> None:
    assert unescape_value(escape_value(value)) == value


def test_parse_line_keeps_client_tags() -> None:
    m = parse_line("@label=pQraCjj82e;+draft/reply=abc :nick PRIVMSG #chan :hi there")
    assert m is not None
    assert (m.command, m.params) == ("PRIVMSG", ("#chan", "hi there"))
    assert m.tags == {"label": "pQraCjj82e", "+draft/reply": "abc"}
    huge = parse_line("@a=" + "x" * 5000 + " PING :t")
    assert huge is not None and huge.tags == {} and huge.params == ("t",)


def test_server_time_and_msgid() -> None:
    assert server_time(TS) == "2026-12-04T12:00:00.000Z"
    assert server_time(TS + 42) == "2026-12-04T12:00:00.042Z"
    assert parse_server_time("2026-12-04T12:00:00.042Z") == TS + 42
    assert parse_server_time("2026-12-04T12:00:00Z") == TS
    assert parse_server_time("yesterday") is None
    assert room_msgid("my-room.x", 42, 0x1F) == "1f-42-my-room.x"
    assert parse_room_msgid("1f-42-my-room.x") == ("my-room.x", 42)
    assert parse_room_msgid("nonsense") is None
    assert parse_room_msgid("zz-1-lobby") is None


def test_every_message_carries_time_and_msgid() -> None:
    set_hub_epoch(0xABC)
    codec = codec_with("server-time message-tags")
    key = codec.fanout_key("lobby")
    out = lines(IrcServerCodec.encode_fanout(msg(7), key))
    assert out == ["@time=2026-12-04T12:00:00.007Z;msgid=abc-7-lobby "
                   ":bob!bob@relay PRIVMSG #lobby :hi"]
    plain = IrcServerCodec().fanout_key("lobby")
    assert lines(IrcServerCodec.encode_fanout(msg(7), plain)) == [
        ":bob!bob@relay PRIVMSG #lobby :hi"]


# CAP ---------------------------------------------------------------------------------


def test_cap_ls_values_only_for_302_and_req_is_atomic() -> None:
    assert "sasl=PLAIN" in ls_value(302).split()
    assert "sasl" in ls_value(0).split() and "sasl=PLAIN" not in ls_value(0)
    assert request("batch server-time", frozenset()) == {"batch", "server-time"}
    assert request("batch unknown", frozenset({"sasl"})) is None
    assert request("-sasl batch", frozenset({"sasl"})) == {"batch"}
    assert request("", frozenset()) is None
    codec = IrcServerCodec()
    codec.receive_data(b"CAP LS\r\n")
    assert lines(codec.data_to_send()) == [f":chat-relay CAP * LS :{ls_value(0)}"]


def test_cap_holds_registration_until_cap_end() -> None:
    codec = IrcServerCodec()
    assert codec.receive_data(b"CAP LS 302\r\nNICK a\r\nUSER a 0 * :a\r\n"
                              b"CAP REQ :echo-message\r\n") == []
    assert codec.receive_data(b"CAP END\r\n") == [Hello(nick="a", rooms=())]


# labeled-response, echo-message, batch ------------------------------------------------


def test_labeled_local_answers_one_line_several_lines_or_ack() -> None:
    codec = codec_with("labeled-response batch")
    codec.receive_data(b"@label=one TOPIC #lobby\r\n@label=two MOTD\r\n@label=three PONG :x\r\n")
    out = lines(codec.data_to_send())
    assert out[0] == "@label=one :chat-relay 331 alice #lobby :No topic is set"
    assert out[1] == "@label=two :chat-relay BATCH +L2 labeled-response"
    assert out[2].startswith("@batch=L2 :chat-relay 375 alice :")
    assert out[-3] == "@batch=L2 :chat-relay 376 alice :End of /MOTD command"
    assert out[-2] == ":chat-relay BATCH -L2"
    assert out[-1] == "@label=three :chat-relay ACK"


def test_no_label_without_the_cap() -> None:
    codec = codec_with("batch")
    codec.receive_data(b"@label=one TOPIC #lobby\r\n")
    assert lines(codec.data_to_send()) == [":chat-relay 331 alice #lobby :No topic is set"]


def test_echo_message_returns_own_privmsg_with_label_and_msgid() -> None:
    set_hub_epoch(1)
    codec = codec_with("echo-message labeled-response message-tags")
    events = codec.receive_data(b"@label=L7 PRIVMSG #lobby :hello\r\n")
    assert events == [Say("lobby", "hello", "L7")]
    echo = codec.encode_own(msg(3, sender="alice", text="hello"), "L7")
    assert lines(echo) == ["@msgid=1-3-lobby;label=L7 :alice!alice@relay PRIVMSG #lobby :hello"]
    # Without echo-message, a labeled PRIVMSG is answered with ACK.
    quiet = codec_with("labeled-response")
    quiet.receive_data(b"@label=L8 PRIVMSG #lobby :hello\r\n")
    assert lines(quiet.encode_own(msg(4, sender="alice"), "L8")) == [
        "@label=L8 :chat-relay ACK"]
    assert quiet.encode_own(msg(5, sender="alice"), None) == b""


def test_echo_of_a_whisper() -> None:
    codec = codec_with("echo-message")
    assert codec.receive_data(b"PRIVMSG bob :psst\r\n") == [Whisper("bob", "psst")]
    body = {"t": "whisper", "from": "alice", "to": "bob", "text": "psst", "ts": TS}
    assert lines(codec.encode(body)) == [":alice!alice@relay PRIVMSG bob :psst"]


# CTCP ACTION -------------------------------------------------------------------------


def test_action_in_and_out() -> None:
    codec = codec_with("")
    assert codec.receive_data(b"PRIVMSG #lobby :\x01ACTION waves\x01\r\n"
                              b"PRIVMSG bob :\x01ACTION nods\r\n") == [
        Say("lobby", "waves", action=True), Whisper("bob", "nods", action=True)]
    out = IrcServerCodec.encode_fanout(msg(1, text="bows", action=True), frozenset())
    assert lines(out) == [":bob!bob@relay PRIVMSG #lobby :\x01ACTION bows\x01"]
    long = IrcServerCodec.encode_fanout(msg(1, text="x" * 1000, action=True), frozenset())
    for line in lines(long):
        assert len(line.encode()) + 2 <= 512
        assert line.split(" :", 1)[1].startswith("\x01ACTION ") and line.endswith("\x01")


def test_quit_reason_travels_and_part_shows_it() -> None:
    codec = codec_with("")
    assert codec.receive_data(b"QUIT :gone fishing\r\n") == [Bye("gone fishing")]
    part = {"t": "presence", "room": "lobby", "nick": "dave", "event": "part",
            "reason": "gone fishing"}
    assert lines(IrcServerCodec.encode_fanout(part, frozenset())) == [
        ":dave!dave@relay PART #lobby :gone fishing"]
    del part["reason"]
    assert lines(IrcServerCodec.encode_fanout(part, frozenset())) == [
        ":dave!dave@relay PART #lobby"]
    assert codec_with("").receive_data(b"QUIT\r\n") == [Bye()]


# WHOIS, AWAY -------------------------------------------------------------------------


def test_whois_reply_and_labeled_batch() -> None:
    codec = codec_with("labeled-response batch")
    assert codec.receive_data(b"@label=w WHOIS bob\r\n") == [Whois("bob", "w")]
    out = lines(codec.encode({"t": "whois", "nick": "bob", "rooms": ["lobby", "dev"],
                              "away": "lunch", "id": "w"}))
    assert out == [
        "@label=w :chat-relay BATCH +B1 labeled-response",
        "@batch=B1 :chat-relay 311 alice bob bob relay * :bob",
        "@batch=B1 :chat-relay 312 alice bob chat-relay :chat-relay",
        "@batch=B1 :chat-relay 319 alice bob :#lobby #dev",
        "@batch=B1 :chat-relay 301 alice bob :lunch",
        "@batch=B1 :chat-relay 318 alice bob :End of /WHOIS list",
        ":chat-relay BATCH -B1",
    ]
    err = codec.encode({"t": "error", "code": "no_such_nick", "text": "x", "ref": "whois",
                        "nick": "zed"})
    assert [line.split()[1] for line in lines(err)] == ["401", "318"]


def test_away_notify() -> None:
    codec = codec_with("away-notify")
    assert lines(codec.encode({"t": "away", "nick": "bob", "text": "lunch"})) == [
        ":bob!bob@relay AWAY :lunch"]
    assert lines(codec.encode({"t": "away", "nick": "bob"})) == [":bob!bob@relay AWAY"]
    assert lines(codec.encode({"t": "away", "nick": "alice", "text": "x"}))[0].split()[1] == \
        "306"
    assert codec_with("").encode({"t": "away", "nick": "bob", "text": "lunch"}) == b""


# SASL --------------------------------------------------------------------------------


def _sasl(codec: IrcServerCodec, *chunks: str) -> list[str]:
    codec.receive_data(b"AUTHENTICATE PLAIN\r\n")
    assert lines(codec.data_to_send()) == ["AUTHENTICATE +"]
    codec.receive_data("".join(f"AUTHENTICATE {c}\r\n" for c in chunks).encode())
    return lines(codec.data_to_send())


def test_sasl_plain_sets_the_password_and_account_is_the_nick() -> None:
    codec = IrcServerCodec()
    codec.receive_data(b"CAP LS 302\r\nCAP REQ :sasl\r\nNICK alice\r\nUSER a 0 * :a\r\n")
    codec.data_to_send()
    payload = base64.b64encode(b"\0alice\0sesame").decode()
    assert _sasl(codec, payload) == [
        ":chat-relay 900 alice alice!alice@relay alice :You are now logged in as alice",
        ":chat-relay 903 alice :SASL authentication successful"]
    assert codec.receive_data(b"CAP END\r\n") == [Hello("alice", (), password="sesame")]


def test_sasl_long_payload_comes_in_400_byte_chunks() -> None:
    codec = IrcServerCodec()
    codec.receive_data(b"CAP REQ :sasl\r\nNICK alice\r\n")
    codec.data_to_send()
    password = "p" * (SASL_CHUNK * 3 // 4 - 7)  # exactly 400 base64 bytes in all
    payload = base64.b64encode(f"\0alice\0{password}".encode()).decode()
    assert len(payload) == SASL_CHUNK
    assert _sasl(codec, payload, "+")[-1].split()[1] == "903"
    assert codec._password == password


def test_sasl_refusals() -> None:
    codec = IrcServerCodec()
    codec.receive_data(b"AUTHENTICATE PLAIN\r\n")
    assert lines(codec.data_to_send())[0].split()[1] == "904"  # no CAP REQ sasl
    codec.receive_data(b"CAP REQ :sasl\r\nAUTHENTICATE EXTERNAL\r\n")
    assert [x.split()[1] for x in lines(codec.data_to_send())[1:]] == ["908", "904"]
    assert _sasl(codec, "!!notbase64")[0].split()[1] == "904"
    over = "A" * SASL_CHUNK
    assert _sasl(codec, *[over] * (SASL_MAX // SASL_CHUNK + 1))[0].split()[1] == "904"
    assert _sasl(codec, "*")[0].split()[1] == "906"


# CHATHISTORY -------------------------------------------------------------------------


def _history(caps: str = "draft/chathistory batch server-time message-tags") -> IrcServerCodec:
    return codec_with(caps)


@pytest.mark.parametrize("command, expected", [
    ("LATEST #lobby * 50", ChatHistory("lobby", "latest", (("*", 0),), 50)),
    ("LATEST #lobby msgid=1f-4-lobby 5", ChatHistory("lobby", "latest", (("seq", 4),), 5)),
    ("BEFORE #lobby msgid=1f-4-lobby 5", ChatHistory("lobby", "before", (("seq", 4),), 5)),
    ("AFTER #lobby timestamp=2026-12-04T12:00:00.000Z 5",
     ChatHistory("lobby", "after", (("ts", TS),), 5)),
    ("AROUND #lobby msgid=1f-4-lobby 5", ChatHistory("lobby", "around", (("seq", 4),), 5)),
    ("BETWEEN #lobby msgid=1f-2-lobby timestamp=2026-12-04T12:00:00.000Z 9999",
     ChatHistory("lobby", "between", (("seq", 2), ("ts", TS)), 500)),
    ("TARGETS timestamp=2026-12-04T12:00:00.000Z timestamp=2026-12-05T12:00:00.000Z 10",
     ChatHistory("", "targets", (("ts", TS), ("ts", TS + 86_400_000)), 10)),
])
def test_chathistory_subcommand_parses(command: str, expected: ChatHistory) -> None:
    codec = _history()
    assert codec.receive_data(f"CHATHISTORY {command}\r\n".encode()) == [expected]


@pytest.mark.parametrize("command, fail", [
    ("", "FAIL CHATHISTORY NEED_MORE_PARAMS * :CHATHISTORY needs a subcommand"),
    ("SIDEWAYS #lobby * 5", "FAIL CHATHISTORY UNKNOWN_COMMAND SIDEWAYS :unknown subcommand"),
    ("LATEST #lobby *", "FAIL CHATHISTORY NEED_MORE_PARAMS LATEST"),
    ("BEFORE #lobby * 5", "FAIL CHATHISTORY INVALID_PARAMS BEFORE *"),
    ("BEFORE #lobby msgid=1f-4-other 5", "FAIL CHATHISTORY INVALID_MSGREFTYPE BEFORE"),
    ("AFTER #lobby timestamp=never 5", "FAIL CHATHISTORY INVALID_PARAMS AFTER"),
    ("LATEST #lobby * 0", "FAIL CHATHISTORY INVALID_PARAMS LATEST 0"),
    ("LATEST #bad! * 5", "FAIL CHATHISTORY INVALID_TARGET LATEST #bad!"),
])
def test_chathistory_bad_requests_fail(command: str, fail: str) -> None:
    codec = _history()
    assert codec.receive_data(f"CHATHISTORY {command}\r\n".encode()) == []
    assert lines(codec.data_to_send())[0].startswith(f":chat-relay {fail}")


def test_chathistory_needs_the_cap_and_private_targets_are_empty() -> None:
    codec = codec_with("")
    codec.receive_data(b"CHATHISTORY LATEST #lobby * 5\r\n")
    assert lines(codec.data_to_send())[0].split()[1] == "421"
    codec = _history()
    assert codec.receive_data(b"CHATHISTORY LATEST bob * 5\r\n") == []
    assert lines(codec.data_to_send()) == [":chat-relay BATCH +L1 chathistory bob",
                                           ":chat-relay BATCH -L1"]


def test_chathistory_answer_is_a_batch_with_tags() -> None:
    set_hub_epoch(0x1F)
    codec = _history("draft/chathistory batch server-time message-tags labeled-response")
    body = {"t": "chathistory", "room": "lobby", "sub": "latest", "id": "q",
            "messages": [msg(1), msg(2, sender="alice", text="mine", action=True)]}
    assert lines(codec.encode(body)) == [
        "@label=q :chat-relay BATCH +B1 chathistory #lobby",
        "@time=2026-12-04T12:00:00.001Z;msgid=1f-1-lobby;batch=B1 "
        ":bob!bob@relay PRIVMSG #lobby :hi",
        "@time=2026-12-04T12:00:00.002Z;msgid=1f-2-lobby;batch=B1 "
        ":alice!alice@relay PRIVMSG #lobby :\x01ACTION mine\x01",
        ":chat-relay BATCH -B1",
    ]
    targets = {"t": "chathistory", "sub": "targets", "targets": [["lobby", TS]]}
    assert lines(codec.encode(targets)) == [
        ":chat-relay BATCH +B2 draft/chathistory-targets",
        "@batch=B2 :chat-relay CHATHISTORY TARGETS #lobby timestamp=2026-12-04T12:00:00.000Z",
        ":chat-relay BATCH -B2",
    ]
    err = codec.encode({"t": "error", "code": "not_in_room", "text": "you are not in x",
                        "ref": "chathistory", "room": "x", "id": "q"})
    assert lines(err) == ["@label=q :chat-relay FAIL CHATHISTORY INVALID_TARGET * #x "
                          ":you are not in x"]


def test_join_replay_becomes_a_chathistory_batch() -> None:
    """The replay helper's `history{replay:true}` after `joined`: a batch with
    server-time for clients that took batch, plain lines for the others."""
    codec = _history("batch server-time")
    body = {"t": "history", "room": "lobby", "messages": [msg(1), msg(2)], "more": False,
            "replay": True}
    out = lines(codec.encode(body))
    assert out[0] == ":chat-relay BATCH +B1 chathistory #lobby"
    assert out[1] == "@time=2026-12-04T12:00:00.001Z;batch=B1 :bob!bob@relay PRIVMSG #lobby :hi"
    assert out[-1] == ":chat-relay BATCH -B1"
    # Without batch: Ergo-style autoreplay, the relay's local time before each text.
    plain = lines(codec_with("").encode(body))
    assert plain == [f":bob!bob@relay PRIVMSG #lobby :[{hhmm(m['ts'])}] hi"
                     for m in (msg(1), msg(2))]


# The hub's selection, one test per subcommand ------------------------------------------

RING = deque({"seq": s, "ts": 1000 + 10 * s, "text": f"m{s}"} for s in range(5, 15))  # 5..14


def _seqs(sub: str, *refs: tuple[str, int], limit: int = 100) -> list[int]:
    return [m["seq"] for m in select(RING, 5, sub, refs, limit)]


def test_select_latest() -> None:
    assert _seqs("latest", ("*", 0), limit=3) == [12, 13, 14]
    assert _seqs("latest", ("seq", 11)) == [12, 13, 14]
    assert _seqs("latest", ("ts", 1000 + 10 * 12)) == [13, 14]


def test_select_before() -> None:
    assert _seqs("before", ("seq", 8), limit=2) == [6, 7]
    assert _seqs("before", ("ts", 1000 + 10 * 7)) == [5, 6]
    assert _seqs("before", ("seq", 2)) == []


def test_select_after() -> None:
    assert _seqs("after", ("seq", 8), limit=2) == [9, 10]
    assert _seqs("after", ("ts", 1000 + 10 * 12 + 5)) == [13, 14]
    assert _seqs("after", ("seq", 1), limit=1) == [5]  # older than history: from its start


def test_select_around() -> None:
    assert _seqs("around", ("seq", 9), limit=3) == [8, 9, 10]
    assert _seqs("around", ("seq", 5), limit=3) == [5, 6, 7]
    assert _seqs("around", ("ts", 1000 + 10 * 14), limit=4) == [11, 12, 13, 14]


def test_select_between() -> None:
    assert _seqs("between", ("seq", 6), ("seq", 10)) == [7, 8, 9]
    assert _seqs("between", ("seq", 6), ("seq", 12), limit=2) == [7, 8]
    assert _seqs("between", ("seq", 12), ("seq", 6), limit=2) == [10, 11]
    assert _seqs("between", ("ts", 1000 + 10 * 6), ("ts", 1000 + 10 * 9)) == [7, 8]


def test_sasl_payload_at_the_bound_is_taken_one_byte_over_is_refused() -> None:
    def run(password: str) -> list[str]:
        codec = IrcServerCodec()
        codec.receive_data(b"CAP REQ :sasl\r\nNICK alice\r\n")
        codec.data_to_send()
        payload = base64.b64encode(f"\0alice\0{password}".encode()).decode()
        chunks = [payload[i:i + SASL_CHUNK] for i in range(0, len(payload), SASL_CHUNK)]
        if len(chunks[-1]) == SASL_CHUNK:
            chunks.append("+")
        return _sasl(codec, *chunks)

    at_bound = "p" * (SASL_MAX * 3 // 4 - 7)  # exactly SASL_MAX base64 bytes
    assert len(base64.b64encode(f"\0alice\0{at_bound}".encode())) == SASL_MAX
    assert run(at_bound)[-1].split()[1] == "903"
    assert run(at_bound + "ppp")[-1].split()[1] == "904"  # 4 base64 bytes over
