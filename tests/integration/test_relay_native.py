"""The native dialect against real relay processes (2 workers, loopback)."""

from __future__ import annotations

from tests.conftest import RelayFactory
from tests.relayproc import RelayProcess
from tests.wire import NativePeer, assert_one_order, worker_of
from transports.native import frame


def test_fan_out_across_workers_same_order_for_everyone(relay: RelayProcess) -> None:
    peers = [NativePeer.joined(relay.port, f"u{i}") for i in range(24)]
    workers = {worker_of(relay.pid, p.local_port) for p in peers}
    # Workers share one listening socket and the kernel wakes whichever it wakes:
    # a run of 24 can all land on one (seen once in CI). More, bounded, until not.
    while len(workers) < 2 and len(peers) < 200:
        peers.append(NativePeer.joined(relay.port, f"u{len(peers)}"))
        workers.add(worker_of(relay.pid, peers[-1].local_port))
    assert len(workers) == 2, "clients should land on both worker processes"
    senders = peers[:4]
    per_sender = 60

    assert_one_order(peers, senders, per_sender)


def test_nick_unique_across_workers_case_insensitive(relay: RelayProcess) -> None:
    owner = NativePeer.joined(relay.port, "Carol")
    owner_worker = worker_of(relay.pid, owner.local_port)
    seen_workers = set()
    for _ in range(16):
        other = NativePeer(relay.port)
        other.send({"t": "hello", "v": 1, "nick": "cAROL"})
        err = other.expect_error("nick_taken")
        assert err["ref"] == "hello"
        seen_workers.add(worker_of(relay.pid, other.local_port))
        # The client may try another nick on the same connection.
        other.send({"t": "hello", "v": 1, "nick": f"carol{len(seen_workers)}x{_}"})
        other.expect(lambda b: b.get("t") == "welcome")
        other.close()
        if len(seen_workers | {owner_worker}) == 2 and owner_worker in seen_workers:
            break
    assert len(seen_workers) == 2


def test_join_part_who_presence(relay: RelayProcess) -> None:
    a = NativePeer.joined(relay.port, "ann")
    b = NativePeer.joined(relay.port, "ben")
    a.expect(lambda m: m.get("t") == "presence" and m["nick"] == "ben" and m["event"] == "join")
    b.send({"t": "join", "room": "dev"})
    joined = b.expect(lambda m: m.get("t") == "joined" and m["room"] == "dev")
    assert joined["members"] == ["ben"] and joined["seq"] == 0
    b.expect(lambda m: m.get("t") == "presence" and m["room"] == "dev" and m["nick"] == "ben")
    a.send({"t": "join", "room": "dev"})
    a.expect(lambda m: m.get("t") == "joined" and m["room"] == "dev"
             and m["members"] == ["ben", "ann"])
    b.expect(lambda m: m.get("t") == "presence" and m["room"] == "dev" and m["nick"] == "ann")
    b.send({"t": "who", "room": "dev"})
    members = b.expect(lambda m: m.get("t") == "members")
    assert sorted(members["members"]) == ["ann", "ben"]
    a.send({"t": "part", "room": "dev"})
    a.expect(lambda m: m.get("t") == "parted" and m["room"] == "dev")
    b.expect(lambda m: m.get("t") == "presence" and m["event"] == "part" and m["nick"] == "ann")
    a.send({"t": "say", "room": "dev", "text": "still here?"})
    err = a.expect_error("not_in_room")
    assert err["ref"] == "say" and err["room"] == "dev"
    a.send({"t": "who", "room": "dev"})
    a.expect_error("not_in_room")
    # Disconnecting parts every room.
    b.close()
    a.expect(lambda m: m.get("t") == "presence" and m["event"] == "part" and m["nick"] == "ben"
             and m["room"] == "lobby")


def test_whisper_and_nick_change(relay: RelayProcess) -> None:
    a = NativePeer.joined(relay.port, "wanda")
    b = NativePeer.joined(relay.port, "vic")
    a.send({"t": "whisper", "to": "VIC", "text": "psst", "id": "w1"})
    got = b.expect(lambda m: m.get("t") == "whisper")
    assert (got["from"], got["to"], got["text"]) == ("wanda", "vic", "psst")
    assert "id" not in got and isinstance(got["ts"], int)
    echo = a.expect(lambda m: m.get("t") == "whisper")
    assert echo["id"] == "w1" and echo["to"] == "vic"
    a.send({"t": "whisper", "to": "nobody", "text": "hi"})
    assert a.expect_error("no_such_nick")["nick"] == "nobody"
    b.send({"t": "nick", "nick": "victor"})
    assert b.expect(lambda m: m.get("t") == "renamed")["nick"] == "victor"
    p = a.expect(lambda m: m.get("t") == "presence" and m["event"] == "nick")
    assert (p["nick"], p["new"], p["room"]) == ("vic", "victor", "lobby")
    a.send({"t": "nick", "nick": "Victor"})
    assert a.expect_error("nick_taken")["ref"] == "nick"
    # The old nick is free again.
    c = NativePeer.joined(relay.port, "vic")
    c.close()


def test_history_paging_and_limits(relay: RelayProcess) -> None:
    a = NativePeer.joined(relay.port, "hist")
    for i in range(1, 8):
        a.send({"t": "say", "room": "lobby", "text": f"m{i}"})
    a.msgs("lobby", 7)
    a.send({"t": "history", "room": "lobby", "after": 2, "limit": 3})
    page = a.expect(lambda m: m.get("t") == "history")
    assert [m["seq"] for m in page["messages"]] == [3, 4, 5] and page["more"] is True
    assert "id" not in page["messages"][0]
    a.send({"t": "history", "room": "lobby", "after": 5})
    page = a.expect(lambda m: m.get("t") == "history")
    assert [m["text"] for m in page["messages"]] == ["m6", "m7"] and page["more"] is False
    a.send({"t": "history", "room": "lobby", "limit": 2})
    page = a.expect(lambda m: m.get("t") == "history")
    assert [m["seq"] for m in page["messages"]] == [6, 7] and page["more"] is True
    a.send({"t": "history", "room": "lobby", "limit": 501})
    a.expect_error("bad_field")
    a.send({"t": "history", "room": "elsewhere"})
    a.expect_error("not_in_room")


def test_resume_delivers_missed_messages_then_live(relay: RelayProcess) -> None:
    talker = NativePeer.joined(relay.port, "talker")
    away = NativePeer.joined(relay.port, "away")
    for i in range(3):
        talker.send({"t": "say", "room": "lobby", "text": f"before{i}"})
    last = away.msgs("lobby", 3)[-1]["seq"]
    away.close()
    talker.expect(lambda m: m.get("t") == "presence" and m["nick"] == "away"
                  and m["event"] == "part")
    for i in range(4):
        talker.send({"t": "say", "room": "lobby", "text": f"missed{i}"})
    talker.msgs("lobby", 7)
    back = NativePeer(relay.port)
    back.send({"t": "hello", "v": 1, "nick": "away", "rooms": [], "resume": {"lobby": last}})
    back.expect(lambda m: m.get("t") == "welcome")
    joined = back.expect(lambda m: m.get("t") == "joined")
    assert joined["seq"] == last + 4
    talker.send({"t": "say", "room": "lobby", "text": "live"})
    got = back.msgs("lobby", 5)
    assert [m["seq"] for m in got] == list(range(last + 1, last + 6))
    assert [m["text"] for m in got] == [f"missed{i}" for i in range(4)] + ["live"]


def test_resume_beyond_history_says_history_gap(relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=1, args=["--rate-limit", "0", "--history", "5"])
    a = NativePeer.joined(relay.port, "gap")
    for i in range(12):
        a.send({"t": "say", "room": "lobby", "text": f"x{i}"})
    a.msgs("lobby", 12)
    b = NativePeer(relay.port)
    b.send({"t": "hello", "v": 1, "nick": "late", "rooms": [], "resume": {"lobby": 2}})
    b.expect(lambda m: m.get("t") == "joined")
    err = b.expect_error("history_gap")
    assert err["room"] == "lobby"
    assert [m["seq"] for m in b.msgs("lobby", 5)] == [8, 9, 10, 11, 12]


def test_pong_comes_after_the_replies_to_earlier_requests(relay: RelayProcess) -> None:
    """A client pings to know that the answers to what it sent before are in
    (chat-client's pipe mode does, before it says bye)."""
    a = NativePeer.joined(relay.port, "ann")
    burst = [{"t": "who", "room": "lobby"}, {"t": "rooms"}, {"t": "history", "room": "lobby"},
             {"t": "ping", "id": 1}]
    a.send_raw(b"".join(frame(body) for body in burst))
    # expect() offers frames it keeps again on each read: note each one once.
    order: dict[int, str] = {}
    a.expect(lambda m: order.setdefault(id(m), m["t"]) == "pong")
    seen = list(order.values())
    assert [t for t in seen if t in ("members", "rooms", "history", "pong")] == [
        "members", "rooms", "history", "pong"]
