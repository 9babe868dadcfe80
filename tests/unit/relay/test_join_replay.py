"""Join replay (issue 22): a fresh join shows the room's latest messages.

Without sockets: the hub's output, each dialect's rendering of the replay page,
and the client library's state (a replay is never a gap, a duplicate or an
answer to a query). Through a real relay: tests/integration/test_join_replay_relay.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from clients.core import Request
from clients.render import View, plain, render
from clients.state import ClientState
from relay.bus.wire import room_topic, worker_topic
from relay.cli import HUB_SETTINGS, _settings, build_parser
from relay.config import Settings
from relay.hub.state import HubState, Out
from transports.events import HistoryPage, HistoryQuery, Joined, Msg, hhmm, parse_relay_body
from transports.irc import IrcServerCodec
from transports.native import NativeClientCodec, frame
from transports.text import TextServerCodec

TS = 1_700_000_000_000  # a fixed relay timestamp (ms)


def hub(**kw: Any) -> HubState:
    return HubState(epoch=1, clock=lambda: TS, **kw)


def run(state: HubState, worker: str, *reqs: dict[str, Any]) -> Out:
    out: Out = []
    for req in reqs:
        state.handle(worker, req, out, 0.0)
    return out


def to_client(out: Out, worker: str = "A") -> list[dict[str, Any]]:
    return [item[1] for t, item in out if t == worker_topic(worker)]


def room_with(s: HubState, room: str, count: int, conn: int = 99) -> None:
    """`count` messages said in `room` by a member who stays."""
    run(s, "A", {"op": "hb", "hello": True})
    run(s, "A", {"op": "hello", "c": conn, "nick": f"talker{conn}", "rooms": [room]})
    run(s, "A", *({"op": "say", "c": conn, "room": room, "text": f"m{i}"}
                  for i in range(1, count + 1)))


# The hub ----------------------------------------------------------------------


def test_fresh_join_gets_the_latest_20_after_joined_and_presence() -> None:
    s = hub()
    room_with(s, "lobby", 30)
    out = run(s, "A", {"op": "hello", "c": 1, "nick": "new", "rooms": ["lobby"]})
    got = to_client(out)
    assert [b["t"] for b in got] == ["welcome", "joined", "history"]
    joined, page = got[1], got[2]
    assert page["replay"] is True and page["room"] == "lobby" and page["more"] is True
    assert [m["seq"] for m in page["messages"]] == list(range(11, 31))
    assert all(m["seq"] <= joined["seq"] for m in page["messages"])
    # joined, the join's presence (room topic), then the replay; a later say comes after.
    out += run(s, "A", {"op": "say", "c": 99, "room": "lobby", "text": "live"})
    kinds = [(t, (item[1] if t == worker_topic("A") else item[0])["t"]) for t, item in out]
    assert kinds[1:] == [(worker_topic("A"), "joined"), (room_topic("lobby"), "presence"),
                         (worker_topic("A"), "history"), (room_topic("lobby"), "msg")]


def test_join_op_replay_is_bounded_by_join_replay_and_off_at_zero() -> None:
    for n, want in ((5, list(range(26, 31))), (30, list(range(1, 31))), (31, list(range(1, 31)))):
        s = hub(join_replay=n)
        room_with(s, "dev", 30)
        run(s, "A", {"op": "hello", "c": 1, "nick": "new", "rooms": []})
        page = to_client(run(s, "A", {"op": "join", "c": 1, "room": "dev"}))[1]
        assert [m["seq"] for m in page["messages"]] == want
        assert page["more"] is (n < 30)
    s = hub(join_replay=0)
    room_with(s, "dev", 30)
    run(s, "A", {"op": "hello", "c": 1, "nick": "new", "rooms": []})
    assert [b["t"] for b in to_client(run(s, "A", {"op": "join", "c": 1, "room": "dev"}))] \
        == ["joined"]


def test_no_replay_for_an_empty_room_a_rejoin_or_a_resume() -> None:
    s = hub()
    room_with(s, "lobby", 3)
    out = run(s, "A", {"op": "hello", "c": 1, "nick": "new", "rooms": ["empty"]})
    assert [b["t"] for b in to_client(out)] == ["welcome", "joined"]
    run(s, "A", {"op": "join", "c": 1, "room": "lobby"})
    again = to_client(run(s, "A", {"op": "join", "c": 1, "room": "lobby"}))
    assert [b["t"] for b in again] == ["joined"]  # already a member: not a join
    # A resume gets what it missed (seq 3), never the replay as well, even when
    # the room is also named in `rooms`.
    out = run(s, "A", {"op": "hello", "c": 2, "nick": "back", "rooms": ["lobby"],
                       "resume": {"lobby": 2}})
    got = to_client(out)
    assert [b["t"] for b in got] == ["welcome", "joined", "msg"] and got[2]["seq"] == 3


def test_a_hello_replays_only_its_first_join_replay_rooms_rooms() -> None:
    s = hub(join_replay_rooms=3)
    rooms = ["empty", "r1", "r2", "r3", "r4"]
    for i, room in enumerate(rooms[1:]):
        room_with(s, room, 2, conn=90 + i)
    out = run(s, "A", {"op": "hello", "c": 1, "nick": "new", "rooms": rooms})
    pages = [b["room"] for b in to_client(out) if b["t"] == "history"]
    assert pages == ["r1", "r2", "r3"]  # an empty room does not use up the budget
    # A later join is a request of its own: it gets its replay.
    out = run(s, "A", {"op": "part", "c": 1, "room": "r4"}, {"op": "join", "c": 1, "room": "r4"})
    assert [b["room"] for b in to_client(out) if b["t"] == "history"] == ["r4"]


# Events and dialects ------------------------------------------------------------


def replay_body(count: int = 2, more: bool = False, room: str = "lobby") -> dict[str, Any]:
    msgs = [{"t": "msg", "room": room, "seq": i, "ts": TS + i * 60_000, "from": f"u{i}",
             "text": f"hello {i}"} for i in range(1, count + 1)]
    return {"t": "history", "room": room, "messages": msgs, "more": more, "replay": True}


def test_the_replay_marker_round_trips_and_is_absent_on_ordinary_pages() -> None:
    body = replay_body()
    page = parse_relay_body(body)
    assert isinstance(page, HistoryPage) and page.replay and page.to_body() == body
    ordinary = dict(body, replay=None)
    del ordinary["replay"]
    assert not parse_relay_body(ordinary).replay  # type: ignore[attr-defined]
    assert "replay" not in parse_relay_body(ordinary).to_body()
    (decoded,) = NativeClientCodec().receive_data(frame(body))
    assert decoded == page


def test_hhmm_is_local_time_and_survives_junk() -> None:
    assert hhmm(TS) == time.strftime("%H:%M", time.localtime(TS / 1000))
    assert hhmm("soon") == hhmm(None) == hhmm(True) == hhmm(10**30) == "--:--"


def test_text_dialect_frames_the_replay_with_stamped_lines() -> None:
    codec = TextServerCodec()
    out = codec.encode(replay_body(2)).decode()
    assert out.splitlines() == [
        "* earlier messages in lobby:",
        f"[{hhmm(TS + 60_000)}] <u1> hello 1",
        f"[{hhmm(TS + 120_000)}] <u2> hello 2",
        "* (end of earlier messages)",
    ]
    more = codec.encode(replay_body(1, more=True)).decode().splitlines()
    assert more[-1] == "* (end of earlier messages; /history lobby shows more)"
    # An action shows as one, as it did live.
    acted = replay_body(1)
    acted["messages"][0]["action"] = True
    assert codec.encode(acted).decode().splitlines()[1] == f"[{hhmm(TS + 60_000)}] * u1 hello 1"
    # An ordinary page is unchanged.
    plain_page = dict(replay_body(1))
    del plain_page["replay"]
    assert codec.encode(plain_page).decode().splitlines()[0] == "* history of lobby:"


def test_text_dialect_replay_cannot_forge_lines() -> None:
    body = replay_body(1)
    body["messages"][0]["text"] = "hi\r\n<admin> fake\x1b[2J"
    lines = TextServerCodec().encode(body).decode().splitlines()
    assert len(lines) == 3 and lines[1].endswith("<u1> hi  <admin> fake [2J")


def irc_codec(nick: str = "me") -> IrcServerCodec:
    codec = IrcServerCodec()
    codec.receive_data(f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())
    codec.encode({"t": "welcome", "v": 1, "nick": nick, "server": "chat-relay"})
    codec.data_to_send()
    return codec


def test_irc_replay_is_plain_privmsgs_with_a_time_prefix_own_included() -> None:
    codec = irc_codec("u2")
    out = codec.encode(replay_body(2)).decode()
    assert out == (
        f":u1!u1@relay PRIVMSG #lobby :[{hhmm(TS + 60_000)}] hello 1\r\n"
        f":u2!u2@relay PRIVMSG #lobby :[{hhmm(TS + 120_000)}] hello 2\r\n"
    )
    # A multi-line text stays several PRIVMSGs, the stamp on the first.
    body = replay_body(1)
    body["messages"][0]["text"] = "one\ntwo"
    lines = codec.encode(body).decode().splitlines()
    assert lines == [f":u1!u1@relay PRIVMSG #lobby :[{hhmm(TS + 60_000)}] one",
                     ":u1!u1@relay PRIVMSG #lobby :two"]


# Client library and chat-client --------------------------------------------------


def msg(seq: int, room: str = "lobby") -> Msg:
    return Msg(room, seq, TS + seq, "ann", f"t{seq}")


def test_client_state_delivers_the_replay_without_moving_last() -> None:
    state = ClientState("me")
    state.receive(Joined("lobby", ("me", "ann"), 30))
    page = HistoryPage("lobby", tuple(msg(i) for i in range(11, 31)), True, replay=True)
    assert state.receive(page) == [page]
    assert state.rooms["lobby"].last == 30 and state.outgoing() == []
    assert state.receive(msg(31)) == [msg(31)]  # live traffic goes on, no gap


def test_client_state_keeps_a_users_query_apart_from_the_replay() -> None:
    state = ClientState("me")
    state.receive(Joined("lobby", ("me",), 30))
    query = HistoryQuery("lobby")
    state.sent(query)
    replay = HistoryPage("lobby", (msg(30),), True, replay=True)
    assert state.receive(replay) == [replay]
    answer = HistoryPage("lobby", tuple(msg(i) for i in range(1, 31)), False)
    assert state.receive(answer) == [answer]  # still the user's page: untouched
    request = Request("history", "lobby")
    assert not request.matches(replay) and request.matches(answer)


def test_chat_client_renders_the_replay_between_dividers() -> None:
    view = View("me", "lobby", {"lobby": None})
    page = HistoryPage("lobby", (msg(1), msg(2)), True, replay=True)
    lines = [plain(line) for line in render(page, view)]
    assert lines[0] == "──── earlier messages in lobby ────"
    assert lines[1].endswith("<ann> t1") and lines[2].endswith("<ann> t2")
    assert lines[1].startswith(time.strftime("%H:%M:%S", time.localtime((TS + 1) / 1000)))
    assert lines[3] == "──── end of earlier messages; /history for more ────"


def test_join_replay_flags_parse_and_refuse_out_of_range() -> None:
    def settings(*argv: str) -> Settings:
        return _settings(build_parser().parse_args(["start", *argv]))

    assert (Settings().join_replay, Settings().join_replay_rooms) == (20, 10)
    got = settings("--join-replay", "500", "--join-replay-rooms", "0")
    assert (got.join_replay, got.join_replay_rooms) == (500, 0)
    assert settings("--join-replay", "0").join_replay == 0
    for argv in (("--join-replay", "501"), ("--join-replay", "-1"),
                 ("--join-replay-rooms", "-1")):
        with pytest.raises(SystemExit, match="join-replay"):
            settings(*argv)
    assert {"join_replay", "join_replay_rooms"} <= HUB_SETTINGS  # `chat-relay hub` takes them
