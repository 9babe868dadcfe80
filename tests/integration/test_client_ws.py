"""The client library and chat-client over the WebSocket dialect (transport="ws").

The relay's server codec and the client's codec share transports/ (bodies,
JSON and msgpack encoding); these tests run the library's calls, a reconnect
with resume, and chat-client's pipe mode over /ws against a real relay.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys

import pytest

from clients import aio
from clients.errors import ConnectionClosed, HandshakeError, RelayError
from clients.state import ConnectionLost, Reconnected
from clients.sync import connect
from tests.integration.test_client_lib import HOST, next_event, wait_until
from tests.relayproc import ROOT, UNIT, RelayProcess
from tests.wire import NativePeer, worker_of
from transports.errors import ProtocolError
from transports.events import Hello, Msg, Presence, WhisperMsg
from transports.websocket_client import WebSocketClientCodec, ws_uri

CLIENT = [sys.executable, "-m", "clients.cli"]
TIME = r"\d\d:\d\d:\d\d"
WS_TRANSPORTS = ["ws", "ws-msgpack"]


# The codec alone (sans-I/O) ----------------------------------------------------


def _response(status: str, headers: str = "", body: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    return head.encode() + body


def test_codec_request_then_hello_in_one_write() -> None:
    codec = WebSocketClientCodec("127.0.0.1", 8081)
    data = codec.send(Hello("ann", ("lobby",)))
    head, _, frame = data.partition(b"\r\n\r\n")
    assert head.startswith(b"GET /ws HTTP/1.1\r\n")
    assert b"Sec-WebSocket-Protocol: chat-relay.v1.json" in head
    assert frame[0] == 0x81 and frame[1] & 0x80  # one masked text frame
    assert codec.send(Hello("ann", ("lobby",)))[:1] == b"\x81"  # the request goes once


def test_codec_refused_upgrade_is_one_fatal_error_fed_whole_or_bytewise() -> None:
    reply = _response("404 Not Found", "Content-Type: text/plain\r\n", b"404 not found: /ws\n")
    for chunks in ([reply], [reply[i : i + 1] for i in range(len(reply))]):
        codec = WebSocketClientCodec("127.0.0.1", 8081)
        codec.send(Hello("ann", ()))
        out = [item for chunk in chunks for item in codec.receive_data(chunk)]
        assert len(out) == 1 and isinstance(out[0], ProtocolError) and out[0].fatal
        assert "HTTP 404" in out[0].text and "not found" in out[0].text


def test_ws_uri_brackets_ipv6() -> None:
    assert ws_uri("::1", 80, False) == "ws://[::1]:80/ws"
    assert ws_uri("relay.lan", 443, True) == "wss://relay.lan:443/ws"


def test_unknown_transport_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown transport"):
        connect(HOST, 1, "ann", transport="carrier-pigeon")


# The library on a real relay ---------------------------------------------------


@pytest.mark.parametrize("transport", WS_TRANSPORTS)
def test_library_chats_over_ws(relay: RelayProcess, transport: str) -> None:
    nat = NativePeer.joined(relay.port, "nat", ["lobby"])
    try:
        with connect(HOST, relay.port, "webby", rooms=("lobby", "dev"),
                     transport=transport, timeout=5 * UNIT) as web:
            assert sorted(web.who("lobby")) == ["nat", "webby"]
            assert web.ping() < 5 * UNIT
            my_id = web.say("lobby", "over a websocket")
            mine = next_event(web, Msg, lambda m: m.text == "over a websocket")
            assert mine.id == my_id and mine.sender == "webby"
            got = nat.expect(lambda b: b.get("t") == "msg" and b["from"] == "webby")
            assert got["seq"] == mine.seq
            for i in range(5):
                nat.send({"t": "say", "room": "lobby", "text": f"n{i}"})
            seqs = [next_event(web, Msg, lambda m: m.sender == "nat").seq for _ in range(5)]
            assert seqs == list(range(mine.seq + 1, mine.seq + 6))
            web.whisper("nat", "psst")
            assert nat.expect(lambda b: b.get("t") == "whisper")["text"] == "psst"
            nat.send({"t": "whisper", "to": "webby", "text": "back"})
            assert next_event(web, WhisperMsg, lambda w: w.sender == "nat").text == "back"
            page = web.history("lobby", after=mine.seq)
            assert [m.text for m in page.messages] == [f"n{i}" for i in range(5)]
            with pytest.raises(RelayError) as info:
                web.who("nowhere")
            assert info.value.code == "not_in_room"
        # close() said bye: the relay tells the room.
        nat.expect(lambda b: b.get("t") == "presence" and b["nick"] == "webby"
                   and b["event"] == "part")
    finally:
        nat.close()


def test_nick_taken_over_ws_is_a_handshake_error(relay: RelayProcess) -> None:
    with connect(HOST, relay.port, "taken", transport="ws"):
        with pytest.raises(HandshakeError) as info:
            connect(HOST, relay.port, "TAKEN", transport="ws", timeout=5 * UNIT)
        assert info.value.code == "nick_taken"


def test_reconnect_over_ws_resumes(relay: RelayProcess) -> None:
    """A worker dies under a ws client: it reconnects over ws and resumes its room."""
    rx = connect(HOST, relay.port, "rx", transport="ws", reconnect=True, timeout=5 * UNIT)
    try:
        with connect(HOST, relay.port, "tx") as tx:
            tx.say("lobby", "before")
            next_event(rx, Msg, lambda m: m.text == "before")
        port = rx.local_port
        assert port is not None
        worker = worker_of(relay.pid, port)
        os.kill(worker, signal.SIGKILL)
        next_event(rx, ConnectionLost)
        wait_until(lambda: len(relay.worker_pids()) == 2 and worker not in relay.worker_pids())
        with connect(HOST, relay.port, "tx2") as tx2:
            tx2.say("lobby", "while away")
            assert tx2.flush()
        next_event(rx, Reconnected, timeout=15)
        got = next_event(rx, Msg, lambda m: m.text == "while away", timeout=10)
        assert got.seq == 2 and rx.transport == "ws"
    finally:
        rx.close()


def test_async_client_over_ws(relay: RelayProcess) -> None:
    async def main() -> None:
        a = await aio.connect(HOST, relay.port, "asy", transport="ws", timeout=5 * UNIT)
        b = await aio.connect(HOST, relay.port, "bsy", transport="ws-msgpack",
                              timeout=5 * UNIT)
        try:
            await a.say("lobby", "async over ws")
            async with asyncio.timeout(5 * UNIT):
                async for ev in b:
                    if isinstance(ev, Msg) and ev.text == "async over ws":
                        assert ev.sender == "asy"
                        break
            assert sorted(await b.who("lobby")) == ["asy", "bsy"]
        finally:
            await a.close()
            await b.close()
        with pytest.raises(ConnectionClosed):
            await a.say("lobby", "too late")

    asyncio.run(main())


# chat-client ---------------------------------------------------------------------


def test_chat_client_pipe_mode_over_ws(relay: RelayProcess) -> None:
    with connect(HOST, relay.port, "bob") as bob:
        proc = subprocess.run(
            [*CLIENT, HOST, str(relay.port), "--nick", "alice", "--transport", "ws"],
            input="hello over ws\n/msg bob psst\n/who\n",
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30 * UNIT,
        )
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        assert len(re.findall(rf"(?m)^{TIME} <alice> hello over ws$", out)) == 1, out
        assert re.search(rf"(?m)^{TIME} -> \*bob\* psst$", out), out
        assert re.search(rf"(?m)^{TIME} \* lobby: 2 members: ", out), out
        assert next_event(bob, Msg, lambda m: m.text == "hello over ws").sender == "alice"
        assert next_event(bob, WhisperMsg).text == "psst"
        next_event(bob, Presence, lambda p: p.nick == "alice" and p.event == "part")


def test_chat_client_rejects_an_unknown_transport() -> None:
    proc = subprocess.run(
        [*CLIENT, HOST, "1", "--transport", "smoke"], capture_output=True, text=True,
        cwd=ROOT, timeout=30 * UNIT,
    )
    assert proc.returncode == 2 and "invalid choice: 'smoke'" in proc.stderr

