"""Join replay through a real relay, in every dialect (issue 22).

A room with 30 messages: a newcomer gets exactly the latest 20 (the default),
marked as earlier messages, in seq order, after its `joined` and before live
traffic; `--join-replay 5` gives 5 and 0 none; a resume gets only what it
missed, never the replay as well. The web page is in tests/clients/test_web_page.py.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

from clients.state import ConnectionLost, Reconnected
from clients.sync import connect
from tests.conftest import RelayFactory
from tests.integration.test_chat_client import CLIENT, ENV, TIME
from tests.integration.test_client_lib import CuttableProxy
from tests.integration.test_dialect_ws_irc import IrcPeer, WsPeer
from tests.relayproc import ROOT, UNIT, RelayProcess
from tests.wire import NativePeer, TextPeer
from transports.events import HistoryPage, Msg

Body = dict[str, Any]


@pytest.fixture
def peers(cleanup: list[Any]) -> list[Any]:
    return cleanup


def fill(relay: RelayProcess, room: str, count: int, peers: list[Any]) -> NativePeer:
    """A talker who says m1..m`count` in `room` and has seen them all sequenced."""
    talker = NativePeer.joined(relay.port, "talker", [room])
    peers.append(talker)
    for i in range(1, count + 1):
        talker.send({"t": "say", "room": room, "text": f"m{i}"})
    assert [m["seq"] for m in talker.msgs(room, count)] == list(range(1, count + 1))
    return talker


def frames_until_live(peer: NativePeer | WsPeer, room: str, live: str) -> list[Body]:
    """Every frame of `room` (joined, history, msg) up to the live msg `live`, in order."""
    got: list[Body] = []
    while True:
        body = peer.expect(lambda b: b.get("room") == room
                           and b.get("t") in ("joined", "history", "msg"))
        got.append(body)
        if body.get("t") == "msg" and body.get("text") == live:
            return got


def check_replay_then_live(frames: list[Body], room: str, count: int, total: int) -> None:
    assert [b["t"] for b in frames] == ["joined", "history", "msg"], frames
    joined, page, live = frames
    assert joined["seq"] == total
    assert page["replay"] is True and page["more"] is (count < total)
    assert [m["seq"] for m in page["messages"]] == list(range(total - count + 1, total + 1))
    assert [m["text"] for m in page["messages"]] == [
        f"m{i}" for i in range(total - count + 1, total + 1)]
    assert all(m["room"] == room and isinstance(m["ts"], int) for m in page["messages"])
    assert live["seq"] == total + 1  # live traffic goes on right after joined.seq


def test_native_and_websocket_newcomers_get_the_latest_20_then_live(
    relay: RelayProcess, peers: list[Any]
) -> None:
    talker = fill(relay, "hall", 30, peers)
    newcomer = NativePeer(relay.port)
    peers.append(newcomer)
    newcomer.send({"t": "hello", "v": 1, "nick": "newbie", "rooms": ["hall"]})
    newcomer.expect(lambda b: b.get("t") == "welcome")
    talker.expect(lambda b: b.get("t") == "presence" and b["nick"] == "newbie")
    talker.send({"t": "say", "room": "hall", "text": "live 1"})
    check_replay_then_live(frames_until_live(newcomer, "hall", "live 1"), "hall", 20, 30)

    for sub in ("chat-relay.v1.json", "chat-relay.v1.msgpack"):
        ws = WsPeer(relay.port, sub)
        peers.append(ws.ws)
        nick = "web" + sub[-4:]
        ws.send({"t": "hello", "v": 1, "nick": nick, "rooms": ["hall"]})
        ws.expect(lambda b: b["t"] == "welcome")
        talker.expect(lambda b, n=nick: b.get("t") == "presence" and b["nick"] == n)
        talker.send({"t": "say", "room": "hall", "text": f"live {nick}"})
        frames = frames_until_live(ws, "hall", f"live {nick}")
        assert frames[1]["messages"][-1]["seq"] == frames[0]["seq"]
        assert len(frames[1]["messages"]) == 20 and frames[1]["replay"] is True


def test_text_client_sees_stamped_earlier_lines_before_live_ones(
    relay: RelayProcess, peers: list[Any]
) -> None:
    talker = fill(relay, "hall", 30, peers)
    text = TextPeer(relay.port)
    peers.append(text)
    text.expect_text("* welcome to chat-relay")
    text.send_line("/join hall")
    text.expect_text("* you joined hall")
    header = text.expect_text("* earlier messages in hall:")
    assert header == "* earlier messages in hall:"
    talker.expect(lambda b: b.get("t") == "presence" and b["event"] == "join")
    talker.send({"t": "say", "room": "hall", "text": "live one"})
    text.expect_text("<talker> live one")
    # Everything from the header to the live line, in arrival order.
    lines = text.lines[: text.lines.index("* (end of earlier messages; /history hall shows more)")]
    stamps = [ln for ln in lines if ln.startswith("[")]
    assert [s.split("> ", 1)[1] for s in stamps] == [f"m{i}" for i in range(11, 31)]
    for stamp in stamps:
        hh_mm = stamp[1:6]
        assert stamp == f"[{hh_mm}] <talker> {stamp.split('> ', 1)[1]}"
        assert hh_mm[2] == ":" and hh_mm.replace(":", "").isdigit()


def test_irc_client_gets_time_prefixed_privmsgs_then_live(
    relay: RelayProcess, peers: list[Any]
) -> None:
    talker = fill(relay, "hall", 30, peers)
    ircer = IrcPeer(relay.port, "ircer")
    peers.append(ircer)
    ircer.expect(lambda e: e.type == "welcome")
    ircer.conn.join("#hall")
    ircer.expect(lambda e: e.type == "join")
    texts = [ircer.expect(lambda e: e.type == "pubmsg").arguments[0] for _ in range(20)]
    assert [t.split("] ", 1)[1] for t in texts] == [f"m{i}" for i in range(11, 31)]
    assert all(t[0] == "[" and t[3] == ":" and t[6:8] == "] " for t in texts), texts
    talker.expect(lambda b: b.get("t") == "presence" and b["nick"] == "ircer")
    talker.send({"t": "say", "room": "hall", "text": "live one"})
    live = ircer.expect(lambda e: e.type == "pubmsg")
    assert live.arguments == ["live one"] and live.source.nick == "talker"


def test_join_replay_flag_5_and_0_and_the_per_hello_room_bound(
    relay_factory: RelayFactory, peers: list[Any]
) -> None:
    five = relay_factory(workers=1, args=["--rate-limit", "0", "--join-replay", "5",
                                          "--join-replay-rooms", "1"])
    off = relay_factory(workers=1, args=["--rate-limit", "0", "--join-replay", "0"])
    for relay, want in ((five, 5), (off, 0)):
        for room in ("a", "b"):
            talker = fill(relay, room, 30, peers)
            talker.close()
        peer = NativePeer(relay.port)
        peers.append(peer)
        peer.send({"t": "hello", "v": 1, "nick": "newbie", "rooms": ["a", "b"]})
        peer.expect(lambda b: b.get("t") == "welcome")
        peer.send({"t": "ping", "id": "done"})  # answered after the hello's replies
        peer.expect(lambda b: b.get("t") == "pong")
        pages = [b for b in peer.inbox if isinstance(b, dict) and b.get("t") == "history"]
        if want:
            # --join-replay-rooms 1: the first room of the hello only.
            assert [(p["room"], len(p["messages"])) for p in pages] == [("a", 5)]
            assert [m["seq"] for m in pages[0]["messages"]] == [26, 27, 28, 29, 30]
            peer.send({"t": "join", "room": "c"})  # an empty room: nothing to replay
            peer.send({"t": "part", "room": "b"})
            peer.send({"t": "join", "room": "b"})  # a join of its own gets its replay
            peer.expect(lambda b: b.get("t") == "joined" and b["room"] == "c")
            page = peer.expect(lambda b: b.get("t") == "history" and b["room"] != "a")
            assert (page["room"], len(page["messages"])) == ("b", 5)
        else:
            assert pages == []


def test_resume_gets_only_what_it_missed_never_the_replay_twice(
    relay: RelayProcess, peers: list[Any]
) -> None:
    talker = fill(relay, "hall", 30, peers)
    with connect("127.0.0.1", relay.port, "carol", rooms=("hall",), reconnect=True,
                 timeout=5 * UNIT) as carol:
        first = carol.recv(5 * UNIT)
        while not isinstance(first, HistoryPage):
            first = carol.recv(5 * UNIT)
        assert first.replay and [m.seq for m in first.messages] == list(range(11, 31))
        resume = carol.session.state.resume_map()
        assert resume == {"hall": 30}  # the replay moved no resume point
    for i in range(31, 36):
        talker.send({"t": "say", "room": "hall", "text": f"m{i}"})
    talker.msgs("hall", 5)
    back = NativePeer(relay.port)
    peers.append(back)
    back.send({"t": "hello", "v": 1, "nick": "carol", "rooms": ["hall"], "resume": resume})
    back.expect(lambda b: b.get("t") == "welcome")
    talker.expect(lambda b: b.get("t") == "presence" and b["nick"] == "carol"
                  and b["event"] == "join")
    talker.send({"t": "say", "room": "hall", "text": "live"})
    got = frames_until_live(back, "hall", "live")
    assert [b["t"] for b in got] == ["joined"] + ["msg"] * 6
    assert [b["seq"] for b in got[1:]] == list(range(31, 37))


def test_client_library_reconnect_replays_nothing_twice(
    relay: RelayProcess, peers: list[Any]
) -> None:
    """The library's own reconnect resumes: the missed message, no second replay."""
    talker = fill(relay, "hall", 25, peers)
    proxy = CuttableProxy(relay.port)
    peers.append(proxy)
    with connect("127.0.0.1", proxy.port, "dave", rooms=("hall",), reconnect=True,
                 timeout=5 * UNIT) as dave:
        events: list[Any] = []

        def until(kind: type, text: str | None = None) -> None:
            while True:
                ev = dave.recv(15 * UNIT)
                events.append(ev)
                if isinstance(ev, kind) and (text is None or getattr(ev, "text", None) == text):
                    return

        until(HistoryPage)
        proxy.cut(ghost_for=0)
        until(ConnectionLost)
        talker.send({"t": "say", "room": "hall", "text": "m26"})
        talker.msgs("hall", 1)
        until(Reconnected)
        until(Msg, "m26")
        talker.send({"t": "say", "room": "hall", "text": "m27"})
        until(Msg, "m27")
    pages = [e for e in events if isinstance(e, HistoryPage)]
    assert len(pages) == 1 and pages[0].replay and len(pages[0].messages) == 20
    assert [e.seq for e in events if isinstance(e, Msg)] == [26, 27]


def test_chat_client_pipe_mode_shows_the_divider(relay: RelayProcess, peers: list[Any]) -> None:
    fill(relay, "lobby", 30, peers)
    proc = subprocess.run(
        [*CLIENT, "127.0.0.1", str(relay.port), "--nick", "piper"],
        input="/ping\n", capture_output=True, text=True, cwd=ROOT, env=ENV,
        timeout=30 * UNIT,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    start = lines.index("──── earlier messages in lobby ────")
    end = lines.index("──── end of earlier messages; /history for more ────")
    shown = lines[start + 1:end]
    assert [ln.split("<talker> ")[1] for ln in shown] == [f"m{i}" for i in range(11, 31)]
    assert all(re.fullmatch(rf"{TIME} <talker> m\d+", ln) for ln in shown), shown
    assert "you joined lobby" in "\n".join(lines[:start])
