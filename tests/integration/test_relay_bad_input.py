"""Bad input costs only its sender: PROTOCOL.md's error, the relay goes on."""

from __future__ import annotations

import struct
import time

import msgpack

from tests.conftest import RelayFactory
from tests.relayproc import RelayProcess
from tests.wire import NativePeer, TextPeer
from transports.native import frame


def test_errors_before_hello_are_not_ready(relay: RelayProcess) -> None:
    p = NativePeer(relay.port)
    p.send({"t": "say", "room": "lobby", "text": "hi"})
    assert p.expect_error("not_ready")["ref"] == "say"
    p.send({"t": "frobnicate"})
    p.expect_error("not_ready")
    p.send({"t": "hello", "v": 1, "nick": "bad nick!"})
    p.expect_error("nick_invalid")
    p.send({"t": "hello", "v": 1, "nick": "fine"})
    p.expect(lambda b: b.get("t") == "welcome")


def test_bad_frames_keep_the_connection(relay: RelayProcess) -> None:
    bystander = NativePeer.joined(relay.port, "bystander")
    p = NativePeer.joined(relay.port, "messy")
    body = msgpack.packb([1, 2, 3])
    p.send_raw(struct.pack(">I", len(body)) + body)
    p.expect_error("bad_frame")
    p.send_raw(struct.pack(">I", 3) + b"\xc1\xc1\xc1")  # never-used msgpack bytes
    p.expect_error("bad_frame")
    p.send_raw(frame({"t": 5}))
    p.expect_error("bad_frame")
    p.send({"t": "dance"})
    assert p.expect_error("unknown_type")["ref"] == "dance"
    p.send({"t": "say", "room": "lobby"})
    p.expect_error("bad_field")
    p.send({"t": "join", "room": "no spaces"})
    p.expect_error("room_invalid")
    p.send({"t": "say", "room": "lobby", "text": "x" * 4097})
    p.expect_error("text_too_long")
    p.send({"t": "hello", "v": 1, "nick": "again"})
    p.expect_error("bad_field")
    p.send({"t": "ping", "id": 9})
    assert p.expect(lambda b: b.get("t") == "pong")["id"] == 9
    p.send({"t": "say", "room": "lobby", "text": "x" * 4096, "extra": "ignored"})
    assert p.msgs("lobby", 1)[0]["text"] == "x" * 4096
    assert bystander.msgs("lobby", 1)[0]["from"] == "messy"


def test_frame_too_large_closes_only_that_connection(relay: RelayProcess) -> None:
    other = NativePeer.joined(relay.port, "other")
    p = NativePeer.joined(relay.port, "huge")
    p.send_raw(struct.pack(">I", 65537))
    p.expect_error("frame_too_large")
    p.wait_closed()
    # A frame of exactly the limit passes the length check (and is then judged).
    q = NativePeer.joined(relay.port, "edge")
    filler = 65536 - len(msgpack.packb({"t": "ping", "pad": ""}))
    body = msgpack.packb({"t": "ping", "pad": "p" * (filler - 2)})
    assert len(body) == 65536, len(body)
    q.send_raw(struct.pack(">I", len(body)) + body)
    q.expect(lambda b: b.get("t") == "pong")
    other.send({"t": "say", "room": "lobby", "text": "still fine"})
    assert other.msgs("lobby", 1)[0]["text"] == "still fine"


def test_bye_closes_after_flushing(relay: RelayProcess) -> None:
    p = NativePeer.joined(relay.port, "leaver")
    p.send({"t": "say", "room": "lobby", "text": "last words"})
    p.send({"t": "bye"})
    assert p.msgs("lobby", 1)[0]["text"] == "last words"
    p.wait_closed()


def test_rate_limit_drops_with_one_notice_a_second(relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=1, args=["--rate-limit", "5", "--rate-burst", "3"])
    p = NativePeer.joined(relay.port, "spammy")  # the hello spent one of three tokens
    for i in range(6):
        p.send({"t": "say", "room": "lobby", "text": f"s{i}"})
    assert p.expect_error("rate_limited")["ref"] == "say"
    assert [m["text"] for m in p.msgs("lobby", 2)] == ["s0", "s1"]
    rest = p.drain(0.3)
    assert not [b for b in rest if b.get("code") == "rate_limited"], rest  # one notice, 4 drops
    assert not [b for b in rest if b.get("t") == "msg"], rest
    time.sleep(1.1)  # the notice interval (and the bucket refills 3 tokens)
    for i in range(4):
        p.send({"t": "say", "room": "lobby", "text": f"t{i}"})
    assert p.expect_error("rate_limited")["ref"] == "say"
    assert [m["text"] for m in p.msgs("lobby", 3)] == ["t0", "t1", "t2"]


def test_text_dialect_bad_input(relay: RelayProcess) -> None:
    t = TextPeer(relay.port)
    t.expect_text("welcome")
    t.send_line("x" * 5000)
    t.expect(lambda line: line.startswith("* error:") and "5000" in line)
    t.send_line(b"\xff\xfe bad utf8")
    t.expect(lambda line: line.startswith("* error:"))
    t.send_line("/frob")
    t.expect(lambda line: line.startswith("* error:") and "/help" in line)
    t.send_line("/join bad room name")
    t.expect(lambda line: line.startswith("* error:"))
    t.send_line("/who")
    t.expect_text("members of lobby")


def test_unsupported_dialect_gets_one_clear_line(relay: RelayProcess) -> None:
    import socket

    # A dialect the registry lacks must answer in words, not hang or crash.
    from transports.registry import SERVER_CODECS

    if "ws" in SERVER_CODECS and "irc" in SERVER_CODECS:
        return
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" if "ws" not in SERVER_CODECS
              else b"NICK x\r\nUSER x 0 * :x\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    assert b"not supported yet" in data
