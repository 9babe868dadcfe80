"""Per-connection bounds of the IRC and text codecs, each tested at its bound.

(WebSocket's fragments per message are in tests/integration/test_ws_browser.py.)
"""

from __future__ import annotations

from typing import Any

from relay.config import Settings
from transports.events import ListRooms, Oper, Pong, Who
from transports.irc import DEFAULT_MAX_PENDING, IrcServerCodec
from transports.text import TextServerCodec

WELCOME = {"t": "welcome", "v": 1, "nick": "alice", "server": "x"}


def registered(max_pending: int = DEFAULT_MAX_PENDING) -> IrcServerCodec:
    codec = IrcServerCodec(max_pending=max_pending)
    codec.receive_data(b"NICK alice\r\nUSER alice 0 * :alice\r\n")
    codec.encode(WELCOME)
    codec.data_to_send()
    return codec


def numerics(data: bytes) -> list[str]:
    return [line.split(" ")[1] for line in data.decode().split("\r\n")[:-1]]


def members(room: str) -> dict[str, Any]:
    return {"t": "members", "room": room, "members": ["alice", "bob"]}


def test_names_and_who_wait_up_to_max_pending_then_are_answered_at_once() -> None:
    codec = registered(max_pending=4)
    asked = b"".join(f"NAMES #r{i}\r\n".encode() for i in range(4))
    assert codec.receive_data(asked) == [Who(f"r{i}") for i in range(4)]
    assert codec.data_to_send() == b""
    # One more: nothing is recorded or asked; the client gets its end numeric.
    assert codec.receive_data(b"NAMES #x\r\nWHO #y\r\n") == []
    reply = codec.data_to_send().decode()
    assert numerics(reply.encode()) == ["366", "315"]
    assert "#x :End of /NAMES list (over 4 requests unanswered)" in reply
    assert len(codec._asked) == 4
    # An answer frees a place.
    assert numerics(codec.encode(members("r0"))) == ["353", "366"]
    assert codec.receive_data(b"WHO #y\r\n") == [Who("y")]
    for i in (1, 2, 3):
        assert numerics(codec.encode(members(f"r{i}"))) == ["353", "366"]
    assert numerics(codec.encode(members("y"))) == ["352", "352", "315"]
    assert not codec._asked


def test_list_waits_up_to_max_pending() -> None:
    codec = registered(max_pending=2)
    assert codec.receive_data(b"LIST\r\nLIST #a\r\nLIST\r\n") == [ListRooms(), ListRooms()]
    assert numerics(codec.data_to_send()) == ["323"]
    rooms = {"t": "rooms", "rooms": {"a": 1, "b": 2}}
    assert numerics(codec.encode(rooms)) == ["321", "322", "322", "323"]
    assert numerics(codec.encode(rooms)) == ["321", "322", "323"]  # the #a filter
    assert not codec._list_filters


def test_a_request_the_relay_refused_leaves_no_record() -> None:
    """rate_limited comes back in place of the answer: the record goes with it."""
    codec = registered(max_pending=3)
    refused = {"t": "error", "code": "rate_limited", "text": "slow down", "ref": "who"}
    for _ in range(10):  # far more than max_pending, each refused
        assert codec.receive_data(b"NAMES #a\r\n") == [Who("a")]
        codec.encode(refused)
    assert not codec._asked
    # And the next answer for #a is the NAMES that was taken, not a stale WHO.
    assert codec.receive_data(b"WHO #a\r\nNAMES #a\r\n") == [Who("a"), Who("a")]
    codec.encode(refused)  # the NAMES (the newest) was refused
    assert numerics(codec.encode(members("a"))) == ["352", "352", "315"]
    list_refused = {"t": "error", "code": "rate_limited", "text": "slow down", "ref": "rooms"}
    codec.receive_data(b"LIST #a\r\n")
    codec.encode(list_refused)
    assert not codec._list_filters


def test_records_of_requests_that_got_no_answer_are_dropped_by_the_next_answer() -> None:
    """Answers come in request order: records older than the answered one are dead."""
    codec = registered(max_pending=8)
    codec.receive_data(b"NAMES #a\r\nWHO #b\r\nWHO #c\r\n")
    assert numerics(codec.encode(members("c"))) == ["352", "352", "315"]
    assert not codec._asked


def test_opers_and_private_targets_are_bounded() -> None:
    codec = registered(max_pending=4)
    out = codec.receive_data(b"".join(b"OPER x pw%d\r\n" % i for i in range(10)))
    assert len(out) == 10 and all(isinstance(e, Oper) for e in out)
    assert len(codec._opers) == 4
    codec.receive_data(b"".join(b"PRIVMSG bob%d :hi\r\nNICK n%d\r\n" % (i, i) for i in range(10)))
    assert len(codec._whisper_to) == 4 and len(codec._nick_to) == 4
    answer = codec.encode({"t": "notice", "text": "you are an operator"})
    assert numerics(answer) == ["381"] and len(codec._opers) == 3


def test_only_the_last_sixteen_pings_are_remembered() -> None:
    codec = registered()
    for i in range(40):
        codec.encode({"t": "ping", "id": i})
    assert len(codec._ping_ids) == 16
    assert codec.receive_data(b"PONG :39\r\nPONG :24\r\nPONG :23\r\n") == [Pong(39), Pong(24)]


def test_max_pending_comes_from_the_settings() -> None:
    codec = IrcServerCodec.configured(Settings(max_pending=5))
    assert codec.max_pending == 5 and codec._whisper_to.maxlen == 5
    assert Settings().max_pending == DEFAULT_MAX_PENDING


def test_irc_line_buffer_is_bounded_by_max_line() -> None:
    codec = registered()
    for _ in range(20):
        codec.receive_data(b"x" * 1000)
        assert len(codec._buf) <= codec.max_line
    assert numerics(codec.data_to_send()) == ["417"]  # said once per overlong line


def test_text_rooms_and_pending_output_are_bounded() -> None:
    codec = TextServerCodec()
    for i in range(100):
        codec.encode({"t": "joined", "room": "r", "members": [], "seq": i})
    assert codec.rooms == ("r",)  # one entry per room, however often joined
    codec.receive_data(b"/help\n" * 50)
    assert len(codec.data_to_send()) > 0 and codec.data_to_send() == b""


def test_one_read_of_help_lines_queues_one_page() -> None:
    codec = TextServerCodec()
    codec.receive_data(b"/help\n")
    page = codec.data_to_send()
    codec.receive_data(b"/help\n" * 10_000)  # 60 KB in: one page out, not 10,000
    assert codec.data_to_send() == page


def test_error_numerics_the_irc_codec_answers_itself_are_counted_once() -> None:
    codec = registered()
    codec.receive_data(b"FROB\r\nFROB\r\nKICK\r\n")  # 421, 421, 461
    assert numerics(codec.data_to_send()) == ["421", "421", "461"]
    assert codec.take_own_errors() == 3
    assert codec.take_own_errors() == 0
    codec.error_allowance = 2  # what the reader's error budget has left
    codec.receive_data(b"FROB\r\n" * 1000)
    assert numerics(codec.data_to_send()) == ["421", "421"]
    assert codec.take_own_errors() == 1000
    codec.receive_data(b"MODE alice\r\n")  # an answer, not an error
    codec.data_to_send()
    assert codec.take_own_errors() == 0
