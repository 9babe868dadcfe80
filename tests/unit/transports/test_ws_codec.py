"""WebSocket dialect, sans-I/O: the codec against websockets' own ClientProtocol.

No sockets: bytes go from a real RFC 6455 client state machine into the
codec and back, so handshakes, masking and framing are checked by an
independent implementation rather than by our own expectations.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Close, CloseCode, Opcode
from websockets.http11 import Response
from websockets.protocol import OPEN
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from transports.errors import ProtocolError
from transports.events import Bye, Hello, Say
from transports.websocket import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    WebSocketServerCodec,
)

HELLO = {"t": "hello", "v": 1, "nick": "alice", "rooms": ["lobby"]}


def new_client(subprotocols: list[str] | None = None, **kwargs: Any) -> ClientProtocol:
    return ClientProtocol(
        parse_uri("ws://relay.local/ws"),
        subprotocols=[Subprotocol(s) for s in subprotocols] if subprotocols else None,
        **kwargs,
    )


def pump_to_codec(client: ClientProtocol, codec: WebSocketServerCodec) -> list[Any]:
    return codec.receive_data(b"".join(client.data_to_send()))


def pump_to_client(codec_bytes: bytes, client: ClientProtocol) -> list[Any]:
    client.receive_data(codec_bytes)
    return client.events_received()


def handshake(
    subprotocols: list[str] | None = None, **kwargs: Any
) -> tuple[WebSocketServerCodec, ClientProtocol]:
    codec = WebSocketServerCodec()
    client = new_client(subprotocols, **kwargs)
    client.send_request(client.connect())
    assert pump_to_codec(client, codec) == []
    events = pump_to_client(codec.data_to_send(), client)
    assert isinstance(events[0], Response) and events[0].status_code == 101
    assert client.state is OPEN
    assert codec.is_open and not codec.closed
    return codec, client


def send_json(client: ClientProtocol, codec: WebSocketServerCodec, body: Any) -> list[Any]:
    client.send_text(json.dumps(body).encode())
    return pump_to_codec(client, codec)


def http_get(path: str, extra: str = "") -> tuple[WebSocketServerCodec, bytes]:
    codec = WebSocketServerCodec()
    request = f"GET {path} HTTP/1.1\r\nHost: relay.local\r\n{extra}\r\n".encode()
    assert codec.receive_data(request) == []
    return codec, codec.data_to_send()


# Handshake and subprotocols ---------------------------------------------------


def test_no_subprotocol_asked_means_json_without_answering_one() -> None:
    codec, client = handshake()
    assert client.subprotocol is None  # answering one not offered breaks browsers
    assert codec.subprotocol == JSON_SUBPROTOCOL
    assert codec.fanout_key("lobby") == JSON_SUBPROTOCOL
    assert send_json(client, codec, HELLO) == [Hello(nick="alice", rooms=("lobby",))]


@pytest.mark.parametrize("offered", [[JSON_SUBPROTOCOL], ["x-other", JSON_SUBPROTOCOL]])
def test_json_subprotocol(offered: list[str]) -> None:
    codec, client = handshake(offered)
    assert client.subprotocol == JSON_SUBPROTOCOL
    assert send_json(client, codec, HELLO)[0].nick == "alice"
    data = codec.encode({"t": "welcome", "v": 1, "nick": "alice", "server": "chat-relay/0"})
    (frame,) = pump_to_client(data, client)
    assert frame.opcode is Opcode.TEXT
    assert json.loads(frame.data) == {
        "t": "welcome", "v": 1, "nick": "alice", "server": "chat-relay/0"
    }


def test_msgpack_subprotocol() -> None:
    codec, client = handshake([MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL])
    assert client.subprotocol == MSGPACK_SUBPROTOCOL
    assert codec.fanout_key("lobby") == MSGPACK_SUBPROTOCOL
    client.send_binary(msgpack.packb(HELLO))
    assert pump_to_codec(client, codec) == [Hello(nick="alice", rooms=("lobby",))]
    client.send_binary(msgpack.packb({"t": "say", "room": "lobby", "text": "héllo", "id": 7}))
    assert pump_to_codec(client, codec) == [Say("lobby", "héllo", 7)]
    body = {"t": "msg", "room": "lobby", "seq": 1, "ts": 5, "from": "bob", "text": "hi"}
    (frame,) = pump_to_client(codec.encode(body), client)
    assert frame.opcode is Opcode.BINARY
    assert msgpack.unpackb(frame.data) == body


def test_unknown_subprotocol_is_refused_with_400() -> None:
    codec = WebSocketServerCodec()
    client = new_client(["x-chat"])
    client.send_request(client.connect())
    pump_to_codec(client, codec)
    (response,) = pump_to_client(codec.data_to_send(), client)
    assert response.status_code == 400
    assert b"chat-relay.v1.json" in response.body
    assert codec.closed


def test_permessage_deflate_is_never_negotiated() -> None:
    codec, client = handshake(extensions=[ClientPerMessageDeflateFactory()])
    assert client.extensions == []


def test_fanout_bytes_depend_on_body_and_subprotocol_only() -> None:
    body = {"t": "msg", "room": "lobby", "seq": 3, "ts": 9, "from": "bob", "text": "ü"}
    json_a, _ = handshake()
    json_b, _ = handshake([JSON_SUBPROTOCOL])
    packed, _ = handshake([MSGPACK_SUBPROTOCOL])
    shared = WebSocketServerCodec.encode_fanout(body, JSON_SUBPROTOCOL)
    assert json_a.encode(body) == json_b.encode(body) == shared
    assert packed.encode(body) == WebSocketServerCodec.encode_fanout(body, MSGPACK_SUBPROTOCOL)
    assert shared != packed.encode(body)


def test_encode_own_echoes_the_id_to_the_author_only() -> None:
    codec, client = handshake()
    body = {"t": "msg", "room": "lobby", "seq": 1, "ts": 1, "from": "alice", "text": "x"}
    (frame,) = pump_to_client(codec.encode_own(body, "m-1"), client)
    assert json.loads(frame.data)["id"] == "m-1"
    assert "id" not in body
    (frame,) = pump_to_client(codec.encode_own(body, None), client)
    assert "id" not in json.loads(frame.data)


# The web page and plain HTTP ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("/", b"text/html", b"<!doctype html>"),
        ("/?x=1", b"text/html", b"<!doctype html>"),
        ("/app.js", b"text/javascript", b"chat-relay.v1.json"),
        ("/style.css", b"text/css", b"@media"),
    ],
)
def test_page_is_served_then_the_connection_closes(
    path: str, content_type: bytes, marker: bytes
) -> None:
    codec, data = http_get(path)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Type: " + content_type in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert marker in body
    assert codec.closed


def test_page_names_no_cdn_and_uses_relative_assets() -> None:
    _, data = http_get("/")
    assert b"http://" not in data.partition(b"\r\n\r\n")[2]
    assert b"https://" not in data.partition(b"\r\n\r\n")[2]
    assert b'src="/app.js"' in data


@pytest.mark.parametrize("path", ["/nope", "/ws2", "/static/../../etc/passwd", "/favicon.ico"])
def test_other_paths_get_404(path: str) -> None:
    codec, data = http_get(path)
    assert data.startswith(b"HTTP/1.1 404 ")
    assert codec.closed


def test_ws_path_without_upgrade_gets_426() -> None:
    codec, data = http_get("/ws")
    assert data.startswith(b"HTTP/1.1 426 ")
    assert b"Upgrade: websocket" in data
    assert codec.closed


def test_garbage_request_closes_without_raising() -> None:
    codec = WebSocketServerCodec()
    assert codec.receive_data(b"GET \x00\xff nonsense\r\n\r\n") == []
    codec.data_to_send()
    assert codec.closed
    assert codec.receive_data(b"more") == []


# Whole, byte at a time, with trailing data ----------------------------------------


def _client_bytes(subprotocols: list[str] | None = None) -> tuple[ClientProtocol, bytes]:
    client = new_client(subprotocols)
    client.send_request(client.connect())
    request = b"".join(client.data_to_send())
    # Let the client believe the handshake succeeded so it frames for us.
    scratch = WebSocketServerCodec()
    scratch.receive_data(request)
    client.receive_data(scratch.data_to_send())
    client.events_received()
    client.send_text(json.dumps(HELLO).encode())
    client.send_text(json.dumps({"t": "say", "room": "lobby", "text": "one"}).encode())
    return client, request + b"".join(client.data_to_send())


@pytest.mark.parametrize("mode", ["whole", "bytewise", "trailing"])
def test_handshake_and_frames_in_any_split(mode: str) -> None:
    _, data = _client_bytes()
    codec = WebSocketServerCodec()
    events: list[Any] = []
    if mode == "whole":
        events += codec.receive_data(data)
    elif mode == "bytewise":
        for i in range(len(data)):
            events += codec.receive_data(data[i : i + 1])
    else:
        # The last frame arrives in two pieces: nothing for it until it is whole.
        events += codec.receive_data(data[:-3])
        assert events == [Hello(nick="alice", rooms=("lobby",))]
        events += codec.receive_data(data[-3:])
    assert events == [Hello(nick="alice", rooms=("lobby",)), Say("lobby", "one")]
    assert codec.data_to_send().startswith(b"HTTP/1.1 101 ")


def test_fragmented_message_is_reassembled() -> None:
    codec, client = handshake()
    text = json.dumps(HELLO).encode()
    client.send_text(text[:5], fin=False)
    client.send_continuation(text[5:9], fin=False)
    assert pump_to_codec(client, codec) == []
    client.send_continuation(text[9:], fin=True)
    assert pump_to_codec(client, codec) == [Hello(nick="alice", rooms=("lobby",))]


# Bad input ------------------------------------------------------------------------


def _error(events: list[Any]) -> ProtocolError:
    (err,) = events
    assert isinstance(err, ProtocolError)
    return err


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe not utf-8", b"{not json", b"[1, 2]", b'"hello"', b'{"t": 5}',
     b'{"t": "say", "room": "a", "text": "\\ud800"}', b"[" * 5000],
)
def test_bad_text_messages_get_bad_frame_and_the_connection_stays(payload: bytes) -> None:
    codec, client = handshake()
    # ClientProtocol.send_text validates nothing, so invalid UTF-8 goes out as is.
    client.send_text(payload)
    err = _error(pump_to_codec(client, codec))
    assert err.code == "bad_frame" and not err.fatal
    (frame,) = pump_to_client(codec.encode(err.body()), client)
    assert json.loads(frame.data)["code"] == "bad_frame"
    assert send_json(client, codec, HELLO) == [Hello(nick="alice", rooms=("lobby",))]
    assert not codec.closed


def test_wrong_message_kind_per_subprotocol() -> None:
    codec, client = handshake()
    client.send_binary(msgpack.packb(HELLO))
    assert "text messages" in _error(pump_to_codec(client, codec)).text
    codec, client = handshake([MSGPACK_SUBPROTOCOL])
    client.send_text(json.dumps(HELLO).encode())
    assert "binary messages" in _error(pump_to_codec(client, codec)).text
    client.send_binary(b"\xc1")
    assert _error(pump_to_codec(client, codec)).code == "bad_frame"


def test_protocol_rules_are_the_native_ones() -> None:
    codec, client = handshake()
    assert _error(send_json(client, codec, {"t": "dance"})).code == "unknown_type"
    assert _error(send_json(client, codec, {"t": "hello", "nick": "no spaces"})).code == (
        "nick_invalid"
    )
    long_text = {"t": "say", "room": "lobby", "text": "x" * 4097}
    assert _error(send_json(client, codec, long_text)).code == "text_too_long"


def test_oversize_message_gets_frame_too_large_then_close() -> None:
    codec, client = handshake()
    client.send_text(b'{"t":"say","room":"lobby","text":"' + b"x" * 70000 + b'"}')
    err = _error(pump_to_codec(client, codec))
    assert err.code == "frame_too_large" and err.fatal
    assert codec.closed
    # Nothing went out before the error: the close must follow it, not precede it.
    data = codec.data_to_send() + codec.encode(err.body())
    error_frame, close = pump_to_client(data, client)
    assert json.loads(error_frame.data)["code"] == "frame_too_large"
    assert close.opcode is Opcode.CLOSE
    assert Close.parse(close.data).code == CloseCode.MESSAGE_TOO_BIG
    assert codec.receive_data(b"\x81\x80abcd") == []


def test_limits_follow_the_constructor() -> None:
    codec = WebSocketServerCodec(max_frame=100, max_text=10)
    client = new_client()
    client.send_request(client.connect())
    pump_to_codec(client, codec)
    pump_to_client(codec.data_to_send(), client)
    assert _error(send_json(client, codec, {"t": "say", "room": "a", "text": "x" * 11})).code == (
        "text_too_long"
    )
    assert _error(send_json(client, codec, {"t": "say", "room": "a", "text": "x" * 99})).code == (
        "frame_too_large"
    )


def test_slow_consumer_error_closes_with_a_close_frame() -> None:
    codec, client = handshake()
    data = codec.encode({"t": "error", "code": "slow_consumer", "text": "behind"})
    error_frame, close = pump_to_client(data, client)
    assert Close.parse(close.data).code == CloseCode.POLICY_VIOLATION
    assert codec.closed
    assert codec.encode({"t": "pong"}) == b""  # nothing after a close frame


# Control frames and closing ---------------------------------------------------------


def test_ping_gets_pong() -> None:
    codec, client = handshake()
    client.send_ping(b"are you there")
    assert pump_to_codec(client, codec) == []
    (pong,) = pump_to_client(codec.data_to_send(), client)
    assert pong.opcode is Opcode.PONG and pong.data == b"are you there"


def test_client_close_is_echoed_and_closes() -> None:
    codec, client = handshake()
    client.send_close(CloseCode.NORMAL_CLOSURE, "done")
    assert pump_to_codec(client, codec) == []
    (close,) = pump_to_client(codec.data_to_send(), client)
    assert close.opcode is Opcode.CLOSE
    assert codec.closed


def test_bye_is_decoded_and_answered_with_a_close_frame() -> None:
    codec, client = handshake()
    assert send_json(client, codec, {"t": "bye"}) == [Bye()]
    assert codec.closed
    # Replies to what came before the bye still go out, then the Close frame.
    assert codec.data_to_send() == b""
    reply = codec.encode({"t": "members", "room": "lobby", "members": ["alice"]})
    (frame_, close) = pump_to_client(reply + codec.farewell(), client)
    assert json.loads(frame_.data)["t"] == "members"
    assert Close.parse(close.data).code == CloseCode.NORMAL_CLOSURE


def test_eof_closes() -> None:
    codec, _ = handshake()
    assert codec.receive_data(b"") == []
    assert codec.closed


# Property: nothing a peer sends raises --------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_random_bytes_never_raise_before_handshake(data: bytes, chunk: int) -> None:
    codec = WebSocketServerCodec()
    stream = b"GET " + data
    for i in range(0, len(stream), chunk):
        for item in codec.receive_data(stream[i : i + chunk]):
            assert isinstance(item, ProtocolError)
        assert isinstance(codec.data_to_send(), bytes)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([None, MSGPACK_SUBPROTOCOL]))
def test_random_bytes_never_raise_after_handshake(data: bytes, sub: str | None) -> None:
    codec, _ = handshake([sub] if sub else None)
    for item in codec.receive_data(data):
        if isinstance(item, ProtocolError):
            codec.encode(item.body())
    assert isinstance(codec.data_to_send(), bytes)


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
))
def test_random_json_values_decode_or_error(value: Any) -> None:
    codec, client = handshake()
    body = {"t": "say", "room": "lobby", "text": value} if not isinstance(value, dict) else value
    for item in send_json(client, codec, body):
        (frame,) = pump_to_client(
            codec.encode(item.body()) if isinstance(item, ProtocolError) else
            codec.encode({"t": "pong"}), client)
        assert frame.opcode is Opcode.TEXT


@pytest.mark.parametrize("after", [b"GET /x HTTP/1.1\r\n\r\n", b"\x00\xff garbage", b"\x89\x00"])
def test_bytes_pipelined_after_a_page_request_do_not_spoil_its_answer(after: bytes) -> None:
    codec = WebSocketServerCodec()
    assert codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + after) == []
    assert codec.data_to_send().startswith(b"HTTP/1.1 200 OK")
    assert codec.closed


def test_a_ping_pipelined_with_the_upgrade_is_answered_after_the_101() -> None:
    _, data = _client_bytes()
    request = data[: data.index(b"\r\n\r\n") + 4]
    codec = WebSocketServerCodec()
    # A masked ping with an empty payload, right behind the request.
    assert codec.receive_data(request + b"\x89\x80abcd") == []
    out = codec.data_to_send()
    assert out.startswith(b"HTTP/1.1 101 ")
    assert out.endswith(b"\x8a\x00")  # the pong comes after the handshake
