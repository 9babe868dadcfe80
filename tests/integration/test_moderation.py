"""Operators: oper, kick, ban (nick or IP), mute; the hub is the authority."""

from __future__ import annotations

from typing import Any

import pytest

from relay.bus.wire import ANNOUNCE, room_topic, worker_topic
from relay.hub import moderation
from relay.hub.state import HubState, Out
from tests.conftest import RelayFactory
from tests.relayproc import RelayProcess
from tests.wire import NativePeer, TextPeer, worker_of
from transports.errors import ProtocolError
from transports.events import Ban, Kick, Mute, Oper, Unban, Unmute, parse_client_body
from transports.irc import IrcServerCodec
from transports.text import TextServerCodec

# HubState --------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def hub() -> tuple[HubState, Clock]:
    clock = Clock()
    state = HubState(epoch=1, clock=clock)
    for w in ("A", "B"):
        state.handle(w, {"op": "hb", "hello": True}, [], 0.0)
    return state, clock


def run(state: HubState, worker: str, *reqs: dict[str, Any]) -> Out:
    out: Out = []
    for req in reqs:
        state.handle(worker, req, out, 0.0)
    return out


def to(out: Out, worker: str, conn: int | None = None) -> list[dict[str, Any]]:
    return [item[1] for t, item in out if t == worker_topic(worker)
            and (conn is None or item[0] == conn)]


def hello(state: HubState, worker: str, conn: int, nick: str | None, ip: str = "10.0.0.1"
          ) -> Out:
    return run(state, worker, {"op": "hello", "c": conn, "nick": nick, "rooms": ["lobby"],
                               "ip": ip})


def test_kick_cuts_the_target_frees_its_nick_and_tells_the_room() -> None:
    s, _ = hub()
    hello(s, "A", 1, "op")
    hello(s, "B", 1, "bob")
    hello(s, "B", 2, "carl")
    out = run(s, "A", {"op": "kick", "c": 1, "nick": "BOB", "reason": "spam"})
    err = to(out, "B", 1)[0]
    assert (err["t"], err["code"], err["by"], err["reason"]) == ("error", "kicked", "op", "spam")
    assert "ref" not in err
    part = [item[0] for t, item in out if t == room_topic("lobby")][0]
    assert part == {"t": "presence", "room": "lobby", "nick": "bob", "event": "part",
                    "by": "op", "reason": "spam"}
    assert to(out, "A", 1) == [{"t": "notice", "text": "kicked bob"}]
    assert "bob" not in s.nicks and ("B", 1) not in s.clients
    assert s.moderation["kick"] == 1
    out = run(s, "A", {"op": "kick", "c": 1, "nick": "ghost"})
    assert to(out, "A", 1)[0]["code"] == "no_such_nick"
    # The kicked client's late requests and its `gone` cost nothing.
    run(s, "B", {"op": "gone", "c": 1})
    assert hello(s, "B", 3, "bob") and "bob" in s.nicks  # a kick is not a ban


def test_ip_ban_cuts_every_connection_from_it_tells_workers_and_expires() -> None:
    s, clock = hub()
    hello(s, "A", 1, "op", ip="10.0.0.1")
    hello(s, "B", 1, "troll", ip="10.0.0.9")
    hello(s, "A", 2, "troll2", ip="::ffff:10.0.0.9")  # dual-stack view of the same host
    hello(s, "B", 2, "fine", ip="10.0.0.2")
    out = run(s, "A", {"op": "ban", "c": 1, "ip": "10.0.0.9", "minutes": 10, "reason": "flood"})
    assert [b["code"] for b in to(out, "B", 1) + to(out, "A", 2)] == ["banned", "banned"]
    assert "10 more minutes" in to(out, "B", 1)[0]["text"]
    assert [item for t, item in out if t == ANNOUNCE] == [
        {"t": "_bans", "ips": {"10.0.0.9": clock.ms + 600_000}}]
    assert "2 connection(s) closed" in to(out, "A", 1)[0]["text"]
    assert set(s.nicks) == {"op", "fine"}
    # A new hello from the address is refused (the worker's own check can race).
    out = hello(s, "B", 3, "again", ip="10.0.0.9")
    refused = to(out, "B", 3)
    assert [(b["code"], b["ref"]) for b in refused] == [("banned", "hello")]
    # A worker that connects (or resyncs) learns the bans.
    out = run(s, "C", {"op": "hb", "hello": True})
    assert to(out, "C")[-1] == {"t": "_bans", "ips": {"10.0.0.9": clock.ms + 600_000}}
    clock.ms += 600_000
    out = hello(s, "B", 4, "again", ip="10.0.0.9")
    assert to(out, "B", 4)[0]["t"] == "welcome"
    assert s._bans_body() == {"t": "_bans", "ips": {}}


def test_unban_ip_is_announced() -> None:
    s, _ = hub()
    hello(s, "A", 1, "op")
    run(s, "A", {"op": "ban", "c": 1, "ip": "10.0.0.9"})
    out = run(s, "A", {"op": "unban", "c": 1, "ip": "10.0.0.9"})
    assert [item for t, item in out if t == ANNOUNCE] == [{"t": "_bans", "ips": {}}]
    assert to(out, "A", 1)[0]["text"] == "unbanned address 10.0.0.9"
    out = run(s, "A", {"op": "unban", "c": 1, "ip": "10.0.0.9"})
    assert "was not banned" in to(out, "A", 1)[0]["text"]


def test_nick_ban_holds_the_nick() -> None:
    s, _ = hub()
    hello(s, "A", 1, "op")
    hello(s, "B", 1, "Mallory")
    out = run(s, "A", {"op": "ban", "c": 1, "nick": "mallory"})
    assert to(out, "B", 1)[0]["code"] == "banned"
    out = hello(s, "B", 2, "MALLORY", ip="10.0.0.7")
    assert to(out, "B", 2)[0]["code"] == "banned"
    out = run(s, "A", {"op": "nick", "c": 1, "nick": "mallory"})
    err = to(out, "A", 1)[0]
    assert err["code"] == "nick_taken" and "banned" in err["text"]
    run(s, "A", {"op": "unban", "c": 1, "nick": "Mallory"})
    assert to(hello(s, "B", 3, "mallory"), "B", 3)[0]["t"] == "welcome"


def test_guest_nicks_skip_banned_ones() -> None:
    s, _ = hub()
    hello(s, "A", 1, "op")
    run(s, "A", {"op": "ban", "c": 1, "nick": "guest-1"})
    assert to(hello(s, "B", 1, None), "B", 1)[0]["nick"] == "guest-2"


def test_mute_refuses_say_and_whisper_follows_a_rename_and_expires() -> None:
    s, clock = hub()
    hello(s, "A", 1, "op")
    hello(s, "B", 1, "loud")
    out = run(s, "A", {"op": "mute", "c": 1, "nick": "loud", "minutes": 2})
    assert to(out, "B", 1)[0]["t"] == "notice" and "muted" in to(out, "B", 1)[0]["text"]
    seq = s.rooms["lobby"].seq
    out = run(s, "B", {"op": "say", "c": 1, "room": "lobby", "text": "hi"},
              {"op": "whisper", "c": 1, "to": "op", "text": "psst"})
    assert [(b["code"], b["ref"]) for b in to(out, "B", 1)] == [("muted", "say"),
                                                                 ("muted", "whisper")]
    assert to(out, "B", 1)[0]["room"] == "lobby"
    assert not [t for t, _ in out if t == room_topic("lobby")] and not to(out, "A")
    assert s.rooms["lobby"].seq == seq
    run(s, "B", {"op": "nick", "c": 1, "nick": "quiet"})
    out = run(s, "B", {"op": "say", "c": 1, "room": "lobby", "text": "hi"})
    assert to(out, "B", 1)[0]["code"] == "muted"
    clock.ms += 120_000
    out = run(s, "B", {"op": "say", "c": 1, "room": "lobby", "text": "free"})
    assert [item[0]["text"] for t, item in out if t == room_topic("lobby")] == ["free"]


def test_unmute() -> None:
    s, _ = hub()
    hello(s, "A", 1, "op")
    hello(s, "B", 1, "loud")
    run(s, "A", {"op": "mute", "c": 1, "nick": "loud"})
    out = run(s, "A", {"op": "unmute", "c": 1, "nick": "LOUD"})
    assert "may speak again" in to(out, "B", 1)[0]["text"]
    out = run(s, "B", {"op": "say", "c": 1, "room": "lobby", "text": "back"})
    assert [t for t, _ in out] == [room_topic("lobby")]


def test_sanction_lists_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moderation, "MAX_SANCTIONS", 2)
    s, clock = hub()
    hello(s, "A", 1, "op")
    run(s, "A", {"op": "ban", "c": 1, "nick": "n1", "minutes": 1},
        {"op": "ban", "c": 1, "nick": "n2"})
    out = run(s, "A", {"op": "ban", "c": 1, "nick": "n3"})
    assert to(out, "A", 1)[0]["code"] == "bad_field" and "full (2" in to(out, "A", 1)[0]["text"]
    clock.ms += 60_000  # n1 expired: its place is free again
    out = run(s, "A", {"op": "ban", "c": 1, "nick": "n3"})
    assert to(out, "A", 1)[0]["t"] == "notice"
    assert set(s.banned_nicks) == {"n2", "n3"}


# Parsing: native bodies, text commands, IRC commands --------------------------


def test_parse_moderation_bodies() -> None:
    assert parse_client_body({"t": "oper", "password": "pw"}) == Oper("pw")
    assert parse_client_body({"t": "kick", "nick": "bob"}) == Kick("bob")
    assert parse_client_body({"t": "ban", "ip": "::ffff:10.1.2.3", "minutes": 5}) == Ban(
        ip="10.1.2.3", minutes=5)
    assert parse_client_body({"t": "mute", "nick": "x", "reason": "r"}) == Mute("x", None, "r")
    assert parse_client_body({"t": "unban", "nick": "x"}) == Unban(nick="x")
    assert parse_client_body({"t": "unmute", "nick": "x"}) == Unmute("x")
    assert Ban(ip="10.1.2.3", minutes=5).to_body() == {"t": "ban", "ip": "10.1.2.3",
                                                       "minutes": 5}
    bad = [({"t": "ban", "nick": "a", "ip": "10.0.0.1"}, "bad_field"),
           ({"t": "ban"}, "bad_field"),
           ({"t": "ban", "ip": "10.0.0.256"}, "bad_field"),
           ({"t": "ban", "nick": "a", "minutes": 0}, "bad_field"),
           ({"t": "mute", "nick": "a", "minutes": "5"}, "bad_field"),
           ({"t": "kick", "nick": "a b"}, "nick_invalid"),
           ({"t": "kick", "nick": "a", "reason": "x" * 300}, "text_too_long"),
           ({"t": "oper"}, "bad_field")]
    for body, code in bad:
        with pytest.raises(ProtocolError) as info:
            parse_client_body(body)
        assert info.value.code == code, body


def test_text_commands() -> None:
    codec = TextServerCodec()
    lines = (b"/oper s3cret\n/kick bob go away\n/ban 10.0.0.9 30 flooding\n/ban bob spam\n"
             b"/mute bob 5\n/unban 10.0.0.9\n/unmute bob\n/ban\n/mute bob 0\n")
    got = codec.receive_data(lines)
    assert got[:7] == [Oper("s3cret"), Kick("bob", "go away"),
                       Ban(ip="10.0.0.9", minutes=30, reason="flooding"),
                       Ban(nick="bob", reason="spam"), Mute("bob", 5), Unban(ip="10.0.0.9"),
                       Unmute("bob")]
    assert [e.code for e in got[7:] if isinstance(e, ProtocolError)] == ["bad_field"] * 2
    line = TextServerCodec.encode_fanout({"t": "presence", "room": "lobby", "nick": "bob",
                                          "event": "part", "by": "op", "reason": "spam"}, True)
    assert line == b"* bob was removed from lobby by op: spam\n"


def test_irc_commands() -> None:
    codec = IrcServerCodec()
    codec.receive_data(b"NICK op\r\nUSER op 0 * :op\r\n")
    codec.encode({"t": "welcome", "nick": "op", "server": "chat-relay/0"})
    codec.data_to_send()
    got = codec.receive_data(b"OPER op s3cret\r\nKICK #lobby bob :bye now\r\n"
                             b"MODE #lobby +b *!*@10.0.0.9\r\nMODE #lobby -b bob!*@*\r\n"
                             b"MODE #lobby +b b@d\r\n")
    assert got == [Oper("s3cret"), Kick("bob", "bye now"), Ban(ip="10.0.0.9"),
                   Unban(nick="bob")]
    assert b" 461 " in codec.data_to_send()
    assert b" 381 op " in codec.encode({"t": "notice", "text": "you are an operator"})
    assert b" 481 op " in codec.encode({"t": "error", "code": "not_operator", "text": "no",
                                        "ref": "kick"})
    kick = IrcServerCodec.encode_fanout({"t": "presence", "room": "lobby", "nick": "bob",
                                         "event": "part", "by": "op", "reason": "spam"}, None)
    assert kick == b":op!op@relay KICK #lobby bob :spam\r\n"
    closing = codec.encode({"t": "error", "code": "kicked", "text": "you were kicked by op"})
    assert closing.startswith(b"ERROR :Closing Link") and codec.closed


# A real relay ----------------------------------------------------------------

PASSWORD = "s3cret-op"


@pytest.fixture
def mod_relay(relay_factory: RelayFactory) -> RelayProcess:
    return relay_factory(workers=2, args=["--rate-limit", "0", "--oper-password", PASSWORD])


def oper(relay: RelayProcess, nick: str = "op") -> NativePeer:
    op = NativePeer.joined(relay.port, nick)
    op.send({"t": "oper", "password": PASSWORD})
    op.expect(lambda b: b == {"t": "notice", "text": "you are an operator"})
    return op


def test_only_operators_moderate(mod_relay: RelayProcess) -> None:
    peer = NativePeer.joined(mod_relay.port, "pleb")
    peer.send({"t": "kick", "nick": "pleb"})
    assert peer.expect_error("not_operator")["ref"] == "kick"
    for _ in range(2):
        peer.send({"t": "oper", "password": "guess"})
        assert peer.expect_error("auth_failed")["ref"] == "oper"
    peer.send({"t": "oper", "password": "guess"})
    peer.expect_error("auth_failed")
    peer.wait_closed()  # three wrong tries end the connection


def test_kick_a_user_on_another_worker(mod_relay: RelayProcess) -> None:
    op = oper(mod_relay)
    op_worker = worker_of(mod_relay.pid, op.local_port)
    victim = None
    for i in range(16):
        peer = NativePeer.joined(mod_relay.port, f"v{i}")
        if worker_of(mod_relay.pid, peer.local_port) != op_worker:
            victim = peer
            break
        peer.close()
    assert victim is not None, "no client landed on the other worker"
    op.drain(0.1)
    op.send({"t": "kick", "nick": victim.nick, "reason": "off topic"})
    err = victim.expect_error("kicked")
    assert err["by"] == "op" and err["reason"] == "off topic"
    victim.wait_closed()
    # (its join may still come first: presence is coalesced per interval)
    part = op.expect(lambda b: b.get("t") == "presence" and b.get("nick") == victim.nick
                     and b.get("event") == "part")
    assert (part["by"], part["reason"]) == ("op", "off topic")
    op.expect(lambda b: b == {"t": "notice", "text": f"kicked {victim.nick}"})
    NativePeer.joined(mod_relay.port, victim.nick).close()  # the nick is free again


def test_banned_ip_cannot_reconnect_until_unbanned(mod_relay: RelayProcess) -> None:
    op = oper(mod_relay)
    bystander = NativePeer.joined(mod_relay.port, "bystander")
    troll = NativePeer(mod_relay.port, source="127.0.0.2")
    troll.send({"t": "hello", "v": 1, "nick": "troll"})
    troll.expect(lambda b: b.get("t") == "welcome")
    op.send({"t": "ban", "ip": "127.0.0.2", "minutes": 5, "reason": "trolling"})
    err = troll.expect_error("banned")
    assert "127.0.0.2" in err["text"] and err["reason"] == "trolling"
    troll.wait_closed()
    op.expect(lambda b: b.get("t") == "notice" and b["text"].startswith("banned address"))
    # Every worker refuses it, before or at hello; others still get in.
    for i in range(6):
        again = NativePeer(mod_relay.port, source="127.0.0.2")
        again.send({"t": "hello", "v": 1, "nick": f"troll{i}"})
        again.expect_error("banned")
        again.wait_closed()
    NativePeer.joined(mod_relay.port, "welcome-guest").close()
    bystander.send({"t": "ping", "id": 1})
    bystander.expect(lambda b: b.get("t") == "pong")
    op.send({"t": "unban", "ip": "127.0.0.2"})
    op.expect(lambda b: b.get("t") == "notice" and b["text"].startswith("unbanned"))

    def back() -> bool:
        peer = NativePeer(mod_relay.port, source="127.0.0.2")
        peer.send({"t": "hello", "v": 1, "nick": "reformed"})
        ok = peer.expect(lambda b: b.get("t") in ("welcome", "error"))["t"] == "welcome"
        peer.close()
        return ok

    mod_relay.wait_for(back, timeout=5.0)  # each worker hears of the unban on the bus


def test_muted_user_is_refused_and_nobody_receives_it(mod_relay: RelayProcess) -> None:
    op = oper(mod_relay)
    loud = NativePeer.joined(mod_relay.port, "loud")
    listener = NativePeer.joined(mod_relay.port, "listener")
    op.send({"t": "mute", "nick": "loud", "minutes": 10})
    op.expect(lambda b: b.get("t") == "notice" and b["text"].startswith("muted loud"))
    loud.expect(lambda b: b.get("t") == "notice" and "muted" in b["text"])
    loud.send({"t": "say", "room": "lobby", "text": "SPAM", "id": 1})
    err = loud.expect_error("muted")
    assert err["ref"] == "say" and err["room"] == "lobby"
    loud.send({"t": "whisper", "to": "listener", "text": "psst"})
    assert loud.expect_error("muted")["ref"] == "whisper"
    listener.send({"t": "say", "room": "lobby", "text": "first"})
    first = listener.msgs("lobby", 1)[0]
    assert first["text"] == "first" and first["seq"] == 1  # SPAM never took a seq
    assert not [b for b in listener.drain(0.2) if b.get("t") in ("msg", "whisper")]
    op.send({"t": "unmute", "nick": "loud"})
    loud.expect(lambda b: b.get("t") == "notice" and "speak again" in b["text"])
    loud.send({"t": "say", "room": "lobby", "text": "sorry"})
    assert listener.msgs("lobby", 1)[0]["text"] == "sorry"


def test_text_operator(mod_relay: RelayProcess) -> None:
    target = NativePeer.joined(mod_relay.port, "target")
    text = TextPeer(mod_relay.port)
    text.expect_text("welcome")
    text.send_line("/mute target")
    text.expect_text("operators")
    text.send_line(f"/oper {PASSWORD}")
    text.expect_text("* you are an operator")
    text.send_line("/mute target 5 calm down")
    text.expect_text("* muted target for 5 more minutes")
    text.send_line("/kick target bye")
    text.expect_text("* kicked target")
    target.expect_error("kicked")
    target.wait_closed()
