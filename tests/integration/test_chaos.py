"""Chaos: hundreds of misbehaving connections at once cost the relay nothing.

Against a running 2-worker relay, 200 connections (50 at a time, a few
seconds) do what broken clients, scanners and flaky networks do: random
bytes, truncated and oversized frames, half a frame and then silence, connect
and vanish, RST instead of FIN, invalid UTF-8 to the text dialect, garbage
after an HTTP or IRC opening. Afterwards every relay process must be the
same process as before (a worker that died and was restarted would hide a
crash), the relay must not have logged a traceback, and ordinary clients,
including one connected through all of it, are served as usual.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import RelayFactory
from tests.relayproc import UNIT, RelayProcess
from tests.wire import NativePeer, TextPeer, read_for
from transports.native import frame

CONNECTIONS = 200
PARALLEL = 50
HELLO = frame({"t": "hello", "v": 1, "nick": "chaos", "rooms": ["lobby"]})

Action = Callable[[socket.socket, random.Random], None]


def _read_some(sock: socket.socket) -> None:
    """Read whatever the relay answers for a moment (bounded), so it is not an RST."""
    read_for(sock, 0.2)


def random_bytes(sock: socket.socket, rng: random.Random) -> None:
    sock.sendall(rng.randbytes(rng.randrange(1, 8192)))
    _read_some(sock)


def truncated_frame(sock: socket.socket, rng: random.Random) -> None:
    data = HELLO + frame({"t": "say", "room": "lobby", "text": "x" * rng.randrange(200)})
    sock.sendall(data[: rng.randrange(1, len(data))])


def huge_length(sock: socket.socket, rng: random.Random) -> None:
    length = rng.choice((65537, 1 << 24 - 1, 0x00FFFFFF, rng.randrange(65537, 1 << 24)))
    sock.sendall(struct.pack(">I", length) + rng.randbytes(rng.randrange(0, 512)))
    _read_some(sock)


def bad_msgpack_after_hello(sock: socket.socket, rng: random.Random) -> None:
    nick = f"c{rng.randrange(1 << 30)}"
    sock.sendall(frame({"t": "hello", "v": 1, "nick": nick}))
    for _ in range(rng.randrange(1, 20)):
        body = rng.randbytes(rng.randrange(1, 64))
        sock.sendall(struct.pack(">I", len(body)) + body)
    _read_some(sock)


def connect_and_close(sock: socket.socket, rng: random.Random) -> None:
    pass


def rst_after_half_frame(sock: socket.socket, rng: random.Random) -> None:
    sock.sendall(HELLO[: rng.randrange(1, len(HELLO))])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def rst_at_once(sock: socket.socket, rng: random.Random) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def rst_mid_conversation(sock: socket.socket, rng: random.Random) -> None:
    nick = f"r{rng.randrange(1 << 30)}"
    sock.sendall(frame({"t": "hello", "v": 1, "nick": nick, "rooms": ["lobby", "chaos"]}))
    for i in range(rng.randrange(1, 30)):
        sock.sendall(frame({"t": "say", "room": "chaos", "text": f"{nick} {i}"}))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def text_invalid_utf8(sock: socket.socket, rng: random.Random) -> None:
    lines = [b"\xff\xfe\xfd", b"caf\xe9", b"\xed\xa0\x80 surrogate", b"\xc0\x80 overlong",
             b"/nick \xff", b"/join \x80\x80", b"ok line", b"x" * 5000]
    rng.shuffle(lines)
    time.sleep(0)  # the text dialect is chosen by the first byte; no need to wait for it
    sock.sendall(b"hi there\n" + b"\n".join(lines) + b"\n")
    _read_some(sock)


def text_no_newline_flood(sock: socket.socket, rng: random.Random) -> None:
    sock.sendall(b"a" * rng.randrange(4096, 65536))  # one endless line, never finished


def http_garbage(sock: socket.socket, rng: random.Random) -> None:
    sock.sendall(b"GET /ws HTTP/1.1\r\n" + rng.randbytes(rng.randrange(1, 2048)))
    _read_some(sock)


def irc_garbage(sock: socket.socket, rng: random.Random) -> None:
    sock.sendall(b"NICK " + rng.randbytes(rng.randrange(1, 600)) + b"\r\nUSER x 0 * :x\r\n"
                 + rng.randbytes(rng.randrange(1, 2048)))
    _read_some(sock)


ACTIONS: list[Action] = [
    random_bytes, truncated_frame, huge_length, bad_msgpack_after_hello, connect_and_close,
    rst_after_half_frame, rst_at_once, rst_mid_conversation, text_invalid_utf8,
    text_no_newline_flood, http_garbage, irc_garbage,
]


def _half_open(port: int, rng: random.Random) -> socket.socket:
    """Send half a frame (or half a line), then nothing: kept open until the checks end."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5 * UNIT)
    data = rng.choice((HELLO, b"half a line with no end", b"GET /ws HTTP/1.1\r\nHost: x"))
    sock.sendall(data[: max(1, len(data) // 2)])
    return sock


def _chaos(port: int, index: int, seed: int) -> str:
    rng = random.Random(seed * 1000 + index)
    action = ACTIONS[index % len(ACTIONS)]
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5 * UNIT)
    except OSError as exc:
        return f"connect failed: {exc}"
    try:
        action(sock, rng)
    except OSError:
        pass  # the relay may close on us mid-send (frame_too_large): that is its right
    finally:
        sock.close()
    return action.__name__


def _served(port: int, nick: str) -> None:
    """An ordinary native client: hello, say, its msg comes back; a text client too."""
    peer = NativePeer.joined(port, nick)
    peer.send({"t": "say", "room": "lobby", "text": f"{nick} is fine", "id": "ok"})
    got = peer.expect(lambda b: b.get("t") == "msg" and b.get("text") == f"{nick} is fine")
    assert got["from"] == nick and got["id"] == "ok"
    peer.close()
    text = TextPeer(port)
    text.expect_text("welcome")
    text.send_line("/who")
    text.expect_text("members of lobby")
    text.close()


@pytest.mark.timeout(60)
def test_chaos_leaves_every_process_alive_and_serving(relay_factory: RelayFactory) -> None:
    relay: RelayProcess = relay_factory(
        workers=2, args=["--rate-limit", "0", "--max-per-ip", "2000", "--hello-timeout", "3"])
    before = {p.pid for p in relay.children()}
    assert len(before) == 3, before  # hub + 2 workers
    bystander = NativePeer.joined(relay.port, "bystander", ["lobby", "chaos"])
    rng = random.Random(7)
    half_open = [_half_open(relay.port, rng) for _ in range(20)]

    stop = threading.Event()
    talked = [0]

    def talk() -> None:  # ordinary traffic all through the chaos
        while not stop.is_set() and talked[0] < 500:
            bystander.send({"t": "say", "room": "lobby", "text": f"b{talked[0]}"})
            talked[0] += 1
            stop.wait(0.01)

    talker = threading.Thread(target=talk)
    talker.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(PARALLEL) as pool:
            done = list(pool.map(lambda i: _chaos(relay.port, i, 7), range(CONNECTIONS)))
    finally:
        stop.set()
        talker.join(5)
    elapsed = time.monotonic() - started
    assert len(done) == CONNECTIONS
    assert elapsed < 30 * UNIT, f"{CONNECTIONS} chaos connections took {elapsed:.1f} s"
    refused = [d for d in done if d.startswith("connect failed")]
    assert not refused, refused[:3]

    # The bystander got every one of its own messages, in order, through all of it.
    mine = [bystander.expect(lambda m: m.get("t") == "msg" and m["from"] == "bystander", 15)
            for _ in range(talked[0])]
    assert [m["text"] for m in mine] == [f"b{i}" for i in range(talked[0])]
    assert [m["seq"] for m in mine] == sorted(m["seq"] for m in mine)

    # Same processes as before: none died (the supervisor would have replaced it).
    after = {p.pid for p in relay.children()}
    assert after == before, f"relay processes changed: {before} -> {after}"
    assert all(p.is_running() and p.status() != "zombie" for p in relay.children())
    _served(relay.port, "normal")
    for sock in half_open:  # still held open while the relay served others
        sock.close()
    _served(relay.port, "normal2")
    log = "".join(relay.output)
    assert "Traceback" not in log, log[-4000:]
