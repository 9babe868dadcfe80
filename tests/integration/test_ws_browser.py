"""What a browser may do with the WebSocket dialect: Origin checks, the page's CSP,
and the per-message fragment bound.

Sans-I/O against the codec first (requests written out by hand, so each header
is the one under test), then the same rules on a real relay with the
`websockets` client, which sends the Origin it is given.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.sync.client import connect
from websockets.typing import Origin
from websockets.uri import parse_uri

from relay.config import Settings
from tests.relayproc import UNIT, RelayProcess
from transports.errors import ProtocolError
from transports.events import Hello, Say
from transports.websocket import DEFAULT_MAX_FRAGMENTS, WebSocketServerCodec
from transports.ws_http import webpage_file

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
HELLO = {"t": "hello", "v": 1, "nick": "alice", "rooms": ["lobby"]}


def upgrade(
    codec: WebSocketServerCodec, host: str = "relay.local:8081", *extra: str
) -> bytes:
    """Send a /ws upgrade with `extra` header lines; the codec's answer."""
    head = [
        "GET /ws HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    assert codec.receive_data(("\r\n".join(head) + "\r\n\r\n").encode()) == []
    return codec.data_to_send()


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# Origin --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "https://evil.example",
        "http://relay.local:9999",  # the right host, another port: another site
        "http://relay.local.evil.example:8081",
        "null",  # sandboxed frames and file:// pages
        "ws://relay.local:8081",  # browsers send http(s) origins only
        "http://relay.local:8081/path",
    ],
)
def test_a_foreign_origin_gets_403_and_no_websocket(origin: str) -> None:
    codec = WebSocketServerCodec()
    answer = upgrade(codec, "relay.local:8081", f"Origin: {origin}")
    assert status(answer) == 403
    assert b"--allowed-origins" in answer
    assert not codec.is_open and codec.closed
    # Frames sent after the refused upgrade decode to nothing.
    client = _open_client()
    client.send_text(json.dumps(HELLO).encode())
    assert codec.receive_data(b"".join(client.data_to_send())) == []
    assert codec.encode({"t": "notice", "text": "x"}) == b""


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("relay.local:8081", "http://relay.local:8081"),
        ("relay.local:8081", "https://relay.local:8081"),
        ("Relay.Local:8081", "http://relay.local:8081"),
        ("relay.local", "http://relay.local"),
        ("relay.local:80", "http://relay.local"),  # a default port is left out of Origin
        ("relay.local:443", "https://relay.local"),
        ("127.0.0.1:8081", "http://127.0.0.1:8081"),
        ("[::1]:8081", "http://[::1]:8081"),
    ],
)
def test_the_pages_own_origin_is_admitted(host: str, origin: str) -> None:
    codec = WebSocketServerCodec()
    assert status(upgrade(codec, host, f"Origin: {origin}")) == 101
    assert codec.is_open


def test_no_origin_is_a_non_browser_client_and_is_admitted() -> None:
    codec = WebSocketServerCodec()
    assert status(upgrade(codec)) == 101
    assert codec.is_open


def test_two_origin_headers_are_refused() -> None:
    codec = WebSocketServerCodec()
    answer = upgrade(codec, "relay.local:8081", "Origin: http://relay.local:8081",
                     "Origin: http://evil.example")
    assert status(answer) == 403


def test_allowed_origins_admit_the_listed_ones_only() -> None:
    allowed = " http://a.example, HTTPS://B.example:443/ "
    for origin, expected in [
        ("http://a.example", 101),
        ("https://b.example", 101),
        ("https://a.example", 403),  # another scheme is another origin
        ("http://c.example", 403),
    ]:
        codec = WebSocketServerCodec(allowed_origins=allowed)
        assert status(upgrade(codec, "relay.local:8081", f"Origin: {origin}")) == expected, origin
    # The page's own origin stays admitted with a list.
    codec = WebSocketServerCodec(allowed_origins=allowed)
    assert status(upgrade(codec, "relay.local:8081", "Origin: http://relay.local:8081")) == 101


def test_a_star_admits_every_origin() -> None:
    codec = WebSocketServerCodec(allowed_origins="*")
    assert status(upgrade(codec, "relay.local:8081", "Origin: http://evil.example")) == 101


def test_configured_takes_the_relay_settings() -> None:
    settings = Settings(allowed_origins="http://a.example", max_fragments=3, max_frame=100)
    codec = WebSocketServerCodec.configured(settings)
    assert (codec.max_frame, codec.max_fragments) == (100, 3)
    assert status(upgrade(codec, "relay.local:8081", "Origin: http://a.example")) == 101
    assert Settings().max_fragments == DEFAULT_MAX_FRAGMENTS


# The page's headers ---------------------------------------------------------------


def _headers(path: str) -> dict[str, str]:
    codec = WebSocketServerCodec()
    codec.receive_data(f"GET {path} HTTP/1.1\r\nHost: relay.local\r\n\r\n".encode())
    head = codec.data_to_send().partition(b"\r\n\r\n")[0].decode()
    return dict(line.split(": ", 1) for line in head.split("\r\n")[1:])


@pytest.mark.parametrize("path", ["/", "/app.js", "/style.css", "/nope", "/ws"])
def test_every_response_carries_csp_and_nosniff(path: str) -> None:
    headers = _headers(path)
    csp = {d.split()[0]: d.split()[1:] for d in headers["Content-Security-Policy"].split("; ")}
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval'
    assert csp["connect-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"


def test_the_page_has_no_inline_script_or_style() -> None:
    html = webpage_file("index.html").decode()
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/app.js">']
    assert not re.search(r"\son[a-z]+=", html)  # onclick= and friends
    assert " style=" not in html and "<style" not in html


# Fragments per message ----------------------------------------------------------


def _open_client() -> ClientProtocol:
    """A client state machine that believes its handshake succeeded."""
    client = ClientProtocol(parse_uri("ws://relay.local/ws"))
    request = client.connect()
    client.send_request(request)
    client.data_to_send()
    scratch = WebSocketServerCodec()
    scratch.receive_data(request.serialize())
    client.receive_data(scratch.data_to_send())
    client.events_received()
    return client


def _fragmented(client: ClientProtocol, text: bytes, frames: int) -> bytes:
    """`text` in `frames` frames: the first holds it all, then empty continuations."""
    client.send_text(text, fin=frames == 1)
    for i in range(1, frames):
        client.send_continuation(b"", fin=i == frames - 1)
    return b"".join(client.data_to_send())


@pytest.mark.parametrize("limit", [1, 2, 16])
def test_a_message_in_exactly_max_fragments_frames_is_taken(limit: int) -> None:
    codec = WebSocketServerCodec(max_fragments=limit)
    upgrade(codec)
    client = _open_client()
    assert codec.receive_data(_fragmented(client, json.dumps(HELLO).encode(), limit)) == [
        Hello(nick="alice", rooms=("lobby",))
    ]
    say = json.dumps({"t": "say", "room": "lobby", "text": "again"}).encode()
    assert codec.receive_data(_fragmented(client, say, limit)) == [Say("lobby", "again")]


def test_one_frame_more_is_frame_too_large_and_a_1009_close() -> None:
    codec = WebSocketServerCodec(max_fragments=16)
    upgrade(codec)
    client = _open_client()
    say = json.dumps({"t": "say", "room": "lobby", "text": "x"}).encode()
    out = codec.receive_data(_fragmented(client, say, 17) + _fragmented(client, say, 1))
    assert len(out) == 1, out  # the frames after the fatal one are not read
    err = out[0]
    assert isinstance(err, ProtocolError) and err.code == "frame_too_large" and err.fatal
    assert "16" in err.text
    assert codec.closed
    data = codec.data_to_send() + codec.encode(err.body())
    client.receive_data(data)
    frames = client.events_received()
    assert json.loads(frames[0].data)["code"] == "frame_too_large"
    assert frames[1].opcode is Opcode.CLOSE
    assert Close.parse(frames[1].data).code == CloseCode.MESSAGE_TOO_BIG


def test_empty_continuations_cannot_pile_up_in_small_reads() -> None:
    """The default bound, fed 6 bytes (one empty frame) at a time."""
    codec = WebSocketServerCodec()
    upgrade(codec)
    client = _open_client()
    data = _fragmented(client, b'{"t":', DEFAULT_MAX_FRAGMENTS + 10)
    out: list[Any] = []
    for i in range(0, len(data), 6):
        out += codec.receive_data(data[i : i + 6])
    assert [e.code for e in out] == ["frame_too_large"]
    assert codec._fragments.held == 0 and codec._fragments.frames == 0


# On a real relay ---------------------------------------------------------------------


def _ws_status(port: int, origin: str | None) -> int:
    try:
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5 * UNIT,
                     origin=Origin(origin) if origin else None):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_relay_checks_origins(relay: RelayProcess) -> None:
    port = relay.port
    assert _ws_status(port, "http://evil.example") == 403
    assert _ws_status(port, f"http://127.0.0.1:{port}") == 101
    assert _ws_status(port, None) == 101


def test_relay_allowed_origins_flag(relay_factory: Any) -> None:
    relay = relay_factory(args=["--rate-limit", "0", "--allowed-origins", "http://a.example"])
    assert _ws_status(relay.port, "http://a.example") == 101
    assert _ws_status(relay.port, "http://b.example") == 403
    star = relay_factory(args=["--rate-limit", "0", "--allowed-origins", "*"])
    assert _ws_status(star.port, "http://b.example") == 101


def _client_after_101() -> Any:
    from transports.websocket_client import WebSocketClientCodec

    client = WebSocketClientCodec("relay.local", 8081)
    server = WebSocketServerCodec()
    server.receive_data(client.send(Hello("ann", ())))
    assert client.receive_data(server.data_to_send()) == []
    assert client.open
    return client


def _server_fragments(payload: bytes, frames: int) -> bytes:
    out = [Frame(Opcode.TEXT, payload, fin=frames == 1).serialize(mask=False)]
    out += [Frame(Opcode.CONT, b"", fin=i == frames - 1).serialize(mask=False)
            for i in range(1, frames)]
    return b"".join(out)


def test_the_client_codec_bounds_fragments_alike() -> None:
    pong = json.dumps({"t": "pong"}).encode()
    client = _client_after_101()
    (event,) = client.receive_data(_server_fragments(pong, DEFAULT_MAX_FRAGMENTS))
    assert event.T == "pong"
    out = client.receive_data(_server_fragments(pong, DEFAULT_MAX_FRAGMENTS + 1)
                              + _server_fragments(pong, 1))
    assert len(out) == 1 and isinstance(out[0], ProtocolError) and out[0].fatal
    assert f"more than {DEFAULT_MAX_FRAGMENTS} fragments" in out[0].text
