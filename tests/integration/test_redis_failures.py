"""The Redis engine when something dies: real redis-servers, real relay hosts.

Each relay host is a separate `chat-relay start --engine redis://...`
process tree; Redis is a redis-server we start and stop by PID. A host
killed with SIGKILL: its users leave everyone else's presence within 30 s
and the other host's clients notice nothing else. Redis stopped and started
again: clients stay, `say` is answered `unavailable` meanwhile, then chat
resumes by itself. A host restarted, or another host: history, seq and
resume continue from Redis.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.redisproc import REDIS, RedisServer
from tests.relayproc import UNIT, RelayProcess
from tests.wire import NativePeer

redis = pytest.importorskip("redis", reason="the redis client (pip install redis) is missing")
pytestmark = pytest.mark.skipif(
    REDIS is None, reason="redis-server missing: sh tests/ensure_apt.sh redis redis-server "
    "redis-server (make test does it)")

PRESENCE_DEADLINE = 30.0  # the bound on a dead host's users leaving presence


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(persist=tmp_path).start() as srv:
        yield srv


def _host(url: str) -> RelayProcess:
    return RelayProcess(workers=1, args=["--engine", url, "--no-mdns", "--rate-limit", "0"])


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _kill9(relay: RelayProcess) -> None:
    """SIGKILL the host's supervisor by PID; its hub and workers must follow by
    themselves (PDEATHSIG). Any that do not fail the test (and are killed)."""
    children = [c.pid for c in relay.children()]
    assert children, "the relay host has no children to lose"
    os.kill(relay.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5 * UNIT
    while not all(_gone(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [pid for pid in children if not _gone(pid)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"children {alive} outlived their supervisor's SIGKILL"


def _say(peer: NativePeer, text: str, label: int) -> dict[str, object]:
    """Say `text` in lobby; the msg it became, or the error it got."""
    peer.send({"t": "say", "room": "lobby", "text": text, "id": label})
    return peer.expect(lambda b: b.get("id") == label and b.get("t") in ("msg", "error"),
                       timeout=10)


def test_kill9_of_a_host_parts_its_users_and_nobody_else_notices(server: RedisServer) -> None:
    with _host(server.url).start() as one, _host(server.url).start() as two:
        alice = NativePeer.joined(one.port, "alice", rooms=["lobby", "solo"])
        bob = NativePeer.joined(two.port, "bob")
        carol = NativePeer.joined(two.port, "carol")
        bob.expect(lambda b: b.get("event") == "join" and b.get("nick") == "carol")
        _kill9(one)
        killed = time.monotonic()
        alice.wait_closed()
        for peer in (bob, carol):  # both see alice leave, within the bound
            part = peer.expect(lambda b: b.get("t") == "presence" and b.get("nick") == "alice"
                               and b.get("event") == "part", timeout=PRESENCE_DEADLINE)
            assert part["room"] == "lobby"
        assert time.monotonic() - killed < PRESENCE_DEADLINE
        store = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 5 * UNIT
        while store.smembers("cr:rooms") != {b"lobby"} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.smembers("cr:rooms") == {b"lobby"}  # its emptied room stops counting
        store.close()
        got = _say(bob, "still here", 1)  # chat goes on; nobody on host two was cut
        assert got["t"] == "msg"
        assert carol.msgs("lobby", 1)[0]["text"] == "still here"
        assert not bob.closed and not carol.closed
        bob.send({"t": "who", "room": "lobby"})
        assert sorted(bob.expect(lambda b: b.get("t") == "members")["members"]) == \
            ["bob", "carol"]
        again = NativePeer.joined(two.port, "alice")  # the dead host's nick came free
        carol.expect(lambda b: b.get("event") == "join" and b.get("nick") == "alice")
        for peer in (bob, carol, again):
            peer.close()


def test_redis_stopped_and_restarted_clients_stay_and_chat_resumes(tmp_path: Path) -> None:
    srv = RedisServer().start()  # no persistence: it comes back empty, the hard case
    try:
        with _host(srv.url).start() as one, _host(srv.url).start() as two:
            alice = NativePeer.joined(one.port, "alice")
            bob = NativePeer.joined(two.port, "bob")
            assert _say(alice, "before", 1)["seq"] == 1
            assert bob.msgs("lobby", 1)[0]["text"] == "before"
            srv.stop(signal.SIGTERM)
            for peer, label in ((alice, 2), (bob, 3)):  # both hosts answer, neither cuts
                got = _say(peer, "while down", label)
                assert got["t"] == "error" and got["code"] == "unavailable", got
            srv.start()
            deadline, label, got = time.monotonic() + 30 * UNIT, 10, {}
            while time.monotonic() < deadline:  # by itself: nobody reconnects
                label += 1
                got = _say(alice, f"after {label}", label)
                if got["t"] == "msg":
                    break
                assert got.get("code") == "unavailable", got
                time.sleep(0.2)
            assert got["t"] == "msg", "chat did not resume after redis came back"
            assert int(got["seq"]) > 1  # never a seq handed out before
            seen = bob.expect(lambda b: b.get("t") == "msg" and b.get("text") == got["text"],
                              timeout=10)
            assert seen["seq"] == got["seq"]
            back = _say(bob, "from bob", 99)
            assert back["t"] == "msg" and int(back["seq"]) == int(got["seq"]) + 1
            assert alice.expect(lambda b: b.get("text") == "from bob")["seq"] == back["seq"]
            assert not alice.closed and not bob.closed
            alice.close()
            bob.close()
    finally:
        srv.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "kill9"])
def test_restarted_host_continues_seq_and_resume_from_redis(server: RedisServer,
                                                            sig: int) -> None:
    host = _host(server.url).start()
    try:
        alice = NativePeer.joined(host.port, "alice")
        bob = NativePeer.joined(host.port, "bob")
        for i in range(3):
            _say(alice, f"m{i + 1}", i + 1)
        assert [m["seq"] for m in bob.msgs("lobby", 3)] == [1, 2, 3]
        bob.close()  # bob saw up to 3
        for i in range(3, 5):
            _say(alice, f"m{i + 1}", i + 1)
        if sig == signal.SIGKILL:
            _kill9(host)
        host.stop(sig)
    finally:
        host.stop()
    with _host(server.url).start() as again:
        bob = NativePeer.joined(again.port, "bob2", rooms=[], resume={"lobby": 3})
        missed = bob.drain(0.5)
        texts = [(b["seq"], b["text"]) for b in missed if b.get("t") == "msg"]
        assert texts == [(4, "m4"), (5, "m5")], missed  # exactly what it missed
        assert _say(bob, "m6", 6)["seq"] == 6  # seq continues from Redis
        bob.send({"t": "history", "room": "lobby"})
        page = bob.expect(lambda b: b.get("t") == "history")
        assert [m["seq"] for m in page["messages"]] == [1, 2, 3, 4, 5, 6]
        bob.close()


def test_history_and_resume_across_hosts(server: RedisServer) -> None:
    with _host(server.url).start() as one, _host(server.url).start() as two:
        carol = NativePeer.joined(one.port, "carol")
        for i in range(5):
            assert _say(carol, f"h{i + 1}", i + 1)["seq"] == i + 1
        bob = NativePeer.joined(two.port, "bob", rooms=[], resume={"lobby": 2})
        missed = [(b["seq"], b["text"]) for b in bob.drain(0.5) if b.get("t") == "msg"]
        assert missed == [(3, "h3"), (4, "h4"), (5, "h5")]
        bob.send({"t": "history", "room": "lobby", "after": 1, "limit": 2})
        page = bob.expect(lambda b: b.get("t") == "history")
        assert [m["text"] for m in page["messages"]] == ["h2", "h3"] and page["more"]
        assert _say(carol, "h6", 6)["seq"] == 6  # live across hosts after the resume
        assert bob.msgs("lobby", 1)[0]["text"] == "h6"
        carol.close()
        bob.close()


def _start_fails(url: str, env: dict[str, str] | None = None) -> str:
    """`chat-relay start --engine url` on a free port: its exit code must be 1, and
    it must have started no hub or worker (it exits before the supervisor runs)."""
    import subprocess
    import sys

    from tests.redisproc import free_port

    proc = subprocess.run(
        [sys.executable, "-m", "relay.cli", "start", "--engine", url, "--port",
         str(free_port()), "--host", "127.0.0.1", "--no-mdns"],
        capture_output=True, text=True, timeout=30 * UNIT,
        env={**os.environ, **(env or {})})
    assert proc.returncode == 1, proc.stderr
    return proc.stderr


def test_start_without_redis_says_so_once_and_exits() -> None:
    from tests.redisproc import free_port

    err = _start_fails(f"redis://127.0.0.1:{free_port()}/0")
    assert "cannot reach Redis at redis://127.0.0.1:" in err
    assert "is it running, and is --engine right?" in err
    assert "Traceback" not in err


def test_start_with_a_wrong_engine_password_says_so(tmp_path: Path) -> None:
    with RedisServer(persist=tmp_path, password="right-one").start() as srv:
        err = _start_fails(srv.url, {"CHAT_RELAY_ENGINE_PASSWORD": "wrong-one"})
        assert "refused the password" in err and "wrong-one" not in err
        err = _start_fails(srv.url)
        assert "wants a password: put it in the URL or in $CHAT_RELAY_ENGINE_PASSWORD" in err
        assert "Traceback" not in err
