"""The client library (sync and asyncio) against a real relay.

Every wait has a deadline (scaled by CHAT_RELAY_TEST_UNIT); no fixed sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from clients import aio
from clients.errors import CannotConnect, ConnectionClosed, HandshakeError, RelayError
from clients.state import ConnectionLost, Incoming, Missed, Reconnected
from clients.sync import Client, connect
from tests.conftest import RelayFactory
from tests.relayproc import UNIT, RelayProcess
from tests.wire import worker_of
from transports.events import (
    Error,
    Joined,
    Msg,
    Presence,
    WhisperMsg,
)

HOST = "127.0.0.1"
E = TypeVar("E")


def next_event(
    client: Client, kind: type[E], pred: Callable[[E], bool] = lambda e: True, timeout: float = 5
) -> E:
    """The next event of `kind` matching `pred`, skipping others; fails at the deadline."""
    deadline = time.monotonic() + timeout * UNIT
    seen: list[Incoming] = []
    while (left := deadline - time.monotonic()) > 0:
        ev = client.recv(left)
        if isinstance(ev, kind) and pred(ev):
            return ev
        if ev is not None:
            seen.append(ev)
    raise AssertionError(f"no {kind.__name__} in time; saw {seen[-10:]!r}")


def wait_until(pred: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout * UNIT
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# Handshake -------------------------------------------------------------------


def test_hello_joins_rooms_and_reports_members(relay: RelayProcess) -> None:
    with connect(HOST, relay.port, "alice", rooms=("lobby", "dev")) as alice:
        assert alice.nick_name == "alice"
        assert alice.joined_rooms == ["lobby", "dev"]
        with connect(HOST, relay.port, "bob") as bob:
            joined = next_event(bob, Joined)
            assert joined.room == "lobby" and set(joined.members) == {"alice", "bob"}
            ev = next_event(alice, Presence, lambda p: p.nick == "bob")
            assert ev.event == "join" and ev.room == "lobby"


def test_hello_errors_carry_their_code(relay_factory: RelayFactory) -> None:
    relay = relay_factory(args=["--rate-limit", "0", "--password", "sesame"])
    with pytest.raises(HandshakeError) as info:
        connect(HOST, relay.port, "alice")
    assert info.value.code == "auth_failed"
    with connect(HOST, relay.port, "alice", password="sesame"):
        with pytest.raises(HandshakeError) as info:
            connect(HOST, relay.port, "ALICE", password="sesame")  # case-insensitive
        assert info.value.code == "nick_taken"
    with pytest.raises(ValueError, match="nick must be"):
        connect(HOST, relay.port, "no spaces allowed", password="sesame")


def test_cannot_connect_names_address_and_cause() -> None:
    port = free_port()
    with pytest.raises(CannotConnect) as info:
        connect(HOST, port, "alice", timeout=2)
    assert str(info.value) == f"cannot connect to {HOST}:{port}: connection refused"


def test_guest_nick_when_none_given(relay: RelayProcess) -> None:
    with connect(HOST, relay.port) as guest:
        assert guest.nick_name.startswith("guest")
        assert guest.who("lobby") == (guest.nick_name,)


# Chat ------------------------------------------------------------------------


def test_say_fans_out_and_echoes_our_id_only_to_us(relay: RelayProcess) -> None:
    with connect(HOST, relay.port, "alice") as alice, connect(HOST, relay.port, "bob") as bob:
        msg_id = alice.say("lobby", "hello, bob")
        got = next_event(bob, Msg)
        mine = next_event(alice, Msg)
        assert (got.sender, got.text, got.room, got.seq) == ("alice", "hello, bob", "lobby", 1)
        assert got.id is None
        assert mine.id == msg_id and mine.seq == 1
        assert alice.flush(5 * UNIT)


def test_whisper_and_no_such_nick(relay: RelayProcess) -> None:
    with connect(HOST, relay.port, "alice") as alice, connect(HOST, relay.port, "bob") as bob:
        alice.whisper("bob", "psst")
        w = next_event(bob, WhisperMsg)
        assert (w.sender, w.to, w.text) == ("alice", "bob", "psst")
        back = next_event(alice, WhisperMsg)
        assert back.to == "bob"
        alice.whisper("nobody", "hello?")
        err = next_event(alice, Error)
        assert err.code == "no_such_nick"


def test_who_rooms_ping_and_not_in_room(relay: RelayProcess) -> None:
    with connect(HOST, relay.port, "alice") as alice, connect(HOST, relay.port, "bob") as bob:
        assert sorted(alice.who("lobby")) == ["alice", "bob"]
        assert bob.join("dev") == ("bob",)
        assert alice.rooms() == {"lobby": 2, "dev": 1}
        assert alice.ping() < 5 * UNIT
        with pytest.raises(RelayError) as info:
            alice.who("dev")
        assert info.value.code == "not_in_room"
        bob.part("dev")
        assert bob.joined_rooms == ["lobby"]


def test_history_pages(relay: RelayProcess) -> None:
    with connect(HOST, relay.port, "alice") as alice:
        for i in range(5):
            alice.say("lobby", f"m{i}")
        assert alice.flush(5 * UNIT)
        page = alice.history("lobby", limit=3)
        assert [m.seq for m in page.messages] == [3, 4, 5] and page.more
        page = alice.history("lobby", after=1, limit=2)
        assert [m.text for m in page.messages] == ["m1", "m2"]
        # A user's history query does not disturb live delivery.
        seqs = [next_event(alice, Msg).seq for _ in range(5)]
        assert seqs == [1, 2, 3, 4, 5]


def test_nick_change_and_taken(relay: RelayProcess) -> None:
    with connect(HOST, relay.port, "alice") as alice, connect(HOST, relay.port, "bob") as bob:
        assert alice.nick("alicia") == "alicia"
        assert alice.nick_name == "alicia"
        ev = next_event(bob, Presence, lambda p: p.event == "nick")
        assert (ev.nick, ev.new) == ("alice", "alicia")
        with pytest.raises(RelayError) as info:
            alice.nick("Bob")
        assert info.value.code == "nick_taken"
        alice.say("lobby", "renamed")
        assert next_event(bob, Msg).sender == "alicia"


def test_keepalive_pings_are_answered(relay_factory: RelayFactory) -> None:
    relay = relay_factory(args=["--rate-limit", "0", "--ping-interval", "0.2"])
    with connect(HOST, relay.port, "alice") as alice:
        # Two unanswered pings would close us; three answered ones prove we answer.
        wait_until(lambda: alice.session.keepalives >= 3)
        assert alice.connected
        assert alice.who("lobby") == ("alice",)


def test_thread_safe_sending(relay: RelayProcess) -> None:
    with connect(HOST, relay.port, "alice") as alice, connect(HOST, relay.port, "bob") as bob:
        def burst(tag: str) -> None:
            for i in range(50):
                alice.say("lobby", f"{tag}{i}")

        threads = [threading.Thread(target=burst, args=(t,)) for t in "abcd"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10 * UNIT)
        texts = [next_event(bob, Msg).text for _ in range(200)]
        assert sorted(texts) == sorted(f"{t}{i}" for t in "abcd" for i in range(50))
        assert alice.flush(5 * UNIT)


def test_tls(relay_factory: RelayFactory, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert(HOST)
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    relay = relay_factory(
        args=["--rate-limit", "0", "--tls-cert", str(cert_file), "--tls-key", str(key_file)]
    )
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    try:
        alice = connect(HOST, relay.port, "alice", tls=ctx)
    except CannotConnect as exc:
        if "WRONG_VERSION_NUMBER" in str(exc):
            pytest.skip("the relay accepts --tls-cert but does not speak TLS yet")
        raise
    with alice:
        alice.say("lobby", "secret")
        assert next_event(alice, Msg).text == "secret"
    with pytest.raises(CannotConnect, match="TLS"):
        connect(HOST, relay.port, "bob", tls=ssl.create_default_context())


# Reconnect and resume --------------------------------------------------------


def _on_other_worker(relay: RelayProcess, worker: int, nick: str) -> Client:
    """A client on another worker than `worker` (bounded tries; same worker is OK too)."""
    for i in range(20):
        client = connect(HOST, relay.port, f"{nick}{i}", reconnect=True)
        port = client.local_port
        assert port is not None
        if worker_of(relay.pid, port) != worker:
            return client
        client.close()
    return connect(HOST, relay.port, f"{nick}x", reconnect=True)


def test_reconnect_resumes_every_seq_exactly_once(relay: RelayProcess) -> None:
    rx = connect(HOST, relay.port, "rx", reconnect=True)
    port = rx.local_port
    assert port is not None
    worker = worker_of(relay.pid, port)
    tx = _on_other_worker(relay, worker, "tx")
    total = 300
    done = threading.Event()

    def send() -> None:
        for i in range(total):
            tx.say("lobby", f"n{i}")
            if i % 10 == 0:
                tx.ping()  # pace the sender so the kill lands mid-stream
        done.set()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    seqs: list[int] = []
    local: list[Incoming] = []
    deadline = time.monotonic() + 30 * UNIT
    killed = False
    final: int | None = None
    while final is None or (not seqs or seqs[-1] < final):
        assert time.monotonic() < deadline, f"stuck at {seqs[-1:]} of {final}"
        ev = rx.recv(0.2)
        if isinstance(ev, Msg):
            seqs.append(ev.seq)
            if len(seqs) == 30 and not killed:
                os.kill(worker, signal.SIGKILL)
                killed = True
        elif isinstance(ev, (ConnectionLost, Reconnected)):
            local.append(ev)
        if final is None and done.is_set():
            final = tx.history("lobby", limit=1).messages[-1].seq
    sender.join(5 * UNIT)
    assert killed
    assert [type(e) for e in local] == [ConnectionLost, Reconnected]
    assert seqs == list(range(1, final + 1))
    assert final >= total - 1  # a say in flight to a dying worker may be lost, no more
    wait_until(lambda: len(relay.worker_pids()) == 2 and worker not in relay.worker_pids())
    rx.close()
    tx.close()


def test_closed_client_raises_connection_closed(relay: RelayProcess) -> None:
    alice = connect(HOST, relay.port, "alice")
    alice.close()
    with pytest.raises(ConnectionClosed):
        alice.say("lobby", "too late")
    with pytest.raises(ConnectionClosed):
        while True:  # drain what was queued, then the close
            assert alice.recv(5 * UNIT) is not None


def test_without_reconnect_a_kill_ends_the_client(relay: RelayProcess) -> None:
    alice = connect(HOST, relay.port, "alice")
    port = alice.local_port
    assert port is not None
    os.kill(worker_of(relay.pid, port), signal.SIGKILL)
    with pytest.raises(ConnectionClosed):
        for _ in range(100):
            alice.recv(5 * UNIT)
    assert list(alice) == []


# asyncio ---------------------------------------------------------------------


async def _anext_msg(client: aio.AsyncClient, timeout: float = 5) -> Msg:
    async with asyncio.timeout(timeout * UNIT):
        while True:
            ev = await client.recv()
            if isinstance(ev, Msg):
                return ev


def test_async_client_chat(relay: RelayProcess) -> None:
    async def main() -> None:
        async with await aio.connect(HOST, relay.port, "alice") as alice:
            async with await aio.connect(HOST, relay.port, "bob", rooms=["lobby", "dev"]) as bob:
                msg_id = await alice.say("lobby", "hi bob")
                got, mine = await _anext_msg(bob), await _anext_msg(alice)
                assert (got.text, got.id, mine.id) == ("hi bob", None, msg_id)
                assert sorted(await alice.who("lobby")) == ["alice", "bob"]
                assert await alice.rooms() == {"lobby": 2, "dev": 1}
                page = await bob.history("lobby")
                assert [m.text for m in page.messages] == ["hi bob"]
                assert await alice.nick("alicia") == "alicia"
                with pytest.raises(RelayError):
                    await alice.who("dev")
                assert await alice.flush(5 * UNIT)
                assert await alice.ping() < 5 * UNIT
        with pytest.raises(HandshakeError) as info:
            async with await aio.connect(HOST, relay.port, "x", password="nope") as a:
                await a.who("lobby")
                async with await aio.connect(HOST, relay.port, "X"):
                    pass
        assert info.value.code == "nick_taken"

    asyncio.run(main())


def test_async_client_reconnects_and_resumes(relay: RelayProcess) -> None:
    async def main() -> None:
        rx = await aio.connect(HOST, relay.port, "rx", reconnect=True)
        tx = await aio.connect(HOST, relay.port, "tx", reconnect=True)
        for i in range(20):
            await tx.say("lobby", f"a{i}")
        seqs = [(await _anext_msg(rx)).seq for _ in range(20)]
        port = rx.local_port
        assert port is not None
        os.kill(worker_of(relay.pid, port), signal.SIGKILL)
        # While rx is away (or back), tx keeps talking; tx may itself be on
        # the killed worker, and then its says wait for its own reconnect.
        sent = 0
        async with asyncio.timeout(30 * UNIT):
            while rx.connected and sent < 200:
                await tx.say("lobby", f"b{sent}")
                sent += 1
                await asyncio.sleep(0)  # let rx's reader notice the loss
            for i in range(20):
                await tx.say("lobby", f"c{i}")
            await tx.flush()
            final = (await tx.history("lobby", limit=1)).messages[-1].seq
            while seqs[-1] < final:
                seqs.append((await _anext_msg(rx)).seq)
        assert seqs == list(range(1, final + 1))
        await rx.close()
        await tx.close()

    asyncio.run(main())


def test_resume_map_replays_and_reports_what_history_lost(relay_factory: RelayFactory) -> None:
    relay = relay_factory(args=["--rate-limit", "0", "--history", "5"])
    with connect(HOST, relay.port, "alice") as alice:
        for i in range(20):
            alice.say("lobby", f"m{i}")
        assert alice.flush(5 * UNIT)
        # A saved resume point inside history: an exact replay.
        with connect(HOST, relay.port, "bob", rooms=(), resume={"lobby": 17}) as bob:
            assert [next_event(bob, Msg).seq for _ in range(3)] == [18, 19, 20]
            assert bob.joined_rooms == ["lobby"]
        # One that history no longer reaches: an honest count, then what is left.
        with connect(HOST, relay.port, "carol", rooms=(), resume={"lobby": 1}) as carol:
            missed = next_event(carol, Missed)
            assert (missed.count, missed.first, missed.last) == (14, 2, 15)
            assert [next_event(carol, Msg).seq for _ in range(5)] == [16, 17, 18, 19, 20]
            # A user's query past history's reach still gets its page.
            page = carol.history("lobby", after=1, limit=10)
            assert [m.seq for m in page.messages][:1] == [16]
            assert next_event(carol, Error).code == "history_gap"


class CuttableProxy:
    """A TCP relay-in-the-middle whose cut drops our side at once and the relay's
    side later: the relay keeps a ghost session holding our nick meanwhile."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server((HOST, 0))
        self.port = int(self.listener.getsockname()[1])
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection((HOST, self.upstream))
            with self.lock:
                self.pairs.append((down, up))
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def cut(self, ghost_for: float) -> None:
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for down, _up in pairs:
            down.shutdown(socket.SHUT_RDWR)
            down.close()

        def close_up() -> None:
            for _down, up in pairs:
                up.close()

        threading.Timer(ghost_for, close_up).start()

    def close(self) -> None:
        self.listener.close()
        self.cut(0)


def test_reconnect_waits_for_our_ghost_to_free_the_nick(relay: RelayProcess) -> None:
    proxy = CuttableProxy(relay.port)
    try:
        rx = connect(HOST, proxy.port, "rx", reconnect=True)
        tx = connect(HOST, relay.port, "tx")
        for i in range(10):
            tx.say("lobby", f"a{i}")
        seqs = [next_event(rx, Msg).seq for _ in range(10)]
        proxy.cut(ghost_for=1.0)
        next_event(rx, ConnectionLost)
        for i in range(10):
            tx.say("lobby", f"b{i}")
        next_event(rx, Reconnected, timeout=15)
        seqs += [next_event(rx, Msg).seq for _ in range(10)]
        assert seqs == list(range(1, 21))
        assert rx.ghost_retries >= 1  # the nick was still taken by our ghost at first
        assert rx.nick_name == "rx"
        rx.close()
        tx.close()
    finally:
        proxy.close()
