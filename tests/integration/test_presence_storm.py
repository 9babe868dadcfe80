"""A join storm against a real relay (issue 21): 2,000 clients join one room.

At --presence-limit 100 every client is welcomed, a message reaches all of
them, and the presence frames they receive together stay O(N): the first 100
joins are announced (coalesced), the rest are not. Announced one by one to
every member, the same storm would be ~2,000,000 frames. And messages that
arrive while a long send round is going reach a big room whole and in order.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import RelayFactory
from tests.relayproc import UNIT
from transports.native import FrameDecoder, frame

N = 2000
LIMIT = 100


@dataclass(eq=False)
class Member:
    sock: socket.socket
    decoder: FrameDecoder = field(default_factory=lambda: FrameDecoder(1 << 20))
    joined: bool = False
    got_msg: bool = False
    seqs: list[int] = field(default_factory=list)  # of the msgs received, in order


class Crowd:
    """Many raw native clients in one selector; counts what they receive by type."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sel = selectors.DefaultSelector()
        self.members: list[Member] = []
        self.seen: Counter[str] = Counter()

    def add(self, nick: str) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10 * UNIT)
        sock.sendall(frame({"t": "hello", "v": 1, "nick": nick, "rooms": ["lobby"]}))
        sock.setblocking(False)
        member = Member(sock)
        self.members.append(member)
        self.sel.register(sock, selectors.EVENT_READ, member)

    def pump(self, seconds: float) -> None:
        for key, _ in self.sel.select(seconds):
            member: Member = key.data
            try:
                data = member.sock.recv(1 << 16)
            except BlockingIOError:
                continue
            assert data, "the relay closed a member's connection"
            for body in member.decoder.feed(data):
                t = body.get("t") if isinstance(body, dict) else None
                assert t != "error", body
                self.seen[str(t)] += 1
                if t == "notice" and body.get("quiet") is True:
                    self.seen["quiet notice"] += 1
                if t == "joined":
                    member.joined = True
                elif t == "msg":
                    member.got_msg = True
                    member.seqs.append(body["seq"])

    def wait(self, what: str, done: Any, seconds: float) -> None:
        deadline = time.monotonic() + seconds * UNIT
        while not done():
            assert time.monotonic() < deadline, f"{what}: {self.seen}"
            self.pump(0.05)

    def close(self) -> None:
        for member in self.members:
            member.sock.close()
        self.sel.close()


def test_2000_join_one_room_with_o_n_presence(relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=2, args=[
        "--rate-limit", "0", "--presence-limit", str(LIMIT), "--max-per-ip", "10000",
        "--max-connections", "10000", "--max-handshakes", "10000"])
    crowd = Crowd(relay.port)
    try:
        for i in range(N):
            crowd.add(f"m{i}")
            if i % 100 == 99:
                crowd.pump(0)  # keep reading while the others connect
        crowd.wait("every member welcomed and joined",
                   lambda: all(m.joined for m in crowd.members), 60)
        assert crowd.seen["welcome"] == N
        speaker = crowd.members[0].sock
        speaker.setblocking(True)
        speaker.sendall(frame({"t": "say", "room": "lobby", "text": "all here?"}))
        speaker.setblocking(False)
        crowd.wait("the message reached every member",
                   lambda: all(m.got_msg for m in crowd.members), 30)
        # The first LIMIT joins go to at most LIMIT members each (LIMIT^2 / 2 at
        # worst), then one notice says the room turned quiet; no more presence.
        assert 0 < crowd.seen["presence"] + crowd.seen["notice"] < 5 * N, crowd.seen
        assert crowd.seen["presence_batch"] == 0  # the hub's form never reaches a client
        assert 1 <= crowd.seen["quiet notice"] <= N, crowd.seen
    finally:
        crowd.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_messages_that_come_during_long_send_rounds_reach_everyone_in_order(
        relay_factory: RelayFactory, workers: int) -> None:
    """1,200 members: a send round writes 600-1,200 sockets and, every 256, sends
    up what its readers queued and looks at the bus (relay/worker/busdrain.py),
    where the speakers' messages arrive meanwhile. Every member gets every
    message once, in seq order."""
    members, bursts, per_burst = 1200, 20, 10
    relay = relay_factory(workers=workers, args=[
        "--rate-limit", "0", "--max-per-ip", "10000", "--max-connections", "10000",
        "--max-handshakes", "10000"])
    crowd = Crowd(relay.port)
    try:
        for i in range(members):
            crowd.add(f"m{i}")
            if i % 100 == 99:
                crowd.pump(0)
        crowd.wait("every member joined", lambda: all(m.joined for m in crowd.members), 60)
        speakers = [crowd.members[0].sock, crowd.members[1].sock]
        for n in range(bursts):  # a burst each, while the rounds of the last are going
            for i, speaker in enumerate(speakers):
                speaker.setblocking(True)
                speaker.sendall(b"".join(
                    frame({"t": "say", "room": "lobby", "text": f"s{i} b{n} m{k}"})
                    for k in range(per_burst)))
                speaker.setblocking(False)
            crowd.pump(0.002)
        total = bursts * per_burst * len(speakers)
        crowd.wait("every message reached every member",
                   lambda: all(len(m.seqs) >= total for m in crowd.members), 60)
        first = crowd.members[0].seqs[0]
        expected = list(range(first, first + total))
        for m in crowd.members:
            assert m.seqs == expected
    finally:
        crowd.close()
