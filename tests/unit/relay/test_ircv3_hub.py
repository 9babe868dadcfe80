"""The hub's side of IRCv3 and the native extensions it needs: WHOIS, AWAY,
CHATHISTORY, a bye's reason, actions (sans-I/O, like tests/unit/relay/test_hubstate.py)."""

from __future__ import annotations

from typing import Any

import pytest

from relay.bus.wire import room_topic, worker_topic
from relay.hub.state import HubState
from tests.unit.relay.test_hubstate import bodies, hub, ready, run
from transports.errors import ProtocolError
from transports.events import Bye, Say, Whisper, parse_client_body


def _two() -> HubState:
    s = hub()
    ready(s, "A", "B")
    run(s, "A", {"op": "hello", "c": 1, "nick": "ann", "rooms": ["lobby", "dev"]})
    run(s, "B", {"op": "hello", "c": 1, "nick": "bob", "rooms": ["lobby"]})
    return s


def test_whois_lists_rooms_and_away_and_echoes_the_label() -> None:
    s = _two()
    run(s, "A", {"op": "away", "c": 1, "text": "lunch"})
    out = run(s, "B", {"op": "whois", "c": 1, "nick": "ANN", "id": "lbl"})
    assert bodies(out, worker_topic("B")) == [
        {"t": "whois", "nick": "ann", "rooms": ["lobby", "dev"], "away": "lunch", "id": "lbl"}]
    out = run(s, "B", {"op": "whois", "c": 1, "nick": "zed"})
    err = bodies(out, worker_topic("B"))[0]
    assert (err["code"], err["ref"], err["nick"]) == ("no_such_nick", "whois", "zed")


def test_away_tells_each_room_mate_once() -> None:
    s = _two()
    run(s, "B", {"op": "join", "c": 1, "room": "dev"})
    out = run(s, "A", {"op": "away", "c": 1, "text": "lunch"})
    assert bodies(out, worker_topic("A")) == [{"t": "away", "nick": "ann", "text": "lunch"}]
    assert bodies(out, worker_topic("B")) == [{"t": "away", "nick": "ann", "text": "lunch"}]
    out = run(s, "A", {"op": "away", "c": 1, "text": None})
    assert bodies(out, worker_topic("B")) == [{"t": "away", "nick": "ann"}]


def test_chathistory_pages_and_targets() -> None:
    s = _two()
    for i in range(5):
        run(s, "A", {"op": "say", "c": 1, "room": "lobby", "text": f"m{i + 1}"})
    out = run(s, "B", {"op": "chathistory", "c": 1, "room": "lobby", "sub": "before",
                       "refs": [["seq", 4]], "limit": 2, "id": "x"})
    page = bodies(out, worker_topic("B"))[0]
    assert (page["t"], page["sub"], page["id"]) == ("chathistory", "before", "x")
    assert [m["text"] for m in page["messages"]] == ["m2", "m3"]
    out = run(s, "B", {"op": "chathistory", "c": 1, "room": "dev", "sub": "latest",
                       "refs": [["*", 0]], "limit": 5, "id": "y"})
    err = bodies(out, worker_topic("B"))[0]
    assert (err["code"], err["ref"], err["id"]) == ("not_in_room", "chathistory", "y")
    out = run(s, "A", {"op": "chathistory", "c": 1, "sub": "targets",
                       "refs": [["ts", 0], ["ts", 5000]], "limit": 10})
    assert bodies(out, worker_topic("A"))[0]["targets"] == [["lobby", 1000]]


def test_bye_reason_goes_with_the_parts_and_action_with_the_msg() -> None:
    s = _two()
    out = run(s, "A", {"op": "say", "c": 1, "room": "lobby", "text": "waves", "action": True})
    assert bodies(out, room_topic("lobby"))[0]["action"] is True
    out = run(s, "A", {"op": "say", "c": 1, "room": "lobby", "text": "plain"})
    assert "action" not in bodies(out, room_topic("lobby"))[0]
    run(s, "A", {"op": "bye", "c": 1, "reason": "gone fishing"})
    out = run(s, "A", {"op": "gone", "c": 1})
    parts = bodies(out, room_topic("lobby")) + bodies(out, room_topic("dev"))
    assert {p["reason"] for p in parts} == {"gone fishing"}
    out = run(s, "B", {"op": "gone", "c": 1})
    assert "reason" not in bodies(out, room_topic("lobby"))[0]  # no bye, no reason


def test_native_action_and_bye_reason_parse() -> None:
    body: dict[str, Any] = {"t": "say", "room": "lobby", "text": "waves", "action": True}
    assert parse_client_body(body) == Say("lobby", "waves", action=True)
    assert parse_client_body({**body, "action": False}) == Say("lobby", "waves")
    assert parse_client_body({**body, "action": None}) == Say("lobby", "waves")
    with pytest.raises(ProtocolError) as err:
        parse_client_body({**body, "action": "yes"})
    assert err.value.code == "bad_field"
    assert parse_client_body({"t": "whisper", "to": "bob", "text": "x", "action": True}) == \
        Whisper("bob", "x", action=True)
    assert parse_client_body({"t": "bye", "reason": "later"}) == Bye("later")
    assert parse_client_body({"t": "bye"}) == Bye()
    with pytest.raises(ProtocolError):
        parse_client_body({"t": "bye", "reason": "x" * 257})
    with pytest.raises(ProtocolError) as err:
        parse_client_body({"t": "chathistory", "room": "lobby"})
    assert err.value.code == "unknown_type"  # IRC-only requests are not native types


# The other dialects show actions, quit reasons and away notices ----------------------


def test_text_dialect_me_quit_reason_and_rendering() -> None:
    from transports.text import TextServerCodec

    codec = TextServerCodec()
    codec.encode({"t": "welcome", "v": 1, "nick": "carol", "server": "x"})
    codec.encode({"t": "joined", "room": "lobby", "members": ["carol"], "seq": 0})
    assert codec.receive_data(b"/me waves\n") == [Say("lobby", "waves", action=True)]
    shown = codec.encode({"t": "msg", "room": "lobby", "seq": 1, "ts": 1, "from": "bob",
                          "text": "bows", "action": True})
    assert shown.decode().strip() == "* bob bows"
    part = {"t": "presence", "room": "lobby", "nick": "bob", "event": "part",
            "reason": "gone fishing"}
    assert codec.encode(part).decode().strip() == "* bob left lobby (gone fishing)"
    assert codec.encode({"t": "away", "nick": "bob", "text": "lunch"}).decode().strip() == \
        "* bob is away: lunch"
    assert codec.receive_data(b"/quit see you\n") == [Bye("see you")]


def test_chat_client_me_and_rendering() -> None:
    from clients.commands import parse
    from clients.render import View, plain, render
    from transports.events import AwayNotice, Msg, Presence

    assert parse("/me waves", "lobby").send == Say("lobby", "waves", action=True)
    assert parse("/me", "lobby").local is not None
    view = View("alice", "lobby", {"lobby": None})
    line = plain(render(Msg("lobby", 1, 0, "carol", "waves", action=True), view)[0])
    assert line.endswith(" * carol waves")
    part = plain(render(Presence("lobby", "bob", "part", reason="bye all"), view)[0])
    assert part.endswith("bob left lobby (bye all)")
    assert plain(render(AwayNotice("bob", "lunch"), view)[0]).endswith("bob is away: lunch")
