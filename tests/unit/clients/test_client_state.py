"""The client's sans-I/O state and session: dedup, gaps, fills, resume; no sockets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clients.core import Request, Session
from clients.errors import ConnectionClosed, HandshakeError, RelayError
from clients.state import ClientState, Incoming, Missed, Restarted
from transports.events import (
    Error,
    HistoryPage,
    HistoryQuery,
    Joined,
    ListRooms,
    Members,
    Msg,
    Parted,
    Pong,
    RelayEvent,
    Renamed,
    Say,
    Welcome,
    Who,
)
from transports.native import frame, unpack_body


def msg(
    seq: int, room: str = "lobby", sender: str = "bob", text: str = "", id: object = None
) -> Msg:
    return Msg(room, seq, 1_700_000_000_000 + seq, sender, text or f"m{seq}", id)


def joined_state(seq: int = 0, room: str = "lobby") -> ClientState:
    st_ = ClientState("alice")
    st_.receive(Welcome("alice", "chat-relay/test"))
    st_.receive(Joined(room, ("alice",), seq))
    return st_


def seqs(events: list[Incoming]) -> list[int]:
    return [e.seq for e in events if isinstance(e, Msg)]


def test_in_order_messages_are_delivered_once() -> None:
    s = joined_state(5)
    assert seqs(s.receive(msg(6))) == [6]
    assert seqs(s.receive(msg(7))) == [7]
    assert s.receive(msg(7)) == []
    assert s.receive(msg(3)) == []
    assert s.resume_map() == {"lobby": 7}
    assert s.outgoing() == []


def test_messages_before_join_seq_are_duplicates() -> None:
    s = joined_state(10)
    assert s.receive(msg(10)) == []
    assert seqs(s.receive(msg(11))) == [11]


def test_gap_holds_back_and_asks_history() -> None:
    s = joined_state(0)
    assert seqs(s.receive(msg(1))) == [1]
    assert s.receive(msg(4)) == []
    assert s.receive(msg(5)) == []
    assert s.outgoing() == [HistoryQuery("lobby", after=1, limit=2)]
    # Only one fill in flight however many messages arrive behind the gap.
    assert s.receive(msg(6)) == []
    assert s.outgoing() == []
    out = s.receive(HistoryPage("lobby", (msg(2), msg(3)), more=True))
    assert seqs(out) == [2, 3, 4, 5, 6]
    assert s.resume_map() == {"lobby": 6}


def test_live_message_closing_the_gap_releases_held_ones() -> None:
    s = joined_state(0)
    s.receive(msg(2))
    assert seqs(s.receive(msg(1))) == [1, 2]
    s.outgoing()
    # The fill's page now brings only duplicates.
    assert seqs(s.receive(HistoryPage("lobby", (msg(1),), more=False))) == []
    assert seqs(s.receive(msg(3))) == [3]


def test_history_that_no_longer_reaches_reports_missed_count() -> None:
    s = joined_state(0)
    s.receive(msg(1))
    s.receive(msg(10))
    assert s.outgoing() == [HistoryQuery("lobby", after=1, limit=8)]
    # The ring kept only 7..9: 2..6 are gone.
    out = s.receive(HistoryPage("lobby", (msg(7), msg(8), msg(9)), more=False))
    assert out[0] == Missed("lobby", 5, 2, 6)
    assert seqs(out) == [7, 8, 9, 10]


def test_empty_fill_page_gives_up_the_gap() -> None:
    s = joined_state(0)
    s.receive(msg(4))
    s.outgoing()
    out = s.receive(HistoryPage("lobby", (), more=False))
    assert out[0] == Missed("lobby", 3, 1, 3)
    assert seqs(out) == [4]


def test_fill_with_more_asks_again() -> None:
    s = joined_state(0)
    s.receive(msg(1000))
    assert s.outgoing() == [HistoryQuery("lobby", after=0, limit=500)]
    page = tuple(msg(i) for i in range(1, 501))
    assert seqs(s.receive(HistoryPage("lobby", page, more=True))) == list(range(1, 501))
    assert s.outgoing() == [HistoryQuery("lobby", after=500, limit=499)]
    page = tuple(msg(i) for i in range(501, 1000))
    assert seqs(s.receive(HistoryPage("lobby", page, more=True))) == list(range(501, 1001))
    assert s.outgoing() == []


def test_history_gap_notice_then_partial_page_for_a_fill() -> None:
    s = joined_state(0)
    s.receive(msg(1))
    s.receive(msg(20))
    s.outgoing()
    # The relay says 2..15 are gone, then still answers with what it has.
    assert s.receive(Error("history_gap", "2-15 gone", "history", room="lobby")) == []
    out = s.receive(HistoryPage("lobby", tuple(msg(i) for i in range(16, 20)), more=False))
    assert out[0] == Missed("lobby", 14, 2, 15)
    assert seqs(out) == [16, 17, 18, 19, 20]


def test_other_history_error_for_a_fill_gives_the_gap_up() -> None:
    s = joined_state(0)
    s.receive(msg(3))
    s.outgoing()
    out = s.receive(Error("not_in_room", "no", "history", room="lobby"))
    assert out[0] == Missed("lobby", 2, 1, 2)
    assert seqs(out) == [3]


def test_user_history_gap_notice_is_shown_and_page_passes() -> None:
    s = joined_state(20)
    s.sent(HistoryQuery("lobby", 1, 10))
    err = Error("history_gap", "2-15 gone", "history", room="lobby")
    assert s.receive(err) == [err]
    page = HistoryPage("lobby", (msg(16),), more=False)
    assert s.receive(page) == [page]


def test_user_history_page_passes_through_untouched() -> None:
    s = joined_state(5)
    s.sent(HistoryQuery("lobby", None, 10))
    page = HistoryPage("lobby", (msg(1), msg(2)), more=False)
    assert s.receive(page) == [page]
    assert s.resume_map() == {"lobby": 5}


def test_user_and_fill_pages_are_told_apart_in_order() -> None:
    s = joined_state(0)
    s.sent(HistoryQuery("lobby", None, 10))  # user's, answered first
    s.receive(msg(3))
    s.outgoing()
    user_page = HistoryPage("lobby", (), more=False)
    assert s.receive(user_page) == [user_page]
    assert seqs(s.receive(HistoryPage("lobby", (msg(1), msg(2)), more=False))) == [1, 2, 3]


def test_resume_map_and_replay_after_reconnect() -> None:
    s = joined_state(0)
    for i in range(1, 4):
        s.receive(msg(i))
    s.receive(msg(6))  # held behind a gap when the connection dies
    s.connection_lost()
    assert s.resume_map() == {"lobby": 3}
    assert s.outgoing() == []
    # The relay joins us again (room at 7) and replays 4..7.
    assert s.receive(Joined("lobby", ("alice",), 7)) == [Joined("lobby", ("alice",), 7)]
    got: list[int] = []
    for i in (4, 5, 6, 6, 7):
        got += seqs(s.receive(msg(i)))
    assert got == [4, 5, 6, 7]


def test_resume_history_gap_counts_from_the_replay() -> None:
    s = joined_state(0)
    s.receive(msg(1))
    s.connection_lost()
    s.receive(Joined("lobby", ("alice",), 20))
    assert s.receive(Error("history_gap", "2-15 gone", "hello", room="lobby")) == []
    out = s.receive(msg(16))
    assert out[0] == Missed("lobby", 14, 2, 15)
    assert seqs(out) == [16]
    assert s.outgoing() == []  # no fill asked for what is known to be gone
    for i in range(17, 22):
        assert seqs(s.receive(msg(i))) == [i]


def test_resume_after_relay_restart_says_so_once_without_a_count() -> None:
    """Issue 22: a restart is not "missed messages" (nothing was missed)."""
    s = joined_state(0)
    s.receive(msg(1))
    s.receive(msg(2))
    s.connection_lost()
    assert s.receive(Joined("lobby", ("alice",), 0)) == [
        Restarted("lobby"), Joined("lobby", ("alice",), 0)]
    assert s.receive(Error("history_gap", "restarted", "hello", room="lobby")) == []
    assert seqs(s.receive(msg(1))) == [1]


def test_room_numbering_restart_is_followed() -> None:
    s = joined_state(0)
    s.receive(msg(1))
    s.receive(msg(2))
    s.connection_lost()
    s.receive(Joined("lobby", ("alice",), 0))
    assert seqs(s.receive(msg(1))) == [1]


def test_nick_rooms_and_parts_are_tracked() -> None:
    s = joined_state(0)
    s.receive(Joined("dev", ("alice", "bob"), 3))
    assert s.resume_map() == {"lobby": 0, "dev": 3}
    s.receive(Parted("lobby"))
    assert s.resume_map() == {"dev": 3}
    s.receive(Renamed("alice2"))
    assert s.nick == "alice2"
    # A room we are not in is not ordered; it is passed on.
    assert seqs(s.receive(msg(9, room="other"))) == [9]


def test_own_says_are_acked_by_id_or_by_replay() -> None:
    s = joined_state(0)
    s.sent(Say("lobby", "one", "1"))
    s.sent(Say("lobby", "two", "2"))
    s.receive(msg(1, sender="alice", text="one", id="1"))
    assert list(s.unacked) == ["2"]
    s.receive(msg(2, sender="ALICE", text="two"))  # history replay: no id
    assert s.unacked == {}
    s.sent(Say("lobby", "three", "3"))
    s.receive(Error("rate_limited", "slow down", "say", room="lobby"))
    assert s.unacked == {}


@settings(max_examples=200, deadline=None)
@given(
    order=st.permutations(list(range(1, 31))),
    dups=st.lists(st.integers(1, 30), max_size=20),
)
def test_any_arrival_order_delivers_each_seq_once_in_order(
    order: list[int], dups: list[int]
) -> None:
    """Whatever order live messages and fill pages come in: 1..30 once, in order."""
    s = joined_state(0)
    delivered: list[int] = []
    for seq in order + dups:
        delivered += seqs(s.receive(msg(seq)))
        for query in s.outgoing():
            assert isinstance(query, HistoryQuery) and query.after is not None
            page = tuple(msg(i) for i in range(query.after + 1, query.after + 1 + query.limit))
            delivered += seqs(s.receive(HistoryPage("lobby", page, more=True)))
    assert delivered == sorted(set(delivered))
    assert delivered == list(range(1, 31))[: len(delivered)]
    assert delivered[-1] == 30


# Session: handshake and calls, fed with bytes -------------------------------


def body_frames(*events: RelayEvent) -> bytes:
    return b"".join(frame(e.to_body()) for e in events)


def sent_bodies(data: bytes) -> list[dict[str, object]]:
    out = []
    while data:
        n = int.from_bytes(data[:4], "big")
        out.append(unpack_body(data[4 : 4 + n]))
        data = data[4 + n :]
    return out


def test_session_handshake_then_resume_hello() -> None:
    sess = Session("alice", ("lobby", "dev"))
    hello = sent_bodies(sess.hello())[0]
    assert hello == {"t": "hello", "v": 1, "nick": "alice", "rooms": ["lobby", "dev"]}
    batch = sess.receive_data(
        body_frames(Welcome("alice", "x"), Joined("lobby", ("alice",), 4))
    )
    assert not sess.ready
    assert batch.deliver == [Joined("lobby", ("alice",), 4)]
    sess.receive_data(body_frames(Joined("dev", ("alice",), 0)))
    assert sess.ready
    sess.receive_data(body_frames(msg(5)))
    sess.connection_lost("reset")
    hello = sent_bodies(sess.hello())[0]
    assert hello["resume"] == {"lobby": 5, "dev": 0}
    assert hello["rooms"] == ["lobby", "dev"]


def test_session_handshake_refusal_and_keepalive() -> None:
    sess = Session("alice")
    sess.hello()
    batch = sess.receive_data(frame({"t": "ping", "id": 7}))
    assert sent_bodies(batch.out) == [Pong(7).to_body()]
    sess.receive_data(body_frames(Error("nick_taken", "taken", "hello")))
    assert isinstance(sess.failed, HandshakeError) and sess.failed.code == "nick_taken"


def test_session_requests_complete_and_fail() -> None:
    sess = Session("alice")
    sess.hello()
    sess.receive_data(body_frames(Welcome("alice", "x"), Joined("lobby", ("alice",), 0)))
    who = Request("who", "lobby")
    sess.send(Say("lobby", "x", "1"))
    sess.send(HistoryQuery("lobby"), Request("history", "lobby"))
    sess.send(Who("lobby"), who)
    page = HistoryPage("lobby", (), False)
    batch = sess.receive_data(body_frames(page, Members("lobby", ("alice", "bob"))))
    assert batch.deliver == []
    assert [r.result() for r in batch.done] == [page, Members("lobby", ("alice", "bob"))]
    bad = Request("who", "nope")
    sess.send(Who("nope"), bad)
    batch = sess.receive_data(body_frames(Error("not_in_room", "no", "who", room="nope")))
    assert batch.done == [bad]
    try:
        bad.result()
    except RelayError as err:
        assert err.code == "not_in_room"
    else:
        raise AssertionError("expected RelayError")
    pending = Request("rooms")
    sess.send(ListRooms(), pending)
    assert sess.connection_lost("gone") == [pending]
    try:
        pending.result()
    except ConnectionClosed as err:
        assert err.reason == "gone"
    else:
        raise AssertionError("expected ConnectionClosed")


def test_session_reports_garbage_from_relay() -> None:
    sess = Session("alice")
    sess.hello()
    batch = sess.receive_data(b"\x00\x00\x00\x01\xc1")
    assert isinstance(batch.deliver[0], Error) and batch.deliver[0].code == "bad_frame"
    batch = sess.receive_data(b"\xff\xff\xff\xff")
    assert batch.fatal is not None
