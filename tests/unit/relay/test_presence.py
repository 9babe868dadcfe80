"""Presence in big rooms (issue 21): coalescing, the quiet limit, cut and paged lists.

HubState is pure: time is the `mono` each request carries, so every interval
here is exact.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from clients.render import View, plain, render
from clients.state import ClientState
from relay.bus.wire import room_topic, worker_topic
from relay.cli import HUB_SETTINGS, _settings, build_parser
from relay.hub import members
from relay.hub.members import MEMBERS_PAGE
from relay.hub.presence import PRESENCE_BATCH_MAX
from relay.hub.state import HubState, Out
from transports.events import (
    Joined,
    Members,
    Notice,
    Presence,
    parse_relay_body,
)
from transports.irc import IrcServerCodec
from transports.native import (
    FrameDecoder,
    NativeClientCodec,
    NativeServerCodec,
    unpack_body,
)
from transports.text import TextServerCodec
from transports.websocket import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, WebSocketServerCodec

Body = dict[str, Any]


def hub(**kw: Any) -> HubState:
    s = HubState(epoch=1, clock=lambda: 1000, **kw)
    for w in ("A", "B"):
        s.handle(w, {"op": "hb", "hello": True}, [], 0.0)
    return s


def at(s: HubState, mono: float, *reqs: tuple[str, Body]) -> Out:
    out: Out = []
    for worker, req in reqs:
        s.handle(worker, req, out, mono)
    return out


def hello(c: int, nick: str, room: str = "lobby", worker: str = "A") -> tuple[str, Body]:
    return worker, {"op": "hello", "c": c, "nick": nick, "rooms": [room]}


def room_items(out: Out, room: str = "lobby") -> list[list[Any]]:
    return [item for t, item in out if t == room_topic(room)]


def to(out: Out, worker: str = "A") -> list[Body]:
    return [item[1] for t, item in out if t == worker_topic(worker)]


# Coalescing -------------------------------------------------------------------


def test_first_event_goes_at_once_the_rest_wait_for_the_interval() -> None:
    s = hub(presence_interval=0.2)
    first = at(s, 10.0, hello(1, "ann"))
    assert [i[0] for i in room_items(first)] == [
        {"t": "presence", "room": "lobby", "nick": "ann", "event": "join"}]
    assert room_items(first)[0][1:3] == ["A", 1]  # its author, for encode_own
    held = at(s, 10.05, hello(2, "bob"), hello(3, "cat", worker="B"))
    assert room_items(held) == []
    assert s.presence_due() == 10.2
    out: Out = []
    s.flush_presence(10.19, out)
    assert out == []
    s.flush_presence(10.2, out)
    [item] = room_items(out)
    assert item[0] == {"t": "presence_batch", "room": "lobby", "count": 3, "events": [
        {"nick": "bob", "event": "join"}, {"nick": "cat", "event": "join"}]}
    assert item[1] == [("A", 2), ("B", 3)] and item[2] is None
    assert s.presence_due() is None


def test_a_lone_event_in_an_interval_is_a_plain_v1_presence() -> None:
    s = hub(presence_interval=0.2)
    at(s, 0.0, hello(1, "ann"))
    at(s, 0.1, hello(2, "bob"))  # waits for 0.2, alone
    out: Out = []
    s.flush_presence(0.2, out)
    assert [i[0]["t"] for i in room_items(out)] == ["presence"]
    # The interval restarts at that send: a part at 0.3 waits until 0.4.
    assert room_items(at(s, 0.3, ("A", {"op": "part", "c": 2, "room": "lobby"}))) == []
    assert s.presence_due() == 0.4


def test_a_msg_flushes_the_rooms_presence_before_it() -> None:
    s = hub(presence_interval=0.2)
    at(s, 0.0, hello(1, "ann"))
    out = at(s, 0.05, hello(2, "bob"), ("A", {"op": "say", "c": 2, "room": "lobby",
                                               "text": "hi"}))
    assert [i[0]["t"] for i in room_items(out)] == ["presence", "msg"]
    assert room_items(out)[0][0]["nick"] == "bob"


def test_renames_and_parts_coalesce_in_order() -> None:
    s = hub(presence_interval=1.0)
    at(s, 0.0, hello(1, "ann"), hello(2, "bob"))
    out = at(s, 0.1, ("A", {"op": "nick", "c": 1, "nick": "anna"}),
             ("A", {"op": "part", "c": 2, "room": "lobby"}))
    s.flush_presence(1.0, out)
    [batch] = [i[0] for i in room_items(out)]
    assert batch["events"] == [{"nick": "bob", "event": "join"},
                               {"nick": "ann", "event": "nick", "new": "anna"},
                               {"nick": "bob", "event": "part"}]


def test_a_full_batch_goes_before_its_interval_ends() -> None:
    s = hub(presence_interval=10.0)
    at(s, 0.0, hello(0, "first"))
    out = at(s, 0.1, *(hello(c, f"n{c}") for c in range(1, PRESENCE_BATCH_MAX + 1)))
    [batch] = [i[0] for i in room_items(out)]
    assert len(batch["events"]) == PRESENCE_BATCH_MAX
    assert "lobby" not in s._pending


def test_interval_zero_sends_every_event_on_its_own() -> None:
    s = hub()  # HubState's default: 0 (the relay's is --presence-interval)
    out = at(s, 0.0, hello(1, "ann"), hello(2, "bob"), hello(3, "cat"))
    assert [i[0]["t"] for i in room_items(out)] == ["presence"] * 3


# The quiet limit --------------------------------------------------------------


def fill(s: HubState, n: int, mono: float = 0.0, start: int = 1) -> Out:
    return at(s, mono, *(hello(c, f"n{c}") for c in range(start, start + n)))


def test_joins_are_announced_up_to_the_limit_and_not_past_it() -> None:
    s = hub(presence_limit=5)
    out = fill(s, 5)
    assert [i[0]["nick"] for i in room_items(out)] == ["n1", "n2", "n3", "n4", "n5"]
    joined = to(out)[-1]
    assert "truncated" not in joined and "quiet" not in joined and len(joined["members"]) == 5
    out = fill(s, 1, start=6)  # the 6th: one past the limit
    [flip] = [i[0] for i in room_items(out)]
    assert flip == {"t": "presence_batch", "room": "lobby", "events": [], "count": 6,
                    "quiet": True}
    joined = to(out)[-1]
    assert joined["count"] == 6 and joined["truncated"] and joined["quiet"]
    assert joined["members"] == ["n1", "n2", "n3", "n4", "n5", "n6"]  # first 5, then self
    out = fill(s, 3, start=7)
    assert room_items(out) == []  # nothing per join in a quiet room
    assert len(to(out)[-1]["members"]) == 6
    out = at(s, 0.0, ("A", {"op": "part", "c": 7, "room": "lobby"}))
    assert room_items(out) == []


def test_joins_waiting_when_the_room_turns_quiet_are_dropped() -> None:
    s = hub(presence_limit=3, presence_interval=1.0)
    at(s, 0.0, hello(1, "n1"))
    out = at(s, 0.1, hello(2, "n2"), ("A", {"op": "nick", "c": 1, "nick": "one"}),
             hello(3, "n3"), hello(4, "n4"))  # the 4th turns it quiet
    assert room_items(out) == []
    s.flush_presence(1.0, out)
    [flip] = [i[0] for i in room_items(out)]
    assert flip["events"] == [{"nick": "n1", "event": "nick", "new": "one"}]
    assert flip["quiet"] is True and flip["count"] == 4


def test_renames_are_still_announced_in_a_quiet_room() -> None:
    s = hub(presence_limit=2)
    fill(s, 3)
    out = at(s, 0.0, ("A", {"op": "nick", "c": 1, "nick": "renamed"}))
    assert [i[0] for i in room_items(out)] == [
        {"t": "presence", "room": "lobby", "nick": "n1", "event": "nick", "new": "renamed"}]


def test_a_quiet_room_turns_loud_again_at_90_percent() -> None:
    s = hub(presence_limit=10)
    fill(s, 11)
    out = at(s, 0.0, ("A", {"op": "part", "c": 1, "room": "lobby"}))
    assert room_items(out) == [] and s.rooms["lobby"].quiet  # 10 members: still quiet
    out = at(s, 0.0, ("A", {"op": "part", "c": 2, "room": "lobby"}))  # 9: loud again
    assert [i[0] for i in room_items(out)] == [
        {"t": "presence_batch", "room": "lobby", "events": [{"nick": "n2", "event": "part"}],
         "count": 9, "quiet": False}]
    out = at(s, 0.0, ("A", {"op": "part", "c": 3, "room": "lobby"}))
    assert [i[0]["nick"] for i in room_items(out)] == ["n3"]
    out = fill(s, 2, start=20)  # 10 members: at the limit, still loud
    assert [i[0]["nick"] for i in room_items(out)] == ["n20", "n21"]


def test_who_lists_everyone_in_pages_that_fit_a_frame() -> None:
    s = hub(presence_limit=10)
    fill(s, MEMBERS_PAGE + 1)
    out = at(s, 0.0, ("A", {"op": "who", "c": 1, "room": "lobby"}))
    pages = to(out)
    assert [p["more"] for p in pages] == [True, False]
    assert [len(p["members"]) for p in pages] == [MEMBERS_PAGE, 1]
    assert sum((p["members"] for p in pages), []) == [f"n{c}" for c in range(1, MEMBERS_PAGE + 2)]


def test_who_at_one_page_is_the_plain_v1_members() -> None:
    s = hub(presence_limit=10)
    fill(s, MEMBERS_PAGE)
    [page] = to(at(s, 0.0, ("A", {"op": "who", "c": 1, "room": "lobby"})))
    assert "more" not in page and len(page["members"]) == MEMBERS_PAGE


def test_joined_list_is_cut_at_a_page_even_with_a_huge_limit(monkeypatch: Any) -> None:
    monkeypatch.setattr(members, "MEMBERS_PAGE", 4)
    s = hub(presence_limit=1000)
    out = fill(s, 6)
    joined = to(out)[-1]
    assert joined["members"] == ["n1", "n2", "n3", "n4", "n6"] and joined["count"] == 6
    assert "quiet" not in joined  # cut for the frame size, but joins are still announced


def test_the_flags_reach_the_settings_and_refuse_negatives() -> None:
    args = build_parser().parse_args(["start", "--presence-limit", "7",
                                      "--presence-interval", "0.5"])
    settings = _settings(args)
    assert (settings.presence_limit, settings.presence_interval) == (7, 0.5)
    assert {"presence_limit", "presence_interval"} <= HUB_SETTINGS
    with pytest.raises(SystemExit, match="presence-limit"):
        _settings(build_parser().parse_args(["start", "--presence-limit", "-1"]))


# The bound the issue asks for -------------------------------------------------


def test_a_join_storm_costs_o_n_presence_deliveries() -> None:
    n, limit = 2000, 100
    s = hub(presence_limit=limit, presence_interval=0.1)
    total = 0
    for c in range(1, n + 1):  # 2000 joins over 4 s: 20 intervals
        out = at(s, c * 0.002, hello(c, f"n{c}"))
        s.flush_presence(c * 0.002, out)
        # Count against the membership at the time of each send.
        total += sum(len(s.rooms["lobby"].members) for t, _ in out if t == room_topic("lobby"))
    assert s.rooms["lobby"].quiet
    assert total < 3 * n, total  # without the limit: ~n^2/2 = 2,000,000


def test_a_join_storm_without_coalescing_would_fail_that_bound() -> None:
    """The bound above can fail: interval 0 and no limit give n^2/2."""
    n = 300
    s = hub(presence_limit=10 * n)
    total = 0
    for c in range(1, n + 1):
        out = at(s, 0.0, hello(c, f"n{c}"))
        total += sum(len(s.rooms["lobby"].members) for t, _ in out if t == room_topic("lobby"))
    assert total == n * (n + 1) // 2


# The batch in every dialect ---------------------------------------------------

def batch(*events: Body, **extra: Any) -> Body:
    return {"t": "presence_batch", "room": "lobby", "events": list(events), "count": 40,
            **extra}


def joins(*nicks: str) -> list[Body]:
    return [{"nick": n, "event": "join"} for n in nicks]


STORM = batch(*joins("alice", "bob", "cat", "dan", "eve"), {"nick": "fox", "event": "part"},
              {"nick": "gus", "event": "nick", "new": "guy"})


def test_text_one_line_per_kind_of_event() -> None:
    got = TextServerCodec.encode_fanout(STORM, True).decode()
    assert got == ("* alice, bob, cat and 2 others joined lobby\n"
                   "* fox left lobby\n"
                   "* gus is now known as guy\n")
    two = TextServerCodec.encode_fanout(batch(*joins("alice", "bob")), True).decode()
    assert two == "* alice and bob joined lobby\n"


def test_text_leaves_out_the_readers_own_events_and_tells_quiet() -> None:
    codec = TextServerCodec()
    codec.encode({"t": "welcome", "v": 1, "nick": "Bob", "server": "x"})
    own = codec.encode_own(batch(*joins("alice", "bob"), quiet=True), None).decode()
    assert own == ("* alice joined lobby\n* lobby has 40 members: joins and parts are no "
                   "longer shown there (/who lists the members)\n")
    assert codec.encode_own(batch(*joins("bob")), None) == b""


def test_text_cut_joined_says_the_real_size() -> None:
    codec = TextServerCodec()
    got = codec.encode({"t": "joined", "room": "lobby", "members": ["a", "b"], "seq": 0,
                        "count": 10_000, "truncated": True, "quiet": True}).decode()
    assert got.startswith("* you joined lobby (10000 members: a, b and 9980 more)\n")
    assert "not shown in lobby" in got


def registered_irc() -> IrcServerCodec:
    codec = IrcServerCodec()
    codec.receive_data(b"NICK bob\r\nUSER bob 0 * :bob\r\n")
    codec.encode({"t": "welcome", "v": 1, "nick": "bob", "server": "x"})
    codec.encode({"t": "joined", "room": "lobby", "members": ["bob"], "seq": 0})
    return codec


def test_irc_a_batch_is_one_line_per_event() -> None:
    got = IrcServerCodec.encode_fanout(STORM, None).decode()
    assert got.splitlines() == [
        ":alice!alice@relay JOIN #lobby", ":bob!bob@relay JOIN #lobby",
        ":cat!cat@relay JOIN #lobby", ":dan!dan@relay JOIN #lobby",
        ":eve!eve@relay JOIN #lobby", ":fox!fox@relay PART #lobby",
        ":gus!gus@relay NICK :guy"]


def test_irc_own_join_is_left_out_and_quiet_is_a_channel_notice() -> None:
    codec = registered_irc()
    got = codec.encode_own(batch(*joins("alice", "bob"), quiet=True), None).decode()
    first, notice = got.splitlines()
    assert first == ":alice!alice@relay JOIN #lobby"
    assert notice.startswith(":chat-relay NOTICE #lobby :#lobby has 40 members: joins")
    assert codec.encode(batch(*joins("bob"))) == b""


def test_irc_paged_names_end_once() -> None:
    codec = registered_irc()
    codec.receive_data(b"NAMES #lobby\r\n")
    first = codec.encode({"t": "members", "room": "lobby", "members": ["a", "b"], "more": True})
    last = codec.encode({"t": "members", "room": "lobby", "members": ["c"], "more": False})
    assert [line.split()[1] for line in first.decode().splitlines()] == ["353"]
    assert [line.split()[1] for line in last.decode().splitlines()] == ["353", "366"]
    assert not codec._asked  # the one NAMES was answered once


def test_irc_cut_joined_gets_a_notice() -> None:
    codec = registered_irc()
    got = codec.encode({"t": "joined", "room": "big", "members": ["bob"], "seq": 0,
                        "count": 9000, "truncated": True, "quiet": True}).decode()
    assert "NOTICE #big :#big has 9000 members" in got
    assert " 366 " in got


def test_native_and_ws_clients_get_v1_presence_per_event() -> None:
    """A v1 client sees no new type: one `presence` per event, the room's turn to
    quiet as a v1 `notice` (with optional keys), and its own join too."""
    quiet = batch(*joins("alice", "bob"), {"nick": "gus", "event": "nick", "new": "guy"},
                  quiet=True)
    want = [
        {"t": "presence", "room": "lobby", "nick": "alice", "event": "join"},
        {"t": "presence", "room": "lobby", "nick": "bob", "event": "join"},
        {"t": "presence", "room": "lobby", "nick": "gus", "event": "nick", "new": "guy"},
        {"t": "notice", "room": "lobby", "count": 40, "quiet": True, "text": (
            "lobby has 40 members: joins and parts there are no longer announced "
            "(who lists the members)")},
    ]
    decoder = FrameDecoder()
    assert decoder.feed(NativeServerCodec.encode_fanout(quiet, None)) == want
    own = NativeServerCodec()
    assert decoder.feed(own.encode_own(quiet, None)) == want
    events = NativeClientCodec().receive_data(NativeServerCodec.encode_fanout(quiet, None))
    assert [type(e) for e in events] == [Presence, Presence, Presence, Notice]
    ws = WebSocketServerCodec.encode_fanout(quiet, JSON_SUBPROTOCOL)
    assert [json.loads(p) for p in ws_payloads(ws, 0x81)] == want
    packed = WebSocketServerCodec.encode_fanout(quiet, MSGPACK_SUBPROTOCOL)
    assert [unpack_body(p) for p in ws_payloads(packed, 0x82)] == want


def ws_payloads(data: bytes, first: int) -> list[bytes]:
    """Payloads of unmasked server frames (each FIN with opcode `first`)."""
    out, pos = [], 0
    while pos < len(data):
        assert data[pos] == first
        size, pos = data[pos + 1], pos + 2
        if size == 126:
            size, pos = int.from_bytes(data[pos:pos + 2], "big"), pos + 2
        out.append(data[pos:pos + size])
        pos += size
    return out


def test_client_parses_cut_joined_and_paged_members() -> None:
    ev = parse_relay_body({"t": "joined", "room": "r", "members": ["a"], "seq": 3,
                           "count": 900, "truncated": True, "quiet": True})
    assert ev == Joined("r", ("a",), 3, 900, True)
    assert parse_relay_body(ev.to_body()) == ev
    state = ClientState("a")
    assert state.receive(Members("r", ("a", "b"), True)) == []
    assert state.receive(Members("r", ("c",))) == [Members("r", ("a", "b", "c"))]
    assert state.receive(Members("r", ("x",))) == [Members("r", ("x",))]


def test_chat_client_shows_a_cut_joined_with_the_real_size() -> None:
    view = View("alice", "lobby", {"lobby": None})
    joined = render(Joined("lobby", ("alice", "bob"), 0, 600, True), view)
    assert "600 members" in plain(joined[0]) and "/who" in plain(joined[0])
