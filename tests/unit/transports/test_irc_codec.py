"""IRC dialect, sans-I/O: registrations as real clients send them, numerics, mapping."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transports.errors import ERRORS, ProtocolError
from transports.events import (
    Away,
    Bye,
    Hello,
    Join,
    ListRooms,
    NickChange,
    Part,
    Ping,
    Pong,
    Say,
    Whisper,
    Who,
    Whois,
)
from transports.irc import IrcServerCodec
from transports.irc_lines import MAX_LINE, parse_line, split_utf8
from transports.ircv3_caps import ls_value

# What these clients send on connect, written from their known behaviour (not
# captured from live runs): CAP LS 302 first, then NICK and USER.
IRSSI = b"CAP LS 302\r\nNICK alice\r\nUSER alice alice chat-relay :Alice Liddell\r\n"
WEECHAT = b"CAP LS 302\r\nNICK alice\r\nUSER alice 0 * :alice\r\n"
HEXCHAT = b"CAP LS 302\r\nPASS sesame\r\nNICK alice\r\nUSER alice 0 * :realname\r\n"
IRC_LIB = b"NICK alice\r\nUSER alice 0 * :alice\r\n"  # the PyPI irc library: no CAP
CAPS_302 = ls_value(302)
WELCOME = {"t": "welcome", "v": 1, "nick": "alice", "server": "chat-relay/0.1.0"}


def lines(data: bytes) -> list[str]:
    assert data.endswith(b"\r\n") or data == b""
    out = data.decode().split("\r\n")[:-1]
    for line in out:
        assert len(line.encode()) + 2 <= MAX_LINE, line
    return out


def numerics(data: bytes) -> list[str]:
    """The command of each line (`001`, `JOIN`, ...)."""
    return [line.split(" ")[1] for line in lines(data)]


def feed(codec: IrcServerCodec, data: bytes, mode: str = "whole") -> list[Any]:
    if mode == "whole":
        return codec.receive_data(data)
    if mode == "bytewise":
        out: list[Any] = []
        for i in range(len(data)):
            out += codec.receive_data(data[i : i + 1])
        return out
    # trailing: a partial next line follows and must wait for its LF
    out = codec.receive_data(data + b"JOIN #lob")
    assert not any(isinstance(e, Join) for e in out)
    return out


def registered(nick: str = "alice") -> IrcServerCodec:
    codec = IrcServerCodec()
    codec.receive_data(f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())
    codec.encode({**WELCOME, "nick": nick})
    codec.data_to_send()
    return codec


# Registration ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["whole", "bytewise", "trailing"])
@pytest.mark.parametrize("client", [IRSSI, WEECHAT, HEXCHAT])
def test_cap_clients_register_after_cap_end(client: bytes, mode: str) -> None:
    codec = IrcServerCodec()
    assert feed(codec, client, mode) == []
    assert lines(codec.data_to_send()) == [f":chat-relay CAP * LS :{CAPS_302}"]
    events = codec.receive_data(b"\r\nCAP END\r\n" if mode == "trailing" else b"CAP END\r\n")
    hellos = [e for e in events if isinstance(e, Hello)]
    password = "sesame" if client is HEXCHAT else None
    assert hellos == [Hello(nick="alice", rooms=(), password=password)]
    welcome = codec.encode(WELCOME)
    assert numerics(welcome) == ["001", "002", "003", "004", "005", "375", "372", "372", "376"]
    assert lines(welcome)[0].startswith(":chat-relay 001 alice :")
    assert codec.registered and codec.nick == "alice"


def test_client_without_cap_registers_on_nick_and_user() -> None:
    codec = IrcServerCodec()
    assert codec.receive_data(IRC_LIB) == [Hello(nick="alice", rooms=())]
    assert codec.receive_data(b"PING :x\r\n") == []  # no second Hello while one is in flight


def test_user_before_nick_works_too() -> None:
    codec = IrcServerCodec()
    assert codec.receive_data(b"USER a 0 * :a\r\n") == []
    assert codec.receive_data(b"NICK bob\r\n") == [Hello(nick="bob", rooms=())]


def test_cap_req_is_all_or_nothing_and_list_shows_what_is_on() -> None:
    codec = IrcServerCodec()
    codec.receive_data(b"CAP LS 302\r\nCAP REQ :multi-prefix sasl nonsense\r\nCAP LIST\r\n"
                       b"CAP REQ :multi-prefix sasl\r\nCAP REQ :-sasl\r\nCAP LIST\r\n"
                       b"CAP FOO\r\n")
    assert lines(codec.data_to_send()) == [
        f":chat-relay CAP * LS :{CAPS_302}",
        ":chat-relay CAP * NAK :multi-prefix sasl nonsense",
        ":chat-relay CAP * LIST :",
        ":chat-relay CAP * ACK :multi-prefix sasl",
        ":chat-relay CAP * ACK :-sasl",
        ":chat-relay CAP * LIST :multi-prefix",
        ":chat-relay 410 * FOO :Invalid CAP command",
    ]


def test_nick_taken_during_registration_lets_the_client_pick_another() -> None:
    codec = IrcServerCodec()
    codec.receive_data(WEECHAT + b"CAP END\r\n")
    reply = codec.encode(
        {"t": "error", "code": "nick_taken", "text": "taken", "ref": "hello", "nick": "alice"}
    )
    assert lines(reply) == [":chat-relay 433 * alice :Nickname is already in use"]
    assert codec.receive_data(b"NICK alice_\r\n") == [Hello(nick="alice_", rooms=())]
    codec.encode({**WELCOME, "nick": "alice_"})
    assert codec.nick == "alice_"


def test_erroneous_nick_is_refused_locally() -> None:
    codec = IrcServerCodec()
    assert codec.receive_data(b"NICK [bad]\r\nUSER a 0 * :a\r\n") == []
    assert numerics(codec.data_to_send()) == ["432"]
    assert codec.receive_data(b"NICK good\r\n") == [Hello(nick="good", rooms=())]


def test_commands_before_registration_get_451() -> None:
    codec = IrcServerCodec()
    assert codec.receive_data(b"JOIN #lobby\r\nPRIVMSG #lobby :hi\r\n") == []
    assert numerics(codec.data_to_send()) == ["451", "451"]


def test_ping_before_and_after_registration() -> None:
    codec = IrcServerCodec()
    codec.receive_data(b"PING :12345\r\nPING\r\n")
    assert lines(codec.data_to_send()) == [
        ":chat-relay PONG chat-relay :12345", ":chat-relay 409 * :No origin specified"
    ]
    # Registered, PING goes through the relay (in order with the commands before
    # it) and the relay's pong comes back as the PONG.
    codec = registered()
    assert codec.receive_data(b"WHO #lobby\r\nPING :lag 1\r\n")[-1] == Ping("lag 1")
    assert codec.data_to_send() == b""
    assert lines(codec.encode({"t": "pong", "id": "lag 1"})) == [
        ":chat-relay PONG chat-relay :lag 1"]


def test_reregistration_is_refused() -> None:
    codec = registered()
    codec.receive_data(b"USER a 0 * :a\r\nPASS x\r\n")
    assert numerics(codec.data_to_send()) == ["462", "462"]


def test_user_needs_four_params() -> None:
    codec = IrcServerCodec()
    assert codec.receive_data(b"NICK a\r\nUSER a\r\n") == []
    assert numerics(codec.data_to_send()) == ["461"]


# Channels -------------------------------------------------------------------------


def test_join_maps_channels_to_rooms_and_refuses_bad_names() -> None:
    codec = registered()
    events = codec.receive_data(b"JOIN #lobby,#dev.team,lobby,#bad@name\r\n")
    assert events == [Join("lobby"), Join("dev.team")]
    assert numerics(codec.data_to_send()) == ["403", "479"]
    assert codec.receive_data(b"JOIN\r\n") == []
    assert numerics(codec.data_to_send()) == ["461"]


def test_joined_gives_join_then_names_to_the_joiner() -> None:
    codec = registered()
    reply = codec.encode({"t": "joined", "room": "lobby", "members": ["alice", "bob"], "seq": 4})
    assert lines(reply) == [
        ":alice!alice@relay JOIN #lobby",
        ":chat-relay 353 alice = #lobby :alice bob",
        ":chat-relay 366 alice #lobby :End of /NAMES list",
    ]
    assert codec.rooms == ("lobby",)
    # The joiner's own presence is already shown; others see the JOIN line.
    presence = {"t": "presence", "room": "lobby", "nick": "alice", "event": "join"}
    assert codec.encode_own(presence, None) == b""
    assert codec.encode(presence) == b""
    assert IrcServerCodec.encode_fanout(presence, None) == b":alice!alice@relay JOIN #lobby\r\n"


def test_names_are_split_to_fit_a_line() -> None:
    codec = registered()
    members = [f"member{i:03d}-with-a-long-nick" for i in range(100)]
    reply = lines(codec.encode({"t": "joined", "room": "big", "members": members, "seq": 0}))
    names = [n for line in reply if " 353 " in line for n in line.split(" :", 1)[1].split()]
    assert names == members
    assert reply[-1].split()[1] == "366"


def test_part_and_parted() -> None:
    codec = registered()
    codec.encode({"t": "joined", "room": "lobby", "members": ["alice"], "seq": 0})
    assert codec.receive_data(b"PART #lobby :bye now\r\n") == [Part("lobby")]
    assert lines(codec.encode({"t": "parted", "room": "lobby"})) == [
        ":alice!alice@relay PART #lobby"
    ]
    assert codec.rooms == ()
    error = {"t": "error", "code": "not_in_room", "text": "no", "ref": "part", "room": "x"}
    assert numerics(codec.encode(error)) == ["442"]


def test_join_0_parts_everything() -> None:
    codec = registered()
    for room in ("a", "b"):
        codec.encode({"t": "joined", "room": room, "members": ["alice"], "seq": 0})
    assert codec.receive_data(b"JOIN 0\r\n") == [Part("a"), Part("b")]


def test_others_presence() -> None:
    join = {"t": "presence", "room": "lobby", "nick": "bob", "event": "join"}
    part = {"t": "presence", "room": "lobby", "nick": "bob", "event": "part"}
    nick = {"t": "presence", "room": "lobby", "nick": "bob", "event": "nick", "new": "rob"}
    assert IrcServerCodec.encode_fanout(join, None) == b":bob!bob@relay JOIN #lobby\r\n"
    assert IrcServerCodec.encode_fanout(part, None) == b":bob!bob@relay PART #lobby\r\n"
    assert IrcServerCodec.encode_fanout(nick, None) == b":bob!bob@relay NICK :rob\r\n"
    assert registered().encode_own(join, None) == IrcServerCodec.encode_fanout(join, None)


# Messages -------------------------------------------------------------------------


def test_privmsg_to_channel_and_nick() -> None:
    codec = registered()
    events = codec.receive_data(b"PRIVMSG #lobby :hello there\r\nPRIVMSG bob :psst\r\n")
    assert events == [Say("lobby", "hello there"), Whisper("bob", "psst")]
    assert codec.receive_data(b"NOTICE #lobby :quiet\r\n") == [Say("lobby", "quiet")]


def test_privmsg_errors() -> None:
    codec = registered()
    assert codec.receive_data(b"PRIVMSG\r\nPRIVMSG #lobby\r\nPRIVMSG b[a]d :x\r\n") == []
    assert numerics(codec.data_to_send()) == ["411", "412", "401"]
    # NOTICE never gets an automatic reply (RFC 2812 3.3.2).
    assert codec.receive_data(b"NOTICE\r\nNOTICE #lobby\r\nNOTICE b[a]d :x\r\n") == []
    assert codec.data_to_send() == b""


def test_text_over_the_limit_is_an_error_not_a_closed_connection() -> None:
    codec = registered()
    (err,) = codec.receive_data(b"PRIVMSG #lobby :" + b"x" * 4097 + b"\r\n")
    assert isinstance(err, ProtocolError) and err.code == "text_too_long" and not err.fatal
    assert numerics(codec.encode(err.body())) == ["417"]
    assert codec.receive_data(b"PRIVMSG #lobby :" + b"x" * 4096 + b"\r\n")[0] == Say(
        "lobby", "x" * 4096
    )


def test_others_messages_arrive_as_privmsg_and_own_are_not_echoed() -> None:
    codec = registered()
    body = {"t": "msg", "room": "lobby", "seq": 1, "ts": 1, "from": "bob", "text": "hi all"}
    line = b":bob!bob@relay PRIVMSG #lobby :hi all\r\n"
    assert IrcServerCodec.encode_fanout(body, None) == line
    assert codec.encode(body) == line
    own = {**body, "from": "alice"}
    assert codec.encode_own(own, "id1") == b""
    assert codec.encode(own) == b""


def test_message_text_cannot_inject_lines() -> None:
    body = {"t": "msg", "room": "lobby", "seq": 1, "ts": 1, "from": "bob",
            "text": "one\r\nQUIT :x\n\ntwo\x00"}
    assert lines(IrcServerCodec.encode_fanout(body, None)) == [
        ":bob!bob@relay PRIVMSG #lobby :one",
        ":bob!bob@relay PRIVMSG #lobby :QUIT :x",
        ":bob!bob@relay PRIVMSG #lobby :two",
    ]


def test_long_text_is_split_into_lines_of_at_most_512_bytes() -> None:
    text = "é" * 3000 + " end"
    body = {"t": "msg", "room": "lobby", "seq": 1, "ts": 1, "from": "bob", "text": text}
    out = lines(IrcServerCodec.encode_fanout(body, None))
    assert len(out) > 1
    assert "".join(line.split(" :", 1)[1] for line in out) == text


def test_whispers() -> None:
    codec = registered()
    codec.receive_data(b"PRIVMSG bob :psst\r\nPRIVMSG carol :hey\r\n")
    echo = {"t": "whisper", "from": "alice", "to": "bob", "text": "psst", "ts": 1}
    assert codec.encode(echo) == b""
    error = {"t": "error", "code": "no_such_nick", "text": "no carol", "ref": "whisper"}
    assert lines(codec.encode(error)) == [":chat-relay 401 alice carol :No such nick/channel"]
    incoming = {"t": "whisper", "from": "bob", "to": "alice", "text": "hi", "ts": 2}
    assert lines(codec.encode(incoming)) == [":bob!bob@relay PRIVMSG alice :hi"]


def test_say_to_a_room_not_joined_gets_404() -> None:
    codec = registered()
    error = {"t": "error", "code": "not_in_room", "text": "no", "ref": "say", "room": "x"}
    assert lines(codec.encode(error)) == [
        ":chat-relay 404 alice #x :Cannot send to channel (join it first)"
    ]


# Queries --------------------------------------------------------------------------


def test_names_and_who_answer_the_same_members_differently() -> None:
    codec = registered()
    assert codec.receive_data(b"WHO #lobby\r\nNAMES #lobby\r\n") == [Who("lobby"), Who("lobby")]
    members = {"t": "members", "room": "lobby", "members": ["alice", "bob"]}
    assert numerics(codec.encode(members)) == ["352", "352", "315"]
    assert numerics(codec.encode(members)) == ["353", "366"]
    assert lines(registered().encode(members))[0].endswith("= #lobby :alice bob")


def test_who_and_names_of_a_room_not_joined_end_cleanly() -> None:
    codec = registered()
    codec.receive_data(b"WHO #x\r\nNAMES #x\r\n")
    error = {"t": "error", "code": "not_in_room", "text": "no", "ref": "who", "room": "x"}
    assert numerics(codec.encode(error)) == ["315"]
    assert numerics(codec.encode(error)) == ["366"]
    codec.receive_data(b"WHO bob\r\nNAMES\r\n")
    assert numerics(codec.data_to_send()) == ["315", "366"]


def test_list() -> None:
    codec = registered()
    assert codec.receive_data(b"LIST\r\nLIST #b\r\n") == [ListRooms(), ListRooms()]
    rooms = {"t": "rooms", "rooms": {"b": 2, "a": 1}}
    assert lines(codec.encode(rooms)) == [
        ":chat-relay 321 alice Channel :Users  Name",
        ":chat-relay 322 alice #a 1 :",
        ":chat-relay 322 alice #b 2 :",
        ":chat-relay 323 alice :End of /LIST",
    ]
    assert numerics(codec.encode(rooms)) == ["321", "322", "323"]


def test_topic_mode_whois_away_are_answered_harmlessly() -> None:
    codec = registered()
    codec.encode({"t": "joined", "room": "lobby", "members": ["alice"], "seq": 0})
    codec.data_to_send()
    assert codec.receive_data(
        b"TOPIC #lobby\r\nTOPIC #other\r\nTOPIC #lobby :new\r\n"
        b"MODE #lobby\r\nMODE #lobby b\r\nMODE #lobby +o bob\r\nMODE alice +i\r\nMODE bob\r\n"
        b"WHOIS alice\r\nWHOIS bob\r\nUSERHOST alice\r\nAWAY :lunch\r\nAWAY\r\nISON bob\r\n"
    ) == [Whois("alice"), Whois("bob"), Away("lunch"), Away(None)]
    assert numerics(codec.data_to_send()) == [
        "331", "442", "482",
        "324", "368", "482", "221", "502",
        "302", "303",
    ]


def test_unknown_command_gets_421() -> None:
    codec = registered()
    codec.receive_data(b"KNOCK #x\r\n")
    assert lines(codec.data_to_send()) == [":chat-relay 421 alice KNOCK :Unknown command"]


def test_nick_change() -> None:
    codec = registered()
    assert codec.receive_data(b"NICK alicia\r\nNICK b[a]d\r\n") == [NickChange("alicia")]
    assert numerics(codec.data_to_send()) == ["432"]
    assert lines(codec.encode({"t": "renamed", "nick": "alicia"})) == [
        ":alice!alice@relay NICK :alicia"
    ]
    own = {"t": "presence", "room": "lobby", "nick": "alice", "event": "nick", "new": "alicia"}
    assert codec.encode_own(own, None) == b""
    codec.receive_data(b"NICK bob\r\n")
    taken = {"t": "error", "code": "nick_taken", "text": "taken", "ref": "nick", "nick": "bob"}
    assert lines(codec.encode(taken)) == [":chat-relay 433 alicia bob :Nickname is already in use"]


def test_keepalive_ping_round_trip() -> None:
    codec = registered()
    assert codec.encode({"t": "ping", "id": 17}) == b"PING :17\r\n"
    assert codec.receive_data(b"PONG chat-relay :17\r\n") == [Pong(17)]
    assert codec.receive_data(b"PONG :unknown\r\n") == []


def test_quit() -> None:
    codec = registered()
    assert codec.receive_data(b"QUIT :gone fishing\r\nPRIVMSG #lobby :late\r\n") == [
        Bye("gone fishing")]
    assert codec.closed
    # The ERROR line waits for the relay's farewell: replies to what came
    # before the QUIT go first.
    assert codec.data_to_send() == b""
    assert codec.encode({"t": "members", "room": "lobby", "members": ["alice"]})
    assert lines(codec.farewell()) == ["ERROR :Closing Link: alice (Quit: gone fishing)"]


def test_relay_errors_map_to_numerics_or_notices() -> None:
    codec = registered()
    def reply(code: str, **extra: Any) -> list[str]:
        return lines(codec.encode({"t": "error", "code": code, "text": "why", **extra}))
    assert reply("rate_limited")[0] == ":chat-relay NOTICE alice :error rate_limited: why"
    assert reply("room_invalid", room="x")[0].split()[1] == "479"
    assert reply("auth_failed")[0].split()[1] == "464"
    assert not codec.closed
    assert reply("shutting_down") == ["ERROR :Closing Link: alice (shutting_down: why)"]
    assert codec.closed


# What IRC clients act on, pinned here: the error table must keep giving these.
IRC_NUMERICS = {
    "not_ready": "451", "nick_taken": "433", "nick_invalid": "432", "room_invalid": "479",
    "not_in_room": "442", "no_such_nick": "401", "text_too_long": "417",
    "auth_failed": "464", "too_many_rooms": "405", "not_operator": "481", "banned": "465",
}


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_every_error_code_is_answered_as_the_table_says(code: str) -> None:
    """A plain error (no request that needs its own reply) becomes the table's
    numeric or a NOTICE, then the closing line if the code closes."""
    codec = registered()
    got = lines(codec.encode(
        {"t": "error", "code": code, "text": "why", "room": "x", "nick": "bob"}))
    rule = ERRORS[code]
    assert {c: r.irc.numeric for c, r in ERRORS.items() if r.irc} == IRC_NUMERICS
    if code in IRC_NUMERICS:
        assert got[0].split()[1] == IRC_NUMERICS[code]
    elif not rule.closes:
        assert got == [f":chat-relay NOTICE alice :error {code}: why"]
    assert codec.closed == rule.closes
    assert got[-1].startswith("ERROR :Closing Link: alice") == rule.closes


def test_notice_from_relay() -> None:
    codec = registered()
    assert codec.encode({"t": "notice", "text": "hi\nthere"}) == (
        b":chat-relay NOTICE alice :hi\r\n:chat-relay NOTICE alice :there\r\n"
    )


# Line handling --------------------------------------------------------------------


def test_overlong_line_gets_417_and_the_connection_stays() -> None:
    codec = registered()
    events = codec.receive_data(b"PRIVMSG #a :" + b"x" * 5000 + b"\r\nPING :ok\r\n")
    assert events == [Ping("ok")]  # the next line is read as usual
    assert numerics(codec.data_to_send()) == ["417"]
    # The same, arriving in pieces without a line end: one reply, then back to normal.
    for _ in range(5):
        assert codec.receive_data(b"y" * 2000) == []
    assert codec.receive_data(b"tail\r\nPRIVMSG #a :ok\r\n") == [Say("a", "ok")]
    assert numerics(codec.data_to_send()) == ["417"]
    assert not codec.closed


def test_line_endings_tags_prefixes_and_latin1() -> None:
    codec = registered()
    events = codec.receive_data(
        b"PRIVMSG #a :lf only\n@time=x :alice PRIVMSG #a :tagged\r\n\r\n"
        b"privmsg #a :caf\xe9\r\n"
    )
    assert events == [Say("a", "lf only"), Say("a", "tagged"), Say("a", "café")]


def test_parse_line() -> None:
    m = parse_line(":pfx PRIVMSG  #a  :two  spaces ")
    assert m is not None and m.command == "PRIVMSG" and m.params == ("#a", "two  spaces ")
    assert parse_line("   ") is None
    assert parse_line("@tags-only") is None


@given(st.text(max_size=300), st.integers(min_value=8, max_value=100))
def test_split_utf8_keeps_text_and_budget(text: str, budget: int) -> None:
    pieces = list(split_utf8(text, budget))
    assert "".join(pieces) == text.encode("utf-8", "replace").decode("utf-8", "replace")
    assert all(len(p.encode()) <= budget for p in pieces)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=80), st.booleans())
def test_random_bytes_never_raise(data: bytes, chunk: int, reg: bool) -> None:
    codec = registered() if reg else IrcServerCodec()
    for i in range(0, len(data), chunk):
        for item in codec.receive_data(data[i : i + chunk]):
            if isinstance(item, ProtocolError):
                codec.encode(item.body())
        lines_out = codec.data_to_send()
        assert isinstance(lines_out, bytes)


COMMANDS = ["NICK", "USER", "CAP", "JOIN", "PART", "PRIVMSG", "NOTICE", "NAMES", "WHO", "LIST",
            "TOPIC", "MODE", "PING", "PONG", "WHOIS", "PASS", "AWAY", "ISON", "USERHOST", "X"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(COMMANDS),
                          st.lists(st.text(alphabet="#abc,:+ *\r\x00é", max_size=6),
                                   max_size=5)), max_size=8))
def test_random_commands_never_raise_and_replies_stay_within_512(
    commands: list[tuple[str, list[str]]]
) -> None:
    codec = registered()
    data = "".join(f"{c} {' '.join(p)}\r\n" for c, p in commands).encode()
    codec.receive_data(data)
    for line in codec.data_to_send().split(b"\r\n")[:-1]:
        assert len(line) + 2 <= MAX_LINE and b"\n" not in line and b"\r" not in line


def test_a_bot_may_pipeline_commands_after_registration() -> None:
    codec = IrcServerCodec()
    events = codec.receive_data(
        b"NICK bot\r\nUSER bot 0 * :bot\r\nJOIN #a\r\nPRIVMSG #a :hi\r\nNICK bot2\r\n"
    )
    assert events == [Hello(nick="bot", rooms=()), Join("a"), Say("a", "hi"), NickChange("bot2")]
    assert codec.data_to_send() == b""
    # Had the hello failed, the relay answers the rest with not_ready: 451 each.
    assert numerics(codec.encode({"t": "error", "code": "not_ready", "text": "x"})) == ["451"]


def test_replies_after_the_hello_wait_for_001() -> None:
    """A bot sending NICK, USER and more in one write gets 001 before any 421."""
    codec = IrcServerCodec()
    events = codec.receive_data(b"NICK bot\r\nUSER bot 0 * :bot\r\nFOO\r\nJOIN #dev\r\n")
    assert [type(e).__name__ for e in events] == ["Hello", "Join"]
    assert b"421" not in codec.data_to_send()  # held back
    welcome = codec.encode({"t": "welcome", "v": 1, "nick": "bot", "server": "chat-relay/0"})
    text = welcome.decode()
    assert text.index(" 001 ") < text.index(" 421 ")
    assert codec.data_to_send() == b""  # released once, with the welcome
    # Refused hello: the 433 comes first, then what was held.
    codec = IrcServerCodec()
    codec.receive_data(b"NICK taken\r\nUSER t 0 * :t\r\nFOO\r\n")
    reply = codec.encode({"t": "error", "code": "nick_taken", "text": "taken", "ref": "hello",
                          "nick": "taken"}).decode()
    assert reply.index(" 433 ") < reply.index(" 421 ")
