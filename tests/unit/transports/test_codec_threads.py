"""Every server codec decodes on one thread while another encodes (transports/codec.py).

The relay's reader thread feeds a connection's codec while the worker's bus
thread encodes for the same codec. The rule in transports/codec.py says the
two sides share no mutable state, so neither side's output may depend on
when the other ran. Each test prepares a codec (handshake, registration),
then runs a long decode stream and a long encode stream on two threads at
once, handing the GIL over after every item (and switching threads every
microsecond inside one), and demands exactly the outputs each stream gives on a codec of its own.

The streams are chosen so that, by design, neither side's answers depend on
the other's (no /join against a parted room): what is checked is that the
machinery under them (buffers, queues, published values) survives the
other thread, not the relay's ordering, which the integration tests cover.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from tests.codec_samples import norm
from tests.relayproc import UNIT
from transports.codec import ServerCodec
from transports.irc import IrcServerCodec
from transports.native import frame
from transports.registry import SERVER_CODECS
from transports.text import TextServerCodec
from transports.websocket import WebSocketServerCodec

ROUNDS = 3
LINES = 1500  # decode stream items per round
BODIES = 1500  # encode stream items per round


@dataclass(frozen=True)
class Case:
    make: Callable[[], ServerCodec]  # a codec ready for both streams
    decode: list[bytes]  # chunks, cut at odd places
    encode: list[tuple[str, dict[str, Any], Any]]  # (method, body, msg_id)


def _chunks(data: bytes) -> list[bytes]:
    """Cut `data` at sizes 1..97 in turn, so frames and lines straddle reads."""
    out, pos, size = [], 0, 1
    while pos < len(data):
        out.append(data[pos : pos + size])
        pos += size
        size = size % 97 + 1
    return out


def _bodies(i: int) -> list[dict[str, Any]]:
    """Relay bodies that change no state the decode side reads."""
    room = f"r{i % 7}"
    return [
        {"t": "msg", "room": "lobby", "from": f"bob{i % 5}", "text": f"hello {i}", "seq": i,
         "ts": 1},
        {"t": "presence", "room": room, "nick": f"carol{i}", "event": "join"},
        {"t": "joined", "room": room, "members": ["alice", f"dan{i}"], "seq": i},
        {"t": "msg", "room": room, "from": "alice", "text": f"mine {i}", "seq": i, "ts": 1},
        {"t": "parted", "room": room},
        {"t": "notice", "text": f"notice {i}"},
        {"t": "whisper", "from": "alice", "to": "bob", "text": f"psst {i}", "ts": 1},
        {"t": "whisper", "from": "bob", "to": "alice", "text": f"back {i}", "ts": 1},
        {"t": "ping", "id": i},
        {"t": "error", "code": "room_invalid", "text": "no", "ref": "join"},
    ]


def _encode_stream() -> list[tuple[str, dict[str, Any], Any]]:
    out: list[tuple[str, dict[str, Any], Any]] = []
    methods = ("encode", "encode_own", "fanout")
    for i in range(BODIES // 10):
        for j, body in enumerate(_bodies(i)):
            out.append((methods[(i + j) % 3], body, i if j % 2 else None))
    return out


# The four dialects ------------------------------------------------------------------


def _native() -> Case:
    bodies = [{"t": "say", "room": "lobby", "text": f"line {i}"} for i in range(LINES)]
    bodies[::50] = [{"t": "who", "room": "lobby"}] * len(bodies[::50])
    data = b"".join(frame(b) for b in bodies) + b"\x00\x00\x00\x05\xc1bad!"
    return Case(SERVER_CODECS["native"], _chunks(data), _encode_stream())


def _text_codec() -> TextServerCodec:
    codec = TextServerCodec(max_text=200)
    codec.encode({"t": "welcome", "v": 1, "nick": "alice", "server": "x"})
    codec.encode({"t": "joined", "room": "lobby", "members": ["alice"], "seq": 0})
    return codec


def _text() -> Case:
    kinds = [
        "hi there {i}", "/msg bob hello {i}", "/who", "/rooms", "/history lobby {i}",
        "/nick al{i}", "/ping", "//slash {i}", "/bogus{i}", "x" * 300, "/part r{i}", "   ",
    ]
    lines = [kinds[i % len(kinds)].format(i=i).encode() for i in range(LINES)]
    lines[7::40] = [b"\xff\xfe bad utf-8"] * len(lines[7::40])
    return Case(_text_codec, _chunks(b"\r\n".join(lines) + b"\n"), _encode_stream())


REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: relay.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: chat-relay.v1.json\r\n\r\n"
)


def _ws_codec() -> WebSocketServerCodec:
    codec = WebSocketServerCodec()
    codec.receive_data(REQUEST)
    codec.data_to_send()
    codec.encode({"t": "welcome", "v": 1, "nick": "alice", "server": "x"})
    return codec


def _ws() -> Case:
    client = ClientProtocol(parse_uri("ws://relay.local/ws"))
    request = client.connect()
    client.send_request(request)
    client.data_to_send()
    scratch = WebSocketServerCodec()  # answers the client's own key
    scratch.receive_data(request.serialize())
    client.receive_data(scratch.data_to_send())
    client.events_received()
    for i in range(LINES):
        say = json.dumps({"t": "say", "room": "lobby", "text": f"line {i}"}).encode()
        if i % 10 == 3:
            client.send_text(say[:7], fin=False)
            client.send_continuation(b"", fin=False)
            client.send_continuation(say[7:], fin=True)
        elif i % 10 == 5:
            client.send_ping(f"p{i}".encode())
        elif i % 10 == 7:
            client.send_text(b"{not json")
        else:
            client.send_text(say)
    return Case(_ws_codec, _chunks(b"".join(client.data_to_send())), _encode_stream())


def _irc_codec() -> IrcServerCodec:
    codec = IrcServerCodec(max_text=300, max_pending=64)
    codec.receive_data(b"NICK alice\r\nUSER alice 0 * :Alice\r\n")
    codec.encode({"t": "welcome", "v": 1, "nick": "alice", "server": "x"})
    codec.data_to_send()
    return codec


def _irc() -> Case:
    kinds = [
        "PRIVMSG #lobby :hi {i}", "PRIVMSG bob :psst {i}", "NAMES #r{i}", "WHO #lobby",
        "LIST", "PING :t{i}", "PONG :never{i}", "MODE alice", "WHOIS alice", "AWAY :x",
        "FROB {i}", "NOTICE #lobby :n{i}", "JOIN #bad!name", "PRIVMSG #lobby :" + "y" * 900,
    ]
    lines = [kinds[i % len(kinds)].format(i=i).encode() for i in range(LINES)]
    return Case(_irc_codec, _chunks(b"\r\n".join(lines) + b"\r\n"), _encode_stream())


CASES: dict[str, Callable[[], Case]] = {
    "native": _native, "text": _text, "ws": _ws, "irc": _irc,
}


# Running the streams --------------------------------------------------------------


def _run_decode(codec: ServerCodec, chunks: list[bytes], start: threading.Barrier | None,
                out: list[Any]) -> None:
    if start is not None:
        start.wait()
    for chunk in chunks:
        out.append((norm(codec.receive_data(chunk)), codec.data_to_send()))
        if start is not None:
            time.sleep(0)  # hand the GIL over: the streams interleave item by item


def _run_encode(codec: ServerCodec, stream: list[tuple[str, dict[str, Any], Any]],
                start: threading.Barrier | None, out: list[Any]) -> None:
    if start is not None:
        start.wait()
    for method, body, msg_id in stream:
        if method == "encode":
            out.append(codec.encode(body))
        elif method == "encode_own":
            out.append(codec.encode_own(body, msg_id))
        else:
            key = codec.fanout_key(str(body.get("room", "")))
            out.append((key, type(codec).encode_fanout(body, key)))
        if start is not None:
            time.sleep(0)


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Make the interpreter switch threads every microsecond, not every 5 ms."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def test_every_server_codec_has_a_case() -> None:
    assert set(CASES) == set(SERVER_CODECS)


@pytest.mark.parametrize("dialect", sorted(CASES))
def test_decode_and_encode_at_once_give_the_single_threaded_outputs(
    dialect: str, fast_switching: None
) -> None:
    case = CASES[dialect]()
    want_decoded: list[Any] = []
    want_encoded: list[Any] = []
    _run_decode(case.make(), case.decode, None, want_decoded)
    _run_encode(case.make(), case.encode, None, want_encoded)
    assert any(items for items, _ in want_decoded) and any(want_encoded)
    for _ in range(ROUNDS):
        codec = case.make()
        decoded: list[Any] = []
        encoded: list[Any] = []
        start = threading.Barrier(2)
        threads = [
            threading.Thread(target=_run_decode, args=(codec, case.decode, start, decoded)),
            threading.Thread(target=_run_encode, args=(codec, case.encode, start, encoded)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30 * UNIT)
            assert not thread.is_alive(), f"{dialect}: a stream did not finish in time"
        assert decoded == want_decoded
        assert encoded == want_encoded
