"""The C load engine checks exactly what the Python peers check, and sends what they send.

Each stream is written into one end of a socketpair whose other end the
engine owns, in small pieces (so frames and lines arrive split), and the
engine's counts are compared with a Python peer fed the same bytes. The
streams carry gaps, stragglers, duplicates, foreign rooms, malformed bodies
and control lines, so the comparison covers the checker's slow paths.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from benchmarks import dialects, engine, histo, payload
from benchmarks.dialects import PROBE_LINE, IrcLoadPeer, LoadPeer, NativeLoadPeer, TextLoadPeer
from benchmarks.pacing import Schedule
from transports.native import frame

ROOM = "benchroom0"
SIZE = 100
NOW = 5_000_000_000_000


@pytest.fixture(scope="module")
def lib() -> Any:
    lib, why = engine.load()
    if lib is None:
        pytest.skip(why)
    return lib


class Wire:
    """An engine over one end of a socketpair; the test writes the other end."""

    def __init__(self, lib: Any, dialect: str, conns: list[engine.EngineConn],
                 ends: list[socket.socket]) -> None:
        self.ends = ends
        self.eng = engine.Engine(lib, dialect, SIZE, conns)

    def pump(self, seconds: float) -> None:
        self.eng.run(time.monotonic_ns() + int(seconds * 1e9))

    def close(self) -> None:
        self.eng.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()


def receive(lib: Any, pair: tuple[socket.socket, socket.socket], dialect: str, data: bytes,
            piece: int = 7, measure_from: int = 0) -> tuple[engine.ConnStats, bytes, Any]:
    """Write `data` in `piece`-byte writes, then EOF; returns the engine's stats,
    what it wrote back, and its latency counts."""
    ours, theirs = pair
    w = Wire(lib, dialect, [engine.EngineConn(fd=ours.fileno(), sender=False, room=ROOM)],
             [theirs])
    try:
        w.eng.schedule(0, 1.0, 0, measure_from, 0, 0)
        for i in range(0, len(data), piece):
            theirs.sendall(data[i : i + piece])
            w.pump(0.0001)
        theirs.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 10
        while w.eng.conn_stats(0).alive and time.monotonic() < deadline:
            w.pump(0.01)
        stats = w.eng.conn_stats(0)
        assert not stats.alive and stats.error  # "closed by relay", unless an error came first
        theirs.setblocking(False)
        replies = b""
        try:
            while chunk := theirs.recv(65536):
                replies += chunk
        except BlockingIOError:
            pass
        return stats, replies, w.eng.drain_latencies()
    finally:
        w.close()


def reference(peer: LoadPeer, data: bytes) -> tuple[LoadPeer, bytes]:
    replies = peer.feed(data, NOW)
    return peer, replies


def assert_same(stats: engine.ConnStats, peer: LoadPeer) -> None:
    t = peer.tally()
    got = (stats.delivered, stats.corrupt, stats.unique, stats.duplicates, stats.reorders,
           stats.gaps)
    assert got == (t.delivered, t.corrupt, t.unique, t.duplicates, t.reorders, t.gaps)


def msg(seq: int, room: str = ROOM, ts: int = NOW - 3_000_000, **extra: Any) -> bytes:
    body = {"t": "msg", "room": room, "seq": seq, "ts": 1.7e9, "from": "s0",
            "text": payload.make(ts, 0, seq, SIZE), **extra}
    return frame(body)


def raw_frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def native_stream() -> bytes:
    parts = [msg(k) for k in range(1, 41)]
    parts += [msg(44), msg(42), msg(44), msg(45)]  # gap 41-43, a straggler, a duplicate
    parts += [msg(46, room="elsewhere")]  # another room: not ours, not counted
    parts += [raw_frame(b"\xc1"), raw_frame(msgpack.packb([1, 2])), raw_frame(b"\x81\xa1t")]
    parts += [frame({"t": "msg", "room": ROOM, "text": "no seq"})]
    parts += [frame({"t": "msg", "room": ROOM, "seq": 46, "text": "not a payload"})]
    parts += [frame({"t": "presence", "room": ROOM, "nick": "x", "event": "join"})]
    # every msgpack type the walker must skip, around the fields it reads
    odd = {"t": "msg", "nested": {"a": [1, -2, -200, 70000, -70000, 2**40, -(2**40), None,
                                        True, 1.5, b"\x00bin", "s" * 40, "u" * 300]},
           "room": ROOM, "ext": msgpack.ExtType(5, b"12345678"), "seq": 47,
           "f32": 0.0, "text": payload.make(NOW - 1_000_000, 0, 47, SIZE)}
    parts += [frame(odd), msg(48)]
    parts += [frame({"t": "error", "code": "slow_consumer", "text": "too slow"})]
    parts += [msg(49)[:30]]  # a partial frame at the end: never counted
    return b"".join(parts)


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_native_counts_match_the_python_peer(lib: Any, pair: Any, piece: int) -> None:
    data = native_stream()
    stats, _, lat = receive(lib, pair, "native", data, piece)
    peer, _ = reference(NativeLoadPeer("r", ROOM, SIZE, True), data)
    assert_same(stats, peer)
    assert stats.error == peer.error == "slow_consumer"  # the first reason, not the EOF
    assert stats.unique == 46 and stats.duplicates == 1 and stats.reorders == 1
    assert stats.gaps == 2 and stats.corrupt == 5
    assert sum(lat.values()) == stats.delivered - 1  # the one without a send time


def test_native_error_frame_is_reported(lib: Any, pair: Any) -> None:
    data = msg(1) + frame({"t": "error", "code": "slow_consumer", "text": "x"})
    ours, theirs = pair
    w = Wire(lib, "native", [engine.EngineConn(fd=ours.fileno(), sender=False, room=ROOM)],
             [theirs])
    try:
        theirs.sendall(data)
        deadline = time.monotonic() + 5
        while w.eng.conn_stats(0).delivered < 1 and time.monotonic() < deadline:
            w.pump(0.01)
        w.pump(0.01)
        assert w.eng.conn_stats(0).error == "slow_consumer"
    finally:
        w.close()


def test_native_frame_over_the_limit_is_fatal(lib: Any, pair: Any) -> None:
    data = msg(1) + (17 * 1024 * 1024).to_bytes(4, "big") + msg(2)
    ours, theirs = pair
    w = Wire(lib, "native", [engine.EngineConn(fd=ours.fileno(), sender=False, room=ROOM)],
             [theirs])
    try:
        theirs.sendall(data)
        w.pump(0.05)
        s = w.eng.conn_stats(0)
        assert (s.delivered, s.corrupt, s.error) == (1, 1, "frame_too_large")
    finally:
        w.close()


def test_native_starts_from_the_joined_seq_and_a_held_partial_frame(lib: Any,
                                                                   pair: Any) -> None:
    whole = msg(11) + msg(12)
    ours, theirs = pair
    conn = engine.EngineConn(fd=ours.fileno(), sender=False, room=ROOM, next_seq=11,
                             pending=whole[:9])
    w = Wire(lib, "native", [conn], [theirs])
    try:
        theirs.sendall(whole[9:])
        w.pump(0.05)
        s = w.eng.conn_stats(0)
        assert (s.delivered, s.unique, s.gaps, s.corrupt, s.next) == (2, 2, 0, 0, 13)
    finally:
        w.close()


def line(sender: int, counter: int, ts: int = NOW - 2_000_000) -> str:
    return payload.make(ts, sender, counter, SIZE)


def line_stream(prefix: str, end: str) -> bytes:
    rows = [f"{prefix}{line(s, c)}{end}" for c in range(1, 21) for s in range(3)]
    rows += [f"{prefix}{line(1, 23)}{end}", f"{prefix}{line(1, 21)}{end}",
             f"{prefix}{line(1, 23)}{end}"]  # gap, straggler, duplicate on sender 1
    rows += [f"{prefix}{line(2, 21)[:-5]}{end}"]  # cut short: corrupt
    rows += [f"{prefix}{line(0, 21)}zz{end}"]  # glued to something: corrupt
    rows += [f"{prefix}~=12345 0 22 {'x' * 80}{end}"]  # not a send time: corrupt
    return "".join(rows).encode()


def test_text_counts_match_the_python_peer(lib: Any, pair: Any) -> None:
    # A late copy of the runner's probe (a bare-line server) is passed over by both.
    data = line_stream("", "\n") + b"* bob joined benchroom0\n" + PROBE_LINE + b"stray words\n"
    data += b"\r\n" + line(0, 21).encode() + b"\r\n" + line(0, 22).encode()[:40]
    stats, replies, lat = receive(lib, pair, "text", data)
    peer, _ = reference(TextLoadPeer("r", ROOM, SIZE, True, greeting=False), data)
    assert_same(stats, peer)
    assert replies == b""
    assert stats.corrupt == 4 and stats.reorders == 1 and stats.duplicates == 1
    assert sum(lat.values()) == stats.delivered


def test_irc_counts_and_pongs_match_the_python_peer(lib: Any, pair: Any) -> None:
    data = line_stream(f":s!~s@127.0.0.1 PRIVMSG #{ROOM} :", "\r\n")
    data += b"PING :irc.example\r\n:x!~x@h JOIN #benchroom0\r\n"
    stats, replies, _ = receive(lib, pair, "irc", data)
    irc = IrcLoadPeer("r", ROOM, SIZE, True)
    irc.ready = True
    peer, want = reference(irc, data)
    assert_same(stats, peer)
    assert replies == want == b"PONG :irc.example\r\n"


def test_irc_error_numeric_is_reported(lib: Any, pair: Any) -> None:
    data = b":irc.example 474 r #benchroom0 :Cannot join channel (+b)\r\n"
    stats, _, _ = receive(lib, pair, "irc", data)
    assert stats.error.startswith(":irc.example 474")


def test_latency_is_recorded_from_the_payload_send_time(lib: Any, pair: Any) -> None:
    sent = time.monotonic_ns() - 5_000_000  # 5 ms ago
    data = b"".join(msg(k, ts=sent) for k in range(1, 11))
    stats, _, lat = receive(lib, pair, "native", data, piece=4096)
    assert stats.delivered == 10 and sum(lat.values()) == 10
    assert all(5_000 <= us < 5_000_000 for us in lat)
    assert histo.bucket_counts(lat) == lat  # HDR bucket floors: sent on as they are


def test_latency_before_measure_from_is_not_recorded(lib: Any, pair: Any) -> None:
    data = b"".join(msg(k) for k in range(1, 6))  # sent at NOW - 3 ms
    stats, _, lat = receive(lib, pair, "native", data, measure_from=NOW)
    assert stats.delivered == 5 and not lat


@pytest.mark.parametrize("dialect", ["native", "text", "irc"])
def test_senders_send_what_the_python_peers_send_on_schedule(lib: Any, dialect: str) -> None:
    pairs = [socket.socketpair() for _ in range(2)]
    for ours, _ in pairs:
        ours.setblocking(False)
    conns = [engine.EngineConn(fd=ours.fileno(), sender=True, room=ROOM, sender_id=sid,
                               counter=0) for sid, (ours, _) in enumerate(pairs)]
    w = Wire(lib, dialect, conns, [theirs for _, theirs in pairs])
    try:
        t0 = time.monotonic_ns()
        sched = Schedule(t0, 1000.0, 5)
        w.eng.schedule(t0, 1000.0, 5, 0, 0, 0)
        deadline = time.monotonic() + 5
        while w.eng.totals().next_index < 5 and time.monotonic() < deadline:
            w.pump(0.01)
        totals = w.eng.totals()
        assert totals.next_index == 5 and totals.sent_per_room == [5]
        peers = [make(dialect) for _ in pairs]
        counters = [0, 0]
        want: list[bytes] = [b"", b""]
        for i in range(5):  # message i goes to sender i % 2, as in loadproc._send_due
            sid = i % 2
            counters[sid] += 1
            want[sid] += peers[sid].say(payload.make(sched.due_ns(i), sid, counters[sid], SIZE))
        for sid, (_, theirs) in enumerate(pairs):
            theirs.settimeout(2)
            got = b""
            while len(got) < len(want[sid]):
                got += theirs.recv(65536)
            assert got == want[sid]
        assert [w.eng.conn_stats(k).counter for k in range(2)] == counters
    finally:
        w.close()
        for a, b in pairs:
            a.close()
            b.close()


def test_send_lag_is_recorded_for_the_timed_messages_only(lib: Any) -> None:
    """Each timed message's send lag (how late it left) goes to its own histogram,
    as Schedule.take_due records it in the Python engine."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    w = Wire(lib, "native", [engine.EngineConn(fd=ours.fileno(), sender=True, room=ROOM,
                                               sender_id=0)], [theirs])
    try:
        t0 = time.monotonic_ns() - 10_000_000  # all five are 6-10 ms late at once
        w.eng.schedule(t0, 1000.0, 5, t0 + 2_000_000, 0, 0)  # time from message 2 on
        deadline = time.monotonic() + 5
        while w.eng.totals().next_index < 5 and time.monotonic() < deadline:
            w.pump(0.01)
        lags = w.eng.drain_lags()
        assert sum(lags.values()) == 3
        assert all(5_900 <= us <= 8_000 + 500_000 for us in lags), lags
        assert histo.bucket_counts(lags) == lags
        assert w.eng.drain_lags() == {}
        assert w.eng.totals().late == 5
    finally:
        w.close()
        ours.close()
        theirs.close()


@pytest.mark.parametrize("before", [b"", b":a!a@irc PRIVMSG #r :an ERROR :mid-line\r\n"])
def test_irc_sender_reports_a_servers_closing_error_line(lib: Any, pair: Any,
                                                          before: bytes) -> None:
    """As the Python peer: a sender cut by another IRC server's flood limit
    reports the ERROR line's reason, not only that the connection closed."""
    ours, theirs = pair
    w = Wire(lib, "irc", [engine.EngineConn(fd=ours.fileno(), sender=True, room=ROOM,
                                            sender_id=0)], [theirs])
    try:
        w.eng.schedule(0, 1.0, 0, 0, 0, 0)
        theirs.sendall(before + b"ERROR :Closing Link: s[127.0.0.1] (Excess Flood)\r\n")
        theirs.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 10
        while w.eng.conn_stats(0).alive and time.monotonic() < deadline:
            w.pump(0.01)
        assert w.eng.conn_stats(0).error == "Closing Link: s[127.0.0.1] (Excess Flood)"
    finally:
        w.close()


def test_a_long_error_is_cut_where_the_python_peer_cuts_it(lib: Any, pair: Any) -> None:
    """Both engines report the same text: the first ERROR_TEXT bytes of the reason."""
    ours, theirs = pair
    w = Wire(lib, "irc", [engine.EngineConn(fd=ours.fileno(), sender=True, room=ROOM,
                                            sender_id=0)], [theirs])
    reason = b"Closing Link: " + b"x" * (2 * dialects.ERROR_TEXT)
    try:
        w.eng.schedule(0, 1.0, 0, 0, 0, 0)
        theirs.sendall(b"ERROR :" + reason + b"\r\n")
        theirs.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 10
        while w.eng.conn_stats(0).alive and time.monotonic() < deadline:
            w.pump(0.01)
        error = w.eng.conn_stats(0).error
        assert error == reason[:dialects.ERROR_TEXT].decode()
        assert error == dialects.error_text(reason)
    finally:
        w.close()


def make(dialect: str) -> LoadPeer:
    if dialect == "native":
        return NativeLoadPeer("s", ROOM, SIZE, False)
    if dialect == "text":
        return TextLoadPeer("s", ROOM, SIZE, False)
    return IrcLoadPeer("s", ROOM, SIZE, False)


def test_expect_completes_once_every_receiver_has_its_room(lib: Any, pair: Any) -> None:
    ours, theirs = pair
    w = Wire(lib, "native", [engine.EngineConn(fd=ours.fileno(), sender=False, room=ROOM)],
             [theirs])
    try:
        w.eng.expect({ROOM: 3})
        theirs.sendall(msg(1) + msg(2))
        assert not w.eng.run(time.monotonic_ns() + 20_000_000)
        theirs.sendall(msg(3))
        assert w.eng.run(time.monotonic_ns() + 2_000_000_000)
    finally:
        w.close()
