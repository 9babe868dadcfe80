"""WebSocket and IRC clients on a real relay, in one room with a native client.

The clients are other people's code: `websockets` (sync client) and the PyPI
`irc` library, so these tests check that our dialects interoperate, not only
that they match our own expectations.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import irc.client
import msgpack
import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.sync.client import ClientConnection, connect

from tests.relayproc import UNIT, RelayProcess
from tests.wire import NativePeer

Body = dict[str, Any]


class WsPeer:
    """A websockets sync client speaking JSON or msgpack bodies."""

    def __init__(self, port: int, subprotocol: str | None = "chat-relay.v1.json") -> None:
        self.binary = subprotocol == "chat-relay.v1.msgpack"
        # Entering the context opens it; cleanup closes it.
        self.ws: ClientConnection = connect(
            f"ws://127.0.0.1:{port}/ws",
            subprotocols=[subprotocol] if subprotocol else None,  # type: ignore[list-item]
            open_timeout=5 * UNIT,
            compression=None,
            close_timeout=1 * UNIT,  # the relay does not yet end TCP on codec.closed
        ).__enter__()
        self.inbox: list[Body] = []

    def send(self, body: Body) -> None:
        self.ws.send(msgpack.packb(body) if self.binary else json.dumps(body))

    def expect(self, pred: Callable[[Body], bool], timeout: float = 5.0) -> Body:
        deadline = time.monotonic() + timeout * UNIT
        while True:
            for i, body in enumerate(self.inbox):
                if pred(body):
                    return self.inbox.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching message; got {self.inbox[-10:]!r}")
            try:
                data = self.ws.recv(timeout=left)
            except TimeoutError:
                continue
            if self.binary:
                assert isinstance(data, bytes)
                self.inbox.append(msgpack.unpackb(data))
            else:
                assert isinstance(data, str)
                self.inbox.append(json.loads(data))

    def hello(self, nick: str, rooms: list[str]) -> None:
        self.send({"t": "hello", "v": 1, "nick": nick, "rooms": rooms})
        self.expect(lambda b: b["t"] == "welcome")
        for room in rooms:
            self.expect(lambda b, r=room: b["t"] == "joined" and b["room"] == r)


class IrcPeer:
    """The PyPI irc library's client, pumped by hand with deadlines."""

    def __init__(self, port: int, nick: str) -> None:
        self.reactor = irc.client.Reactor()
        self.events: list[irc.client.Event] = []
        self.reactor.add_global_handler("all_events", self._record, -10)
        self.conn = self.reactor.server().connect("127.0.0.1", port, nick)

    def _record(self, connection: Any, event: irc.client.Event) -> None:
        self.events.append(event)

    def expect(self, pred: Callable[[irc.client.Event], bool], timeout: float = 5.0
               ) -> irc.client.Event:
        deadline = time.monotonic() + timeout * UNIT
        while True:
            for i, event in enumerate(self.events):
                if pred(event):
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                got = [(e.type, e.source, e.target, e.arguments) for e in self.events[-10:]]
                raise AssertionError(f"no matching IRC event; got {got!r}")
            self.reactor.process_once(min(left, 0.1))

    def close(self) -> None:
        self.conn.close()


def test_web_page_and_404_over_plain_http(relay: RelayProcess) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{relay.port}/", timeout=5 * UNIT) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        assert b"chat-relay" in resp.read()
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{relay.port}/missing", timeout=5 * UNIT)
    assert info.value.code == 404


@pytest.mark.parametrize("subprotocol", [None, "chat-relay.v1.json", "chat-relay.v1.msgpack"])
def test_native_ws_and_irc_clients_share_a_room(
    relay: RelayProcess, cleanup: list[Any], subprotocol: str | None
) -> None:
    native = NativePeer.joined(relay.port, "nat", ["lobby"])
    cleanup.append(native)
    web = WsPeer(relay.port, subprotocol)
    cleanup.append(web.ws)
    web.hello("web", ["lobby"])
    chat = IrcPeer(relay.port, "ircy")
    cleanup.append(chat)
    chat.expect(lambda e: e.type == "welcome")
    chat.conn.join("#lobby")
    chat.expect(lambda e: e.type == "join" and e.source.nick == "ircy")
    names = chat.expect(lambda e: e.type == "namreply")
    assert set(names.arguments[2].split()) == {"nat", "web", "ircy"}
    web.expect(lambda b: b["t"] == "presence" and b["nick"] == "ircy" and b["event"] == "join")

    native.send({"t": "say", "room": "lobby", "text": "from native"})
    got = chat.expect(lambda e: e.type == "pubmsg")
    assert (got.source.nick, got.target, got.arguments) == ("nat", "#lobby", ["from native"])
    seq = web.expect(lambda b: b["t"] == "msg" and b["from"] == "nat")["seq"]

    web.send({"t": "say", "room": "lobby", "text": "from the web", "id": "w1"})
    assert web.expect(lambda b: b["t"] == "msg" and b["from"] == "web")["id"] == "w1"
    assert native.expect(lambda b: b.get("t") == "msg" and b["from"] == "web")["seq"] == seq + 1
    got = chat.expect(lambda e: e.type == "pubmsg")
    assert (got.source.nick, got.arguments) == ("web", ["from the web"])

    chat.conn.privmsg("#lobby", "from irc")
    mine = native.expect(lambda b: b.get("t") == "msg" and b["from"] == "ircy")
    assert (mine["text"], mine["seq"]) == ("from irc", seq + 2)
    assert web.expect(lambda b: b["t"] == "msg" and b["from"] == "ircy")["text"] == "from irc"

    native.send({"t": "whisper", "to": "ircy", "text": "psst"})
    got = chat.expect(lambda e: e.type == "privmsg")
    assert (got.source.nick, got.target, got.arguments) == ("nat", "ircy", ["psst"])
    chat.conn.privmsg("web", "back at you")
    assert web.expect(lambda b: b["t"] == "whisper")["text"] == "back at you"

    # IRC clients never see their own lines echoed.
    assert not [e for e in chat.events if e.type == "pubmsg" and e.source.nick == "ircy"]


def test_irc_nick_taken_then_another(relay: RelayProcess, cleanup: list[Any]) -> None:
    native = NativePeer.joined(relay.port, "taken", ["lobby"])
    cleanup.append(native)
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=5 * UNIT)
    cleanup.append(sock)
    sock.sendall(b"CAP LS 302\r\nNICK taken\r\nUSER t 0 * :t\r\nCAP END\r\n")
    buf = _read_until(sock, b" 433 ")
    assert b"CAP * LS :" in buf
    sock.sendall(b"NICK taken_\r\n")
    buf = _read_until(sock, b" 376 ")
    assert b" 001 taken_ :" in buf
    sock.sendall(b"JOIN #lobby\r\nWHO #lobby\r\nLIST\r\nFOO\r\n")
    buf = _read_until(sock, b" 323 ")
    assert b" 421 taken_ FOO :" in buf
    assert b":taken_!taken_@relay JOIN #lobby" in buf
    assert b" 352 taken_ #lobby " in buf and b" 315 taken_ #lobby " in buf
    assert b" 322 taken_ #lobby 2 :" in buf
    # PING answers after the replies to the commands before it, as IRC servers do.
    sock.sendall(b"WHO #lobby\r\nLIST\r\nPING :barrier\r\n")
    buf = _read_until(sock, b"PONG chat-relay :barrier")
    assert buf.index(b" 315 taken_ #lobby ") < buf.index(b" 323 ") < buf.index(b"PONG")


def _read_until(sock: socket.socket, marker: bytes, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout * UNIT
    buf = b""
    while marker not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {marker!r} in {buf[-500:]!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            raise AssertionError(f"closed before {marker!r}: {buf[-500:]!r}")
        buf += chunk
    return buf


def test_ws_bad_input_and_oversize(relay: RelayProcess, cleanup: list[Any]) -> None:
    web = WsPeer(relay.port)
    cleanup.append(web.ws)
    web.ws.send("{not json")
    assert web.expect(lambda b: b["t"] == "error")["code"] == "bad_frame"
    web.hello("webby", ["lobby"])
    web.ws.send('{"t":"say","room":"lobby","text":"' + "x" * 70000 + '"}')
    assert web.expect(lambda b: b["t"] == "error")["code"] == "frame_too_large"
    with pytest.raises(ConnectionClosed):
        web.ws.recv(timeout=5 * UNIT)


def test_quit_and_bye_end_after_the_replies_before_them(
        relay: RelayProcess, cleanup: list[Any]) -> None:
    """IRC's ERROR line and WebSocket's Close frame come last: a client that
    asks something and leaves in one write still gets its answer."""
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=5 * UNIT)
    cleanup.append(sock)
    sock.sendall(b"NICK quitter\r\nUSER q 0 * :q\r\nJOIN #lobby\r\nWHO #lobby\r\n"
                 b"QUIT :done\r\n")
    buf = _read_until(sock, b"(Quit: done)\r\n")
    assert buf.index(b" 315 quitter #lobby ") < buf.index(b"ERROR :Closing Link: quitter")

    web = WsPeer(relay.port)
    cleanup.append(web.ws)
    web.hello("leaver", ["lobby"])
    web.send({"t": "who", "room": "lobby"})
    web.send({"t": "bye"})
    got = []
    with pytest.raises(ConnectionClosedOK):  # the relay's Close: 1000, normal closure
        while True:
            got.append(json.loads(web.ws.recv(timeout=5 * UNIT))["t"])
    assert "members" in got
