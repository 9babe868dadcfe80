"""Budgets and moderation of the Redis engine across relay hosts.

Real redis-server, separate `chat-relay start --engine` hosts: --max-rooms
counts rooms with members on any host, --max-rooms-per-client holds per
client, an emptied room's history expires after --room-ttl, and an IP ban
cuts that address's clients on every host (each announced once).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.redisproc import REDIS, RedisServer
from tests.relayproc import UNIT, RelayProcess
from tests.wire import NativePeer

redis = pytest.importorskip("redis", reason="the redis client (pip install redis) is missing")
pytestmark = pytest.mark.skipif(
    REDIS is None, reason="redis-server missing: sh tests/ensure_apt.sh redis redis-server "
    "redis-server (make test does it)")

PASSWORD = "oper-pw-for-tests"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer().start() as srv:
        yield srv


def _host(url: str, *extra: str) -> RelayProcess:
    return RelayProcess(workers=1, args=["--engine", url, "--no-mdns", "--rate-limit", "0",
                                         *extra])


def _join(peer: NativePeer, room: str) -> dict[str, Any]:
    peer.send({"t": "join", "room": room})
    return peer.expect(lambda b: b.get("room") == room and b.get("t") in ("joined", "error"))


def _part(peer: NativePeer, room: str) -> None:
    peer.send({"t": "part", "room": room})
    peer.expect(lambda b: b.get("t") == "parted" and b.get("room") == room)


def test_room_budgets_hold_relay_wide(server: RedisServer) -> None:
    args = ("--max-rooms", "2", "--max-rooms-per-client", "2", "--room-ttl", "1")
    with _host(server.url, *args).start() as one, _host(server.url, *args).start() as two:
        alice = NativePeer.joined(one.port, "alice", rooms=["r1"])
        bob = NativePeer.joined(two.port, "bob", rooms=["r2"])  # 2 rooms, the cap
        refused = _join(bob, "r3")
        assert refused["t"] == "error" and refused["code"] == "too_many_rooms"
        assert "holds 2 rooms" in refused["text"]
        assert _join(bob, "r1")["t"] == "joined"  # an open room is no new room
        full = _join(bob, "r4")  # bob is in 2 rooms: his own limit speaks first
        assert full["code"] == "too_many_rooms" and "you are in 2 rooms" in full["text"]
        bob.send({"t": "say", "room": "r2", "text": "kept a while"})
        bob.expect(lambda b: b.get("t") == "msg" and b.get("room") == "r2")
        _part(bob, "r2")  # r2 empties: it stops counting, and its history expires
        assert _join(alice, "r3")["t"] == "joined"  # on the other host: at the cap again
        assert _join(alice, "r5")["code"] == "too_many_rooms"
        client = redis.Redis.from_url(server.url)
        log = "cr:{r2}:log"
        deadline = time.monotonic() + 10 * UNIT
        while client.exists(log) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.exists(log), "an empty room's history outlived --room-ttl"
        assert int(client.get("cr:{r2}:seq") or 0) == 1  # the seq stays: never reused
        client.close()
        for peer in (alice, bob):
            peer.close()


def _joined_from(port: int, nick: str, source: str) -> NativePeer:
    peer = NativePeer(port, source=source)
    peer.send({"t": "hello", "v": 1, "nick": nick, "rooms": ["lobby"]})
    peer.expect(lambda b: b.get("t") == "welcome")
    peer.expect(lambda b: b.get("t") == "joined")
    return peer


def test_ip_ban_cuts_that_address_on_every_host(server: RedisServer) -> None:
    with _host(server.url, "--oper-password", PASSWORD).start() as one, \
            _host(server.url, "--oper-password", PASSWORD).start() as two:
        op = NativePeer.joined(one.port, "op")
        op.send({"t": "oper", "password": PASSWORD})
        op.expect(lambda b: b.get("t") == "notice")
        watcher = NativePeer.joined(two.port, "watcher")
        here = _joined_from(one.port, "here", "127.0.0.2")
        there = _joined_from(two.port, "there", "127.0.0.2")
        watcher.expect(lambda b: b.get("event") == "join" and b.get("nick") == "there")
        op.send({"t": "ban", "ip": "127.0.0.2", "reason": "spam"})
        notice = op.expect(lambda b: b.get("t") == "notice" and "banned" in b.get("text", ""))
        assert "2 connection(s) closed" in notice["text"]
        for victim in (here, there):
            victim.expect_error("banned")
            victim.wait_closed()
        parts = [b for b in watcher.drain(1.0)
                 if b.get("t") == "presence" and b.get("event") == "part"]
        assert sorted(b["nick"] for b in parts) == ["here", "there"]  # each exactly once
        assert not watcher.closed and not op.closed
        again = NativePeer(two.port, source="127.0.0.2")  # refused on the other host too
        again.send({"t": "hello", "v": 1, "nick": "back"})
        assert again.expect(lambda b: b.get("t") == "error")["code"] in ("banned", "auth_failed")
        for peer in (op, watcher, again):
            peer.close()
