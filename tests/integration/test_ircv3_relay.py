"""IRCv3 on a real relay: raw IRC sockets, the `irc` library, a native peer, a
text peer and a WebSocket IRC client (`text.ircv3.net`) in one room.

Reply formats are checked against the IRCv3 specifications' examples
(capability negotiation 302, message-tags, server-time, batch,
labeled-response, echo-message, draft/chathistory, SASL, away-notify).
"""

from __future__ import annotations

import base64
import re
import socket
import time
from collections.abc import Callable
from typing import Any

from websockets.sync.client import connect

from tests.conftest import RelayFactory
from tests.relayproc import UNIT, RelayProcess
from tests.wire import NativePeer, TextPeer
from transports.ircv3_tags import parse_room_msgid, parse_server_time

TIME_TAG = re.compile(r"time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
ALL_CAPS = ("server-time message-tags batch echo-message draft/chathistory labeled-response "
            "away-notify multi-prefix")


class Irc:
    """A raw IRC connection: send lines, wait for a line that matches."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5 * UNIT)
        self.buf = b""
        self.lines: list[str] = []

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(line + "\r\n" for line in lines).encode())

    def expect(self, pred: Callable[[str], bool] | str, timeout: float = 5.0) -> str:
        if isinstance(pred, str):
            needle = pred
            pred = lambda line: needle in line  # noqa: E731
        deadline = time.monotonic() + timeout * UNIT
        while True:
            for i, line in enumerate(self.lines):
                if pred(line):
                    del self.lines[: i + 1]
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching line; last lines: {self.lines[-12:]!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError(f"closed; last lines: {self.lines[-12:]!r}")
            self.buf += chunk
            *done, self.buf = self.buf.split(b"\r\n")
            self.lines += [d.decode() for d in done]

    def until(self, marker: str) -> list[str]:
        """Every line up to and including the first that contains `marker`."""
        got: list[str] = []
        self.expect(lambda line: got.append(line) is None and marker in line)
        return got

    def register(self, nick: str, caps: str = ALL_CAPS) -> list[str]:
        self.send("CAP LS 302", f"NICK {nick}", f"USER {nick} 0 * :{nick}")
        if caps:
            self.send(f"CAP REQ :{caps}")
            self.expect(" ACK ")
        self.send("CAP END")
        return self.until(" 376 ")

    def close(self) -> None:
        self.sock.close()


def _irc(relay: RelayProcess, cleanup: list[Any], nick: str, caps: str = ALL_CAPS) -> Irc:
    peer = Irc(relay.port)
    cleanup.append(peer)
    peer.register(nick, caps)
    return peer


def _join(peer: Irc, room: str = "lobby") -> None:
    peer.send(f"JOIN #{room}")
    peer.expect(" 366 ")


def test_cap_ls_302_lists_every_capability_and_registration_tells_the_limits(
        relay_factory: RelayFactory, cleanup: list[Any]) -> None:
    relay = relay_factory(workers=1, args=["--rate-limit", "0", "--max-rooms-per-client", "7"])
    peer = Irc(relay.port)
    cleanup.append(peer)
    peer.send("CAP LS 302")
    ls = peer.expect(" CAP * LS ")
    for cap in ("server-time", "message-tags", "batch", "echo-message", "draft/chathistory",
                "labeled-response", "sasl=PLAIN", "multi-prefix", "away-notify"):
        assert cap in ls.split(":", 2)[2].split(), ls
    peer.send("CAP REQ :server-time bogus-cap")
    assert peer.expect(" NAK ").endswith("NAK :server-time bogus-cap")
    peer.send("NICK lim", "USER lim 0 * :lim", f"CAP REQ :{ALL_CAPS}")
    assert peer.expect(" ACK ").endswith(f"ACK :{ALL_CAPS}")
    peer.send("CAP LIST")
    assert set(peer.expect(" LIST ").split(":", 2)[2].split()) == set(ALL_CAPS.split())
    peer.send("CAP END")
    got = peer.until(" 376 ")
    isupport = next(line for line in got if " 005 " in line)
    for token in ("NICKLEN=32", "CHANLIMIT=#:7", "CHATHISTORY=500", "MSGREFTYPES=msgid,timestamp"):
        assert token in isupport.split(), isupport
    motd = [line for line in got if " 372 " in line]
    assert any("/join #lobby" in line for line in motd)
    assert any("nc" in line and "WebSocket" in line and "native" in line for line in motd)
    assert [line.split()[1] for line in got if line.split()[1] in ("375", "376")] == [
        "375", "376"]
    peer.send("MOTD")
    assert " 372 lim :- " in peer.until(" 376 ")[1]


def test_messages_carry_time_and_msgid_and_echo_with_label(
        relay: RelayProcess, cleanup: list[Any]) -> None:
    carol = _irc(relay, cleanup, "carol")
    _join(carol)
    bob = NativePeer.joined(relay.port, "bob")
    cleanup.append(bob)
    bob.send({"t": "say", "room": "lobby", "text": "hello there"})
    sent = bob.expect(lambda b: b.get("t") == "msg")
    line = carol.expect("PRIVMSG #lobby :hello there")
    # message-tags example: @time=...;msgid=... :nick!user@host PRIVMSG #chan :text
    tags, _, rest = line.partition(" ")
    assert rest == ":bob!bob@relay PRIVMSG #lobby :hello there"
    tag = dict(t.split("=", 1) for t in tags[1:].split(";"))
    assert TIME_TAG.fullmatch(f"time={tag['time']}")
    assert parse_server_time(tag["time"]) == sent["ts"]
    assert parse_room_msgid(tag["msgid"]) == ("lobby", sent["seq"])
    # echo-message + labeled-response: the echo carries the label and a msgid.
    carol.send("@label=abc123 PRIVMSG #lobby :mine")
    echo = carol.expect("PRIVMSG #lobby :mine")
    assert echo.startswith("@") and "label=abc123" in echo and "msgid=" in echo
    assert echo.endswith(":carol!carol@relay PRIVMSG #lobby :mine")
    assert bob.expect(lambda b: b.get("t") == "msg" and b["text"] == "mine")["from"] == "carol"
    # A labeled command answered by the codec: its one reply is labeled.
    carol.send("@label=m1 MODE #lobby")
    assert carol.expect(" 324 ").startswith("@label=m1 :chat-relay 324 carol #lobby")


def test_chathistory_every_subcommand_by_msgid_and_timestamp(
        relay: RelayProcess, cleanup: list[Any]) -> None:
    bob = NativePeer.joined(relay.port, "bob")
    cleanup.append(bob)
    msgs = []
    for i in range(1, 11):
        bob.send({"t": "say", "room": "lobby", "text": f"m{i}"})
        msgs.append(bob.expect(lambda b: b.get("t") == "msg"))
    carol = _irc(relay, cleanup, "carol")
    _join(carol)
    # carol took batch: her join replay (the latest 20) comes as one unlabeled batch.
    replay = carol.until("BATCH -")
    assert any(" BATCH +" in line and line.endswith(" chathistory #lobby") for line in replay)
    assert not any("label=" in line for line in replay)
    mid = {m["text"]: f"msgid={m_id}" for m in msgs
           for m_id in [_msgid_of(carol, m)]}
    ts = {m["text"]: "timestamp=" + _iso(m["ts"]) for m in msgs}

    def page(command: str) -> tuple[str, list[str]]:
        carol.send(f"@label=h CHATHISTORY {command}")
        got = carol.until("BATCH -")
        start = next(line for line in got if " BATCH +" in line)
        ref = start.split(" BATCH +", 1)[1].split()[0]
        texts = [line.rsplit(" :", 1)[1] for line in got
                 if " PRIVMSG " in line and f"batch={ref}" in line]
        return start, texts

    start, texts = page("LATEST #lobby * 3")
    assert start.startswith("@label=h :chat-relay BATCH +") and start.endswith(
        " chathistory #lobby")
    assert texts == ["m8", "m9", "m10"]
    assert page(f"LATEST #lobby {mid['m8']} 10")[1] == ["m9", "m10"]
    assert page(f"BEFORE #lobby {mid['m5']} 2")[1] == ["m3", "m4"]
    assert page(f"AFTER #lobby {mid['m5']} 2")[1] == ["m6", "m7"]
    assert page(f"AROUND #lobby {mid['m5']} 3")[1] == ["m4", "m5", "m6"]
    assert page(f"BETWEEN #lobby {mid['m2']} {mid['m6']} 10")[1] == ["m3", "m4", "m5"]
    assert page(f"BETWEEN #lobby {mid['m6']} {mid['m2']} 2")[1] == ["m4", "m5"]
    # Several messages may share a millisecond: the expectation follows their ts.
    t5 = msgs[4]["ts"]
    assert page(f"AFTER #lobby {ts['m5']} 3")[1] == [m["text"] for m in msgs
                                                     if m["ts"] > t5][:3]
    assert page(f"BEFORE #lobby {ts['m5']} 3")[1] == [m["text"] for m in msgs
                                                      if m["ts"] < t5][-3:]
    carol.send("CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z "
               "timestamp=2100-01-01T00:00:00.000Z 10")
    got = carol.until("BATCH -")
    assert any(" BATCH +" in line and line.endswith("draft/chathistory-targets") for line in got)
    assert any(f"CHATHISTORY TARGETS #lobby {ts['m10']}" in line for line in got)
    carol.send("CHATHISTORY LATEST #elsewhere * 5")
    assert "FAIL CHATHISTORY INVALID_TARGET" in carol.expect(" FAIL ")
    carol.send("CHATHISTORY SIDEWAYS #lobby * 5")
    assert carol.expect(" FAIL ").endswith("FAIL CHATHISTORY UNKNOWN_COMMAND SIDEWAYS "
                                           ":unknown subcommand")


def _msgid_of(peer: Irc, msg: dict[str, Any]) -> str:
    from transports.ircv3_tags import room_msgid
    # The relay's msgid names the hub epoch; the epoch is not needed to look
    # one up (the seq is), so any epoch stands in for it here.
    return room_msgid(str(msg["room"]), int(msg["seq"]), 0)


def _iso(ms: int) -> str:
    from transports.ircv3_tags import server_time
    return server_time(ms)


def test_whois_away_notify_and_quit_reason(relay: RelayProcess, cleanup: list[Any]) -> None:
    carol = _irc(relay, cleanup, "carol")
    dave = _irc(relay, cleanup, "dave", caps="")
    _join(carol)
    _join(dave)
    _join(dave, "kitchen")
    text = TextPeer(relay.port)
    cleanup.append(text)
    text.expect_text("you joined lobby")
    native = NativePeer.joined(relay.port, "nat")
    cleanup.append(native)
    carol.send("WHOIS dave")
    got = [line for line in carol.until(" 318 ") if line.split()[1].isdigit()]
    codes = [line.split()[1] for line in got]
    assert codes == ["311", "312", "319", "318"]
    assert got[0] == ":chat-relay 311 carol dave dave relay * :dave"
    assert set(got[2].split(":", 2)[2].split()) == {"#lobby", "#kitchen"}
    carol.send("WHOIS nobody")
    assert [line.split()[1] for line in carol.until(" 318 ")] == ["401", "318"]
    dave.send("AWAY :lunch")
    dave.expect(" 306 ")
    assert carol.expect(" AWAY ") == ":dave!dave@relay AWAY :lunch"
    assert native.expect(lambda b: b.get("t") == "away") == {"t": "away", "nick": "dave",
                                                            "text": "lunch"}
    carol.send("WHOIS dave")
    assert any(" 301 carol dave :lunch" in line for line in carol.until(" 318 "))
    dave.send("AWAY")
    dave.expect(" 305 ")
    assert carol.expect(" AWAY") == ":dave!dave@relay AWAY"
    dave.send("QUIT :gone fishing")
    assert carol.expect(" PART ") == ":dave!dave@relay PART #lobby :gone fishing"
    part = native.expect(lambda b: b.get("t") == "presence" and b["event"] == "part")
    assert part["reason"] == "gone fishing"
    text.expect(lambda line: line.rstrip("\r") == "* dave left lobby (gone fishing)")


def test_action_both_ways(relay: RelayProcess, cleanup: list[Any]) -> None:
    carol = _irc(relay, cleanup, "carol", caps="")
    _join(carol)
    native = NativePeer.joined(relay.port, "nat")
    cleanup.append(native)
    text = TextPeer(relay.port)
    cleanup.append(text)
    text.expect_text("you joined lobby")
    carol.send("PRIVMSG #lobby :\x01ACTION waves\x01")
    msg = native.expect(lambda b: b.get("t") == "msg")
    assert msg["text"] == "waves" and msg["action"] is True
    text.expect(lambda line: line.rstrip("\r") == "* carol waves")
    native.send({"t": "say", "room": "lobby", "text": "bows", "action": True})
    assert carol.expect("PRIVMSG") == ":nat!nat@relay PRIVMSG #lobby :\x01ACTION bows\x01"
    text.send_line("/me smiles")
    assert carol.expect("smiles").endswith("PRIVMSG #lobby :\x01ACTION smiles\x01")


def test_sasl_plain_maps_onto_the_relay_password(
        relay_factory: RelayFactory, cleanup: list[Any]) -> None:
    relay = relay_factory(workers=1, args=["--rate-limit", "0", "--password", "sesame",
                                           "--auth-delay", "0"])
    for password, outcome in (("sesame", " 001 "), ("wrong", " 464 ")):
        peer = Irc(relay.port)
        cleanup.append(peer)
        peer.send("CAP LS 302", "NICK sam", "USER sam 0 * :sam", "CAP REQ :sasl")
        peer.expect(" ACK :sasl")
        peer.send("AUTHENTICATE PLAIN")
        assert peer.expect("AUTHENTICATE") == "AUTHENTICATE +"
        payload = base64.b64encode(f"sam\0sam\0{password}".encode()).decode()
        peer.send(f"AUTHENTICATE {payload}")
        assert peer.expect(" 900 ") == (":chat-relay 900 sam sam!sam@relay sam "
                                         ":You are now logged in as sam")
        peer.expect(" 903 ")
        peer.send("CAP END")
        peer.expect(outcome)
        peer.close()


def test_irc_over_websocket_text_ircv3_net(relay: RelayProcess, cleanup: list[Any]) -> None:
    ws = connect(f"ws://127.0.0.1:{relay.port}/ws", subprotocols=["text.ircv3.net"],  # type: ignore[list-item]
                 open_timeout=5 * UNIT, compression=None, close_timeout=1 * UNIT).__enter__()
    cleanup.append(ws)
    assert ws.subprotocol == "text.ircv3.net"
    for line in ("CAP LS 302", "NICK webby", "USER webby 0 * :webby",
                 "CAP REQ :server-time message-tags echo-message", "CAP END", "JOIN #lobby"):
        ws.send(line)
    got: list[str] = []

    def until(marker: str) -> list[str]:
        deadline = time.monotonic() + 5 * UNIT
        while not any(marker in line for line in got):
            message = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
            assert isinstance(message, str), message
            assert "\r" not in message and "\n" not in message
            got.append(message)
        return got

    until(" 366 ")
    assert any(line.endswith(" 001 webby :Welcome to the chat-relay IRC gateway "
                             "webby!webby@relay") for line in got)
    assert ":webby!webby@relay JOIN #lobby" in got
    native = NativePeer.joined(relay.port, "nat")
    cleanup.append(native)
    native.send({"t": "say", "room": "lobby", "text": "hi web"})
    line = until("hi web")[-1]
    assert line.startswith("@time=") and line.endswith(":nat!nat@relay PRIVMSG #lobby :hi web")
    ws.send("PRIVMSG #lobby :hi native")
    assert native.expect(lambda b: b.get("t") == "msg" and b["from"] == "webby")["text"] == \
        "hi native"
    assert until("hi native")[-1].endswith(":webby!webby@relay PRIVMSG #lobby :hi native")
