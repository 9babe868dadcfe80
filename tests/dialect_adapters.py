"""One small interface over every dialect, for tests/integration/test_conformance.py.

Each adapter speaks its dialect on a real socket the way that dialect's users
do (a native client, nc, a browser's WebSocket, an IRC client) and turns what
arrives into the same few answers, so one suite can state the chat semantics
once. Every wait has a deadline (a multiple of tests.relayproc.UNIT).

A new dialect gets an adapter here and an entry in ADAPTERS; it counts as
supported once test_conformance.py passes for it.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import msgpack
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.relayproc import UNIT
from tests.wire import Body, NativePeer, TextPeer


@dataclass(frozen=True)
class Message:
    room: str
    sender: str
    text: str
    seq: int | None  # None where the dialect does not carry it (text, IRC)


class NickTaken(Exception):
    """connect() was refused because the nick is in use."""


class Adapter:
    """What the conformance suite asks of a dialect."""

    name = "abstract"
    carries_seq = False

    def __init__(self, port: int) -> None:
        self.port = port
        self.nick = ""

    def connect(self, nick: str) -> None:
        """Connect and register as `nick` (raises NickTaken)."""
        raise NotImplementedError

    def join(self, room: str) -> set[str]:
        """Join `room`; returns its members as the relay reported them."""
        raise NotImplementedError

    def say(self, room: str, text: str) -> None:
        raise NotImplementedError

    def next_message(self, timeout: float = 5.0) -> Message:
        """The next room message from someone else, in arrival order."""
        raise NotImplementedError

    def whisper(self, to: str, text: str) -> None:
        raise NotImplementedError

    def next_whisper(self, timeout: float = 5.0) -> tuple[str, str]:
        """(from, text) of the next whisper from someone else."""
        raise NotImplementedError

    def expect_presence(self, room: str, nick: str, event: str, timeout: float = 5.0) -> None:
        """Wait until the dialect shows `nick` joining or leaving (`event`) `room`."""
        raise NotImplementedError

    def send_bad(self) -> str:
        """Send input the relay must refuse; returns the error shown (connection stays)."""
        raise NotImplementedError

    def quit(self) -> None:
        """Leave cleanly and wait until the relay has closed the connection."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# Body dialects: native frames and WebSocket messages ------------------------------


class BodyAdapter(Adapter):
    """Shared by dialects that carry the native bodies (native, ws)."""

    carries_seq = True

    def send(self, body: Body) -> None:
        raise NotImplementedError

    def expect(self, pred: Any, timeout: float = 5.0) -> Body:
        raise NotImplementedError

    def connect(self, nick: str) -> None:
        self.send({"t": "hello", "v": 1, "nick": nick, "rooms": []})
        reply = self.expect(lambda b: b.get("t") in ("welcome", "error"))
        if reply["t"] == "error":
            if reply.get("code") == "nick_taken":
                raise NickTaken(reply.get("text"))
            raise AssertionError(f"hello refused: {reply}")
        self.nick = reply["nick"]

    def join(self, room: str) -> set[str]:
        self.send({"t": "join", "room": room})
        joined = self.expect(lambda b: b.get("t") == "joined" and b["room"] == room)
        return set(joined["members"])

    def say(self, room: str, text: str) -> None:
        self.send({"t": "say", "room": room, "text": text})

    def next_message(self, timeout: float = 5.0) -> Message:
        b = self.expect(lambda b: b.get("t") == "msg" and b["from"] != self.nick, timeout)
        return Message(b["room"], b["from"], b["text"], b["seq"])

    def whisper(self, to: str, text: str) -> None:
        self.send({"t": "whisper", "to": to, "text": text})

    def next_whisper(self, timeout: float = 5.0) -> tuple[str, str]:
        b = self.expect(lambda b: b.get("t") == "whisper" and b["from"] != self.nick, timeout)
        return b["from"], b["text"]

    def expect_presence(self, room: str, nick: str, event: str, timeout: float = 5.0) -> None:
        self.expect(lambda b: b.get("t") == "presence" and b["room"] == room
                    and b["nick"] == nick and b["event"] == event, timeout)

    def send_bad(self) -> str:
        self.send({"t": "no-such-type"})
        err = self.expect(lambda b: b.get("t") == "error")
        return f"{err['code']}: {err['text']}"


class NativeAdapter(BodyAdapter):
    name = "native"

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.peer = NativePeer(port)

    def send(self, body: Body) -> None:
        self.peer.send(body)

    def expect(self, pred: Any, timeout: float = 5.0) -> Body:
        return self.peer.expect(pred, timeout)

    def quit(self) -> None:
        self.peer.send({"t": "bye"})
        self.peer.wait_closed()

    def close(self) -> None:
        self.peer.close()


class WsAdapter(BodyAdapter):
    """A WebSocket client (the websockets library), JSON text or msgpack binary."""

    name = "ws"
    subprotocol = "chat-relay.v1.json"

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.binary = self.subprotocol.endswith("msgpack")
        self.ws: ClientConnection = ws_connect(
            f"ws://127.0.0.1:{port}/ws",
            subprotocols=[self.subprotocol],  # type: ignore[list-item]
            open_timeout=5 * UNIT,
            close_timeout=2 * UNIT,
            compression=None,
        ).__enter__()  # entered like a context manager; close() leaves it
        self.inbox: list[Body] = []
        self.closed = False

    def send(self, body: Body) -> None:
        self.ws.send(msgpack.packb(body) if self.binary else json.dumps(body))

    def _recv(self, timeout: float) -> bool:
        try:
            data = self.ws.recv(timeout=timeout)
        except TimeoutError:
            return False
        except ConnectionClosed:
            self.closed = True
            return False
        if isinstance(data, bytes):
            self.inbox.append(msgpack.unpackb(data))
        else:
            self.inbox.append(json.loads(data))
        return True

    def expect(self, pred: Any, timeout: float = 5.0) -> Body:
        return _expect(self.inbox, pred, self._recv, lambda: self.closed, timeout)

    def quit(self) -> None:
        self.send({"t": "bye"})
        _wait_until_closed(self._recv, lambda: self.closed)

    def close(self) -> None:
        self.ws.close()


class WsMsgpackAdapter(WsAdapter):
    name = "ws-msgpack"
    subprotocol = "chat-relay.v1.msgpack"


# Line dialects: text (nc) and IRC ---------------------------------------------


class LineAdapter(Adapter):
    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.peer = TextPeer(port)

    def line(self, text: str) -> None:
        self.peer.send_line(text)

    def expect_line(self, pattern: str, timeout: float = 5.0) -> re.Match[str]:
        """The first buffered or arriving line matching regex `pattern` (consumed)."""
        rx = re.compile(pattern)
        line = self.peer.expect(lambda s: rx.search(s.rstrip("\r")) is not None, timeout)
        m = rx.search(line.rstrip("\r"))
        assert m is not None
        return m

    def quit(self) -> None:
        self._send_quit()
        deadline_pump = _line_pump(self.peer)
        _wait_until_closed(deadline_pump, lambda: self.peer.closed)

    def _send_quit(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.peer.close()


class TextAdapter(LineAdapter):
    """nc-style: a guest nick at once, `/nick`, `/join`, plain lines, `* ` server lines."""

    name = "text"

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.current: str | None = None
        self.welcomed = False

    def connect(self, nick: str) -> None:
        if not self.welcomed:  # the relay names a guest first; later tries just /nick
            self.expect_line(r"^\* welcome to chat-relay, you are \S+;")
            self.welcomed = True
        self.line(f"/nick {nick}")
        m = self.expect_line(rf"^\* (you are now known as {re.escape(nick)}$|error: .*)")
        if m.group(1).startswith("error"):
            if "taken" in m.group(1):
                raise NickTaken(m.group(1))
            raise AssertionError(m.group(1))
        self.nick = nick

    def join(self, room: str) -> set[str]:
        self.line(f"/join {room}")
        m = self.expect_line(rf"^\* you joined {re.escape(room)} \(\d+ members?(?:: (.*))?\)$")
        self.current = room
        return set((m.group(1) or "").split(", ")) - {""}

    def say(self, room: str, text: str) -> None:
        if room != self.current:
            self.join(room)
        self.line(text)

    def next_message(self, timeout: float = 5.0) -> Message:
        m = self.expect_line(r"^(?:\[(\S+)\] )?<(\S+)> (.*)$", timeout)
        return Message(m.group(1) or self.current or "", m.group(2), m.group(3), None)

    def whisper(self, to: str, text: str) -> None:
        self.line(f"/msg {to} {text}")

    def next_whisper(self, timeout: float = 5.0) -> tuple[str, str]:
        m = self.expect_line(r"^\*(\S+)\* (.*)$", timeout)
        return m.group(1), m.group(2)

    def expect_presence(self, room: str, nick: str, event: str, timeout: float = 5.0) -> None:
        verb = {"join": "joined", "part": "left"}[event]
        self.expect_line(rf"^\* {re.escape(nick)} {verb} {re.escape(room)}$", timeout)

    def send_bad(self) -> str:
        self.line("/frobnicate now")
        return self.expect_line(r"^\* (error: .*)$").group(1)

    def _send_quit(self) -> None:
        self.line("/quit")


class IrcAdapter(LineAdapter):
    """An IRC client's lines: registration, JOIN/NAMES, PRIVMSG, numerics."""

    name = "irc"

    def connect(self, nick: str) -> None:
        self.line(f"NICK {nick}\r")
        self.line(f"USER {nick} 0 * :conformance\r")
        m = self.expect_line(r"^:\S+ (001|433) ")
        if m.group(1) == "433":
            raise NickTaken(nick)
        self.nick = nick

    def join(self, room: str) -> set[str]:
        self.line(f"JOIN #{room}\r")
        self.expect_line(rf"^:{re.escape(self.nick)}!\S+ JOIN :?#{re.escape(room)}$")
        names: set[str] = set()
        while True:
            m = self.expect_line(rf"^:\S+ (353|366) {re.escape(self.nick)} (?:[=*@] )?"
                                 rf"#{re.escape(room)} :(.*)$")
            if m.group(1) == "366":
                return names
            names |= {n.lstrip("@+") for n in m.group(2).split()}

    def say(self, room: str, text: str) -> None:
        self.line(f"PRIVMSG #{room} :{text}\r")

    def next_message(self, timeout: float = 5.0) -> Message:
        m = self.expect_line(r"^:([^!\s]+)!\S+ PRIVMSG #(\S+) :(.*)$", timeout)
        return Message(m.group(2), m.group(1), m.group(3), None)

    def whisper(self, to: str, text: str) -> None:
        self.line(f"PRIVMSG {to} :{text}\r")

    def next_whisper(self, timeout: float = 5.0) -> tuple[str, str]:
        m = self.expect_line(rf"^:([^!\s]+)!\S+ PRIVMSG {re.escape(self.nick)} :(.*)$", timeout)
        return m.group(1), m.group(2)

    def expect_presence(self, room: str, nick: str, event: str, timeout: float = 5.0) -> None:
        verb = {"join": "JOIN", "part": "PART"}[event]
        self.expect_line(rf"^:{re.escape(nick)}!\S+ {verb} :?#{re.escape(room)}(?: :.*)?$",
                         timeout)

    def send_bad(self) -> str:
        self.line("FROBNICATE now\r")
        return self.expect_line(r"^:\S+ (421 .*)$").group(1)

    def _send_quit(self) -> None:
        self.line("QUIT :done\r")


ADAPTERS: dict[str, type[Adapter]] = {
    a.name: a for a in (NativeAdapter, TextAdapter, WsAdapter, WsMsgpackAdapter, IrcAdapter)
}


# Helpers ---------------------------------------------------------------------


def _expect(inbox: list[Body], pred: Any, pump: Any, closed: Any, timeout: float) -> Body:
    deadline = time.monotonic() + timeout * UNIT
    while True:
        for i, body in enumerate(inbox):
            if isinstance(body, dict) and pred(body):
                return inbox.pop(i)
        left = deadline - time.monotonic()
        if left <= 0 or closed():
            raise AssertionError(f"no matching message; got {inbox[-10:]!r}")
        pump(left)


def _line_pump(peer: TextPeer) -> Any:
    def pump(timeout: float) -> bool:
        try:
            peer.expect(lambda line: False, timeout / UNIT)
        except AssertionError:
            pass
        return not peer.closed

    return pump


def _wait_until_closed(pump: Any, closed: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout * UNIT
    while not closed():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("the relay did not close the connection")
        pump(min(left, 0.2))
