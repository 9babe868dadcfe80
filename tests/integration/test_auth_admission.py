"""Issue 19: password guessing (relay-wide blocks), admission at accept, sniffing.

Real relay processes on loopback; every wait has a deadline.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.config import Settings
from relay.hub.process import Hub
from relay.worker.process import Worker
from tests.conftest import RelayFactory
from tests.relayproc import UNIT
from tests.wire import NativePeer, TextPeer, worker_of
from transports.native import frame

PASSWORD = "s3cret"


def hello(peer: NativePeer, password: str, nick: str = "eve") -> dict[str, object]:
    peer.send({"t": "hello", "v": 1, "nick": nick, "password": password})
    return peer.expect(lambda m: m.get("t") in ("welcome", "error"))


# Item 2: password guessing ----------------------------------------------------


def test_three_wrong_passwords_close_native_with_growing_delay(
        relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=1, args=["--password", PASSWORD, "--auth-delay", "0.2",
                                           "--auth-failures", "100"])
    p = NativePeer(relay.port)
    waited = []
    for _ in range(3):
        t0 = time.monotonic()
        reply = hello(p, "guess")
        waited.append(time.monotonic() - t0)
        assert reply["code"] == "auth_failed"
    assert "3 times; closing" in str(reply["text"])
    p.wait_closed()
    # 0.2 s, 0.4 s, 0.8 s: each answer waits longer (lower bounds only).
    assert waited[0] >= 0.19 and waited[1] >= 0.39 and waited[2] >= 0.79
    # Two wrong ones leave the connection open: the right one then gets in.
    q = NativePeer(relay.port)
    assert hello(q, "guess")["code"] == "auth_failed"
    assert hello(q, "")["code"] == "auth_failed"
    assert hello(q, PASSWORD)["t"] == "welcome"


def test_three_wrong_passwords_close_text_irc_and_oper(relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=1, args=["--password", PASSWORD, "--oper-password", "opw",
                                           "--auth-delay", "0.01", "--auth-failures", "100"])
    t = TextPeer(relay.port)
    t.expect_text("needs a password")
    for _ in range(3):
        t.send_line("/pass guess")
        line = t.expect_text("wrong password")
    assert "3 times; closing" in line
    _wait_eof(t.sock)

    irc = TextPeer(relay.port)
    for i in range(3):
        irc.send_line(f"PASS guess\r\nNICK irc{i}\r\nUSER u 0 * :U")
        irc.expect(lambda line: " 464 " in line)
    _wait_eof(irc.sock)

    op = NativePeer(relay.port)
    assert hello(op, PASSWORD, "op")["t"] == "welcome"
    for _ in range(3):
        op.send({"t": "oper", "password": "guess"})
        err = op.expect_error("auth_failed")
        assert err["ref"] == "oper"
    assert "3 times; closing" in str(err["text"])
    op.wait_closed()


def _wait_eof(sock: socket.socket, timeout: float = 5.0) -> None:
    """Read until the relay closes; fail if it does not within the deadline."""
    deadline = time.monotonic() + timeout * UNIT
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "connection still open"
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return
        except TimeoutError:
            continue
        except OSError:
            return


def test_block_is_relay_wide_on_every_worker_and_logged_once(
        relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=2, args=["--password", PASSWORD, "--auth-delay", "0",
                                           "--auth-failures", "5", "--auth-block", "60",
                                           "--hello-timeout", "60"])
    workers = set(relay.worker_pids())
    assert len(workers) == 2
    # Connections on both workers: some make the failures, one on each waits.
    peers: dict[int, list[NativePeer]] = {w: [] for w in workers}
    for _ in range(200):
        if all(len(v) >= 4 for v in peers.values()):
            break
        peer = NativePeer(relay.port)
        peer.send_raw(b"\x00")  # native, in its handshake
        w = worker_of(relay.pid, peer.local_port)
        if len(peers[w]) < 4:
            peers[w].append(peer)
        else:
            peer.close()
    assert all(len(v) >= 4 for v in peers.values())
    a, b = peers.values()
    failing = [a[0], b[0], a[1], b[1], a[2]]  # 5 failures, 3 on one worker, 2 on the other
    for p in failing:
        p.send_raw(_hello_bytes("guess")[1:])
        assert p.expect(lambda m: m.get("t") == "error")["code"] == "auth_failed"

    def refused_new() -> bool:
        q = NativePeer(relay.port)
        try:
            q.send({"t": "hello", "v": 1, "nick": "late", "password": PASSWORD})
            reply = q.expect(lambda m: m.get("t") in ("welcome", "error"))
            return reply.get("code") == "too_many_connections" and "blocked" in str(
                reply["text"])
        finally:
            q.close()

    relay.wait_for(refused_new, timeout=5)
    # Existing connections on BOTH workers: even the right password is refused now.
    for p in (a[3], b[3]):
        p.send_raw(_hello_bytes(PASSWORD)[1:])
        err = p.expect_error("auth_failed")
        assert "blocked" in str(err["text"])
        p.wait_closed()
    # New connections on both workers are refused at accept.
    seen: set[int] = set()
    for _ in range(60):
        if seen == workers:
            break
        q = NativePeer(relay.port)
        q.send({"t": "hello", "v": 1, "nick": "late", "password": PASSWORD})
        assert "blocked" in str(q.expect_error("too_many_connections")["text"])
        seen.add(worker_of(relay.pid, q.local_port))  # still lingering in the pen
        q.close()
    assert seen == workers
    blocks = [line for line in relay.output if "blocking 127.0.0.1" in line]
    assert len(blocks) == 1, blocks


def _hello_bytes(password: str) -> bytes:
    return frame({"t": "hello", "v": 1, "nick": "eve", "password": password})


# Item 6: admission first -------------------------------------------------------


def test_max_handshakes_at_the_bound(relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=1, args=["--max-handshakes", "2", "--hello-timeout", "30"])
    first, second = NativePeer(relay.port), NativePeer(relay.port)
    for p in (first, second):
        p.send_raw(b"\x00")  # native, hello not yet sent
    third = NativePeer(relay.port)
    third.send({"t": "hello", "v": 1, "nick": "third"})
    assert "handshake" in str(third.expect_error("too_many_connections")["text"])
    third.wait_closed()
    # Once one of the two is past hello, a new one fits.
    first.send_raw(_hello_bytes("")[1:])
    first.expect(lambda m: m.get("t") == "welcome")

    def admitted() -> bool:
        q = NativePeer(relay.port)
        q.send({"t": "hello", "v": 1, "nick": "fourth"})
        reply = q.expect(lambda m: m.get("t") in ("welcome", "error"))
        q.close()
        return reply["t"] == "welcome"

    relay.wait_for(admitted, timeout=5)
    # A text client is past its handshake once it is greeted: one after
    # another, they all fit through the one free place.
    texts: list[TextPeer] = []

    def greeted() -> bool:
        t = TextPeer(relay.port)
        line = t.expect(lambda line: "you joined lobby" in line or "* error" in line)
        texts.append(t)
        return "you joined lobby" in line

    for _ in range(3):  # a closed peer's place frees when its reader notices
        relay.wait_for(greeted, timeout=5)


def test_refused_at_accept_in_each_dialect(relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=1, args=["--max-per-ip", "1"])
    keep = NativePeer.joined(relay.port, "holder")
    native = NativePeer(relay.port)
    native.send({"t": "hello", "v": 1, "nick": "second"})
    assert "127.0.0.1" in str(native.expect_error("too_many_connections")["text"])
    text = TextPeer(relay.port)  # silent: after 300 ms it is text
    assert text.expect_text("* error:").count("too many connections") == 1
    irc = TextPeer(relay.port)
    irc.send_line("NICK x")
    assert irc.expect_text("ERROR :Closing Link").count("too_many_connections") == 1
    ws = TextPeer(relay.port)
    ws.send_line("GET /ws HTTP/1.1\r")
    assert ws.expect_text("HTTP/1.1 503")
    keep.close()


def test_tls_handshake_timeout_at_the_bound(relay_factory: RelayFactory,
                                             tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    cert = trustme.CA().issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    relay = relay_factory(workers=1, args=["--tls-cert", str(cert_file), "--tls-key",
                                           str(key_file), "--tls-handshake-timeout", "1.0"])
    for first in (b"", b"\x16\x03\x01\x02\x00"):  # silent; a ClientHello that stalls
        sock = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
        t0 = time.monotonic()
        sock.sendall(first)
        _wait_eof(sock)
        waited = time.monotonic() - t0
        assert 0.9 <= waited < 3.0 * UNIT, waited
        sock.close()


@pytest.fixture
def inproc_worker(tmp_path: Path) -> Iterator[tuple[Worker, int]]:
    """A hub and one worker in this process, so the test controls thread creation."""
    settings = Settings(workers=1, rate_limit=0, hello_timeout=10)
    hub = Hub(settings, f"ipc://{tmp_path}/hub")
    hub_thread = threading.Thread(target=hub.run, daemon=True)
    hub_thread.start()
    listener = socket.create_server(("127.0.0.1", 0))
    worker = Worker(settings, "w-test", hub.endpoint, listener.detach(), 1)
    worker.bus.start()
    assert worker.wait_ready(10 * UNIT)
    serving = threading.Thread(target=worker.serve, daemon=True)
    serving.start()
    yield worker, worker.listener.getsockname()[1]
    worker.stop()
    serving.join(5)
    worker.bus.stop()
    worker.bus.stopped.wait(5)
    hub.running = False
    hub_thread.join(5)


def test_failed_thread_start_closes_that_socket_and_the_worker_goes_on(
        inproc_worker: tuple[Worker, int]) -> None:
    worker, port = inproc_worker
    # A stack no machine can map: the kernel refuses the thread, for real.
    threading.stack_size(1 << 44)
    try:
        lost = socket.create_connection(("127.0.0.1", port), timeout=5)
        _wait_eof(lost)
        lost.close()
    finally:
        threading.stack_size(0)
    deadline = time.monotonic() + 5 * UNIT
    while worker.total and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.total == 0 and worker.handshakes == 0  # its place was given back
    peer = NativePeer.joined(port, "afterwards")
    peer.send({"t": "say", "room": "lobby", "text": "served"})
    assert peer.msgs("lobby", 1)[0]["text"] == "served"
    peer.close()


# Item 7: sniffing ----------------------------------------------------------------


def test_tls_client_hello_on_plain_port_closed_and_posts_nothing(
        relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=1)
    bystander = NativePeer.joined(relay.port, "bystander")
    hello_bytes = bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) + b"\x00" * 64
    for data in (hello_bytes, b"\xff\xfe\x00\x01binary\x00\x02\n", b"\x01\x02\x03\x04"):
        sock = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
        sock.sendall(data)
        got = b""
        deadline = time.monotonic() + 5 * UNIT
        while time.monotonic() < deadline:
            sock.settimeout(deadline - time.monotonic())
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            got += chunk
        sock.close()
        if data is hello_bytes:
            assert got == b""  # closed at once, not one byte written
        else:
            assert got.startswith(b"* error: the first bytes are not UTF-8 text")
            assert b"guest" not in got
    # A text client after them is the only guest the bystander ever hears of.
    t = TextPeer(relay.port)
    t.expect_text("you joined lobby")
    t.send_line("hi")
    said = bystander.expect(lambda m: m.get("t") == "msg")
    assert said["text"] == "hi"
    heard = [m for m in bystander.inbox + bystander.drain() if isinstance(m, dict)]
    assert {m["nick"] for m in heard if m.get("t") == "presence"} <= {"bystander", said["from"]}
    assert not [m for m in heard if m.get("t") == "msg"]
