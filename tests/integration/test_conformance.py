"""One chat suite, every dialect: the same semantics over native, text, ws and IRC.

Each test runs once per adapter in tests/dialect_adapters.py against a real
relay, with a native client ("driver") in the room as the reference: what
the driver says arrives at every dialect in the room's seq order, presence,
whispers and errors show in each dialect's own form, and a quit is clean.
A new dialect counts as supported once it passes here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.dialect_adapters import ADAPTERS, Adapter, NickTaken
from tests.relayproc import RelayProcess
from tests.wire import NativePeer

# One relay for the module (two workers); every test gets its own room and nicks.
_names = itertools.count(1)


@pytest.fixture(scope="module")
def shared_relay() -> Iterator[RelayProcess]:
    with RelayProcess(workers=2, args=["--rate-limit", "0"]) as relay:
        yield relay


@pytest.fixture
def room() -> str:
    return f"conform{next(_names)}"


@pytest.fixture(params=sorted(ADAPTERS))
def dialect(request: pytest.FixtureRequest, shared_relay: RelayProcess) -> Iterator[Adapter]:
    adapter = ADAPTERS[request.param](shared_relay.port)
    yield adapter
    adapter.close()


@pytest.fixture
def driver(shared_relay: RelayProcess, room: str) -> Iterator[NativePeer]:
    peer = NativePeer.joined(shared_relay.port, f"driver_{room}", [room])
    yield peer
    peer.close()


def test_chat_semantics(
    shared_relay: RelayProcess, dialect: Adapter, driver: NativePeer, room: str
) -> None:
    ROOM, me, them = room, f"alice_{room}", driver.nick
    # Connect, join: the member list names both of us, the driver sees us arrive.
    dialect.connect(me)
    assert dialect.join(ROOM) == {them, me}
    driver.expect(lambda b: b.get("t") == "presence" and b["nick"] == me
                  and b["event"] == "join")

    # Say: the room gets it from us.
    dialect.say(ROOM, "hello from " + dialect.name)
    got = driver.expect(lambda b: b.get("t") == "msg" and b["from"] == me)
    assert got["text"] == "hello from " + dialect.name

    # Others' messages arrive complete and in the room's seq order.
    for i in range(20):
        driver.send({"t": "say", "room": ROOM, "text": f"line {i}"})
    echoes = driver.msgs(ROOM, 20)
    seqs = [b["seq"] for b in echoes]
    assert seqs == list(range(got["seq"] + 1, got["seq"] + 21))
    received = [dialect.next_message() for _ in range(20)]
    assert [(m.room, m.sender, m.text) for m in received] == [
        (ROOM, them, b["text"]) for b in echoes]
    if dialect.carries_seq:
        assert [m.seq for m in received] == seqs

    # Presence: someone joins and leaves the room.
    bob = NativePeer.joined(shared_relay.port, f"bob_{room}", [ROOM])
    try:
        dialect.expect_presence(ROOM, bob.nick, "join")
        bob.send({"t": "part", "room": ROOM})
        dialect.expect_presence(ROOM, bob.nick, "part")
    finally:
        bob.close()

    # Whispers both ways.
    dialect.whisper(them, "psst")
    w = driver.expect(lambda b: b.get("t") == "whisper" and b["from"] == me)
    assert (w["to"], w["text"]) == (them, "psst")
    driver.send({"t": "whisper", "to": me, "text": "back at you"})
    assert dialect.next_whisper() == (them, "back at you")

    # Bad input: an error the user can read, and the connection carries on.
    assert dialect.send_bad()
    dialect.say(ROOM, "still here")
    assert driver.expect(lambda b: b.get("t") == "msg" and b["from"] == me)["text"] == (
        "still here")

    # A clean quit: the relay closes, the room sees us go.
    dialect.quit()
    driver.expect(lambda b: b.get("t") == "presence" and b["nick"] == me
                  and b["event"] == "part")


def test_nick_is_unique_across_dialects(dialect: Adapter, driver: NativePeer, room: str) -> None:
    with pytest.raises(NickTaken):
        dialect.connect(driver.nick.upper())  # compared case-insensitively
    # The same connection may then take a free nick.
    dialect.connect(f"other_{room}")
    assert dialect.join(room) == {driver.nick, f"other_{room}"}
