"""chat-bench's measurement logic, without sockets: pacing, seq checks, merging."""

from __future__ import annotations

import random
import struct
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks import dialects, histo, payload, sweep
from benchmarks.dialects import MAX_FRAME, IrcLoadPeer, NativeLoadPeer, TextLoadPeer
from benchmarks.pacing import Schedule, split_rate
from benchmarks.runner import RunConfig, plan_processes, process_rate
from benchmarks.seqcheck import StreamChecker
from transports.native import FrameDecoder, frame, frame_packed

# Pacing ----------------------------------------------------------------------


def test_schedule_is_absolute_and_does_not_drift() -> None:
    s = Schedule(t0_ns=1_000, rate=3.0, count=10_000)
    assert s.due_ns(0) == 1_000
    assert s.due_ns(3) == 1_000 + 1_000_000_000
    # After a million periods the error is at most rounding, not accumulated.
    assert abs(s.due_ns(9_999) - (1_000 + 9_999 * 1e9 / 3)) <= 1


def test_schedule_sends_everything_due_when_behind_and_counts_lag() -> None:
    s = Schedule(t0_ns=0, rate=1000.0, count=100)
    assert s.take_due(0) == 1
    assert s.take_due(500_000) == 0
    # 10 ms late: message 1..10 are due, all sent at once, none skipped.
    assert s.take_due(10_000_000) == 10
    assert s.next_index == 11
    assert s.max_lag_ns == 9_000_000
    assert s.late == 8  # messages more than 1 ms late: due at 1..8 ms
    assert s.wait_ns(10_000_000) == 1_000_000


def test_schedule_records_the_send_lag_of_timed_messages() -> None:
    """The generator's own share of the latency: how late each message due from
    measure_from on left, in µs; a drain hands them over once."""
    s = Schedule(t0_ns=0, rate=1000.0, count=5, measure_from_ns=2_000_000)
    assert s.take_due(10_000_000) == 5
    assert s.drain_lags() == {8_000: 1, 7_000: 1, 6_000: 1}  # messages 2, 3, 4
    assert s.drain_lags() == {}
    assert s.late == 5 and s.max_lag_ns == 10_000_000


def test_schedule_stops_at_count() -> None:
    s = Schedule(t0_ns=0, rate=1e6, count=5)
    assert s.take_due(10**12) == 5
    assert s.done() and s.wait_ns(10**12) is None
    assert s.take_due(10**13) == 0


def test_rates_split_by_senders() -> None:
    assert split_rate(900.0, 3) == [300.0, 300.0, 300.0]
    assert process_rate(1000.0, 3, 4) == 750.0
    assert process_rate(1000.0, 0, 4) == 0.0


def test_plan_deals_round_robin() -> None:
    plans = plan_processes(RunConfig(receivers=5, senders=3, rooms=2, procs=2), "ab")
    assert [len(p.receivers) for p in plans] == [3, 2]
    assert [len(p.senders) for p in plans] == [2, 1]
    rooms = {room for p in plans for _, room in p.receivers}
    assert rooms == {"benchab0", "benchab1"}
    nicks = [n for p in plans for n, _ in p.receivers] + [n for p in plans for _, n, _ in p.senders]
    assert len(set(nicks)) == len(nicks)


# Seq checking ----------------------------------------------------------------


def test_in_order_stream_is_clean() -> None:
    c = StreamChecker()
    for n in range(1, 1001):
        c.see(n)
    assert (c.unique, c.gaps, c.duplicates, c.reorders) == (1000, 0, 0, 0)
    assert c.lost(1000) == 0
    assert c.lost(1003) == 3  # tail loss shows only against the sent count


def test_gap_then_late_arrival_is_a_reorder_not_loss() -> None:
    c = StreamChecker()
    for n in (1, 2, 5, 3, 4, 6):
        c.see(n)
    assert c.reorders == 2 and c.gaps == 0 and c.duplicates == 0
    assert c.lost(6) == 0


def test_duplicates_and_losses() -> None:
    c = StreamChecker()
    for n in (1, 2, 2, 4, 4, 1):
        c.see(n)
    assert c.duplicates == 3
    assert c.gaps == 1
    assert c.lost(4) == 1


def test_baseline_from_joined_seq() -> None:
    p = NativeLoadPeer("n", "r", 64, True)
    data = frame({"t": "welcome", "v": 1, "nick": "n", "server": "x"}) + frame(
        {"t": "joined", "room": "r", "members": ["n"], "seq": 41})
    p.feed(data, 0)
    assert p.ready
    p.feed(frame({"t": "msg", "room": "r", "seq": 42, "ts": 0, "from": "s",
                  "text": payload.make(10_000, 0, 1, 64)}), 2_010_000)
    assert p.checker.unique == 1 and p.checker.gaps == 0
    assert p.drain_latencies() == {2000: 1}


@given(st.lists(st.integers(min_value=1, max_value=60), max_size=200))
def test_checker_accounting_holds_for_any_arrival_order(arrivals: list[int]) -> None:
    c = StreamChecker()
    for n in arrivals:
        c.see(n)
    distinct = set(arrivals)
    assert c.unique == len(distinct)
    assert c.duplicates == len(arrivals) - len(distinct)
    top = max(arrivals, default=0)
    assert c.lost(top) == top - len(distinct)
    assert c.gaps == top - len(distinct)


def test_shuffled_stream_counts_every_message_once() -> None:
    order = list(range(1, 501))
    random.Random(7).shuffle(order)
    c = StreamChecker()
    for n in order:
        c.see(n)
    assert c.unique == 500 and c.duplicates == 0 and c.gaps == 0 and c.lost(500) == 0


# Line dialects ---------------------------------------------------------------


def _line(sender: int, counter: int, size: int = 64) -> bytes:
    return payload.make(1_000_000, sender, counter, size).encode()


def test_text_peer_checks_each_sender_and_rejects_glued_lines() -> None:
    p = TextLoadPeer("n", "room", 64, True, greeting=False)
    stream = b"".join(b"<guest-1> " + _line(s, k) + b"\n" for k in (1, 2, 3) for s in (0, 1))
    for i in range(len(stream)):  # one byte at a time, like a relay that splits chunks
        p.feed(stream[i : i + 1], 2_000_000)
    assert p.unique() == 6 and p.corrupt == 0
    # A chunk relayed into the middle of another line corrupts both halves.
    p.feed(_line(0, 4)[:20] + _line(1, 4) + b"\n", 2_000_000)
    assert p.corrupt == 1
    assert p.tally().gaps == 0


def test_text_peer_handshake_joins_after_greeting() -> None:
    p = TextLoadPeer("n", "bench1", 64, True)
    assert p.feed(b"* welcome, you are guest-3; /help for commands\n", 0) == b"/join bench1\n"
    assert not p.ready
    p.feed(b"* you joined bench1\n", 0)
    assert p.ready


def test_bare_line_peer_is_ready_only_when_the_probe_came_back() -> None:
    from benchmarks.dialects import PROBE_LINE, make_peer

    p = make_peer("text", "n", "room", 64, True, greeting=False)
    assert not p.ready
    p.feed(_line(0, 1) + b"\n", 2_000_000)  # relayed before the server had us: not ours
    assert not p.ready
    p.feed(PROBE_LINE[:10], 2_000_000)
    p.feed(PROBE_LINE[10:] + PROBE_LINE, 2_000_000)  # a late copy after it: passed over
    assert p.ready
    p.feed(_line(0, 2) + b"\n" + PROBE_LINE, 2_000_000)
    assert p.corrupt == 0 and p.delivered == 2


def test_irc_peer_registers_joins_and_answers_ping() -> None:
    p = IrcLoadPeer("bxr1", "bench1", 64, True)
    assert p.start().startswith(b"NICK bxr1\r\n")
    assert p.feed(b":s 001 bxr1 :Welcome bxr1!~bxr1@127.0.0.1\r\n", 0) == b"JOIN #bench1\r\n"
    p.feed(b":bxr1!~bxr1@127.0.0.1 JOIN :#bench1\r\n:s 366 bxr1 #bench1 :End\r\n", 0)
    assert p.ready and p.corrupt == 0
    assert p.feed(b"PING :s\r\n", 0) == b"PONG :s\r\n"
    p.feed(b":bxs0!~bxs0@127.0.0.1 PRIVMSG #bench1 :" + _line(0, 1) + b"\r\n", 0)
    assert p.unique() == 1 and p.corrupt == 0


# Histograms and sweeps -------------------------------------------------------


def test_histograms_merge_across_processes_exactly() -> None:
    parts = []
    whole = histo.new_histogram()
    for proc in range(4):
        h = histo.new_histogram()
        for v in range(proc * 1000 + 1, proc * 1000 + 1001):
            h.record_value(v)
            whole.record_value(v)
        parts.append(histo.encode(h))
    empty = histo.encode(histo.new_histogram())
    merged = histo.merge_encoded(histo.new_histogram(), parts + [empty])
    assert histo.summary_ms(merged) == histo.summary_ms(whole)
    assert merged.get_total_count() == 4000
    assert abs(histo.summary_ms(merged)["p50"] - 2.0) < 0.01


def test_latency_counts_merge_across_processes_exactly() -> None:
    """What load processes send (bucket counts) merges into the same histogram
    as every raw value recorded in one place."""
    rnd = random.Random(5)
    whole = histo.new_histogram()
    parts = []
    for _proc in range(3):
        counts: dict[int, int] = {}
        for _ in range(5000):
            us = int(rnd.lognormvariate(7, 2))
            counts[us] = counts.get(us, 0) + 1
            whole.record_value(min(max(us, 1), histo.HIGHEST_US))
        parts.append(histo.bucket_counts(counts))
        assert len(parts[-1]) < len(counts)  # fewer entries travel than values seen
    merged = histo.merge_counts(histo.new_histogram(), parts + [{}])
    assert list(merged.counts) == list(whole.counts)
    assert histo.summary_ms(merged) == histo.summary_ms(whole)


def test_sweep_picks_last_pass_before_first_failure() -> None:
    def step(rate: float, lost: int, p99: float) -> dict[str, object]:
        return {"offered_rate": rate, "lost": lost, "duplicates": 0, "reorders": 0,
                "corrupt": 0, "latency_ms": {"p99": p99}}

    steps = [step(100, 0, 5), step(200, 0, 9), step(400, 0, 150), step(800, 0, 50)]
    best = sweep.highest_sustained(steps, 100.0)  # type: ignore[arg-type]
    assert best is not None and best["offered_rate"] == 200
    assert sweep.highest_sustained([step(100, 1, 1)], 100.0) is None  # type: ignore[list-item]
    assert sweep.ladder(100, 2, 1000, 10) == [100, 200, 400, 800]
    # Refined steps, run after the ladder, count by rate: 283 passed, 336 failed.
    steps += [step(283, 0, 20), step(336, 0, 120), step(308, 0, 60)]
    best = sweep.highest_sustained(steps, 100.0)  # type: ignore[arg-type]
    assert best is not None and best["offered_rate"] == 308


def _sweep(capacity: float, rates: list[float], refine: int, extra: int = 0) -> list[float]:
    """The rates a sweep offers to a server that sustains exactly up to `capacity`."""
    history: list[tuple[float, bool]] = []
    while (rate := sweep.next_rate(history, rates, refine, extra)) is not None:
        history.append((rate, rate <= capacity))
        assert len(history) < 50
    return [r for r, _ in history]


def test_sweep_refines_between_last_pass_and_first_failure() -> None:
    rates = sweep.ladder(25_000, 2, 4_000_000, 12)
    run = _sweep(130_000, rates, refine=3)
    # ladder 25k..200k (fails), then geometric midpoints of [100k, 200k]
    assert run[:4] == [25_000, 50_000, 100_000, 200_000]
    assert run[4:] == [141_421.356, 118_920.711, 129_683.955]
    assert len(run) == 7
    passed = max(r for r in run if r <= 130_000)
    failed = min(r for r in run if r > 130_000)
    assert passed == 129_683.955 and failed / passed <= 2 ** (1 / 8) * 1.000001  # 9%
    # The cli climbs one ladder step past the failure (the knee), then refines.
    assert _sweep(130_000, rates, refine=3, extra=1)[:5] == [25_000, 50_000, 100_000,
                                                              200_000, 400_000]
    assert len(_sweep(130_000, rates, refine=3, extra=1)) == 8


def _result(rate: float, lost: int = 0, p99: float = 5.0) -> dict[str, Any]:
    return {"offered_rate": rate, "lost": lost, "duplicates": 0, "reorders": 0,
            "corrupt": 0, "latency_ms": {"p99": p99}}


def test_a_step_slow_once_is_run_again_and_a_lossy_one_is_not() -> None:
    """A neighbour's burst at 100 (p99 140 ms, nothing lost) must not end the
    sweep; at 400 the server really is too slow (twice), and the bisection
    step after that confirmed failure is not retried."""
    tries: dict[float, int] = {}

    def server(rate: float) -> dict[str, Any]:
        tries[rate] = tries.get(rate, 0) + 1
        if rate == 100 and tries[rate] == 1:
            return _result(rate, p99=140.0)
        return _result(rate, p99=150.0 if rate >= 250 else 5.0)

    told: list[tuple[float, bool, bool]] = []
    steps, retried = sweep.climb(server, [100, 200, 400, 800], refine=1, p99_limit_ms=100.0,
                                 report=lambda r, _res, ok, again: told.append((r, ok, again)))
    assert [s["offered_rate"] for s in steps] == [100, 200, 400, 282.843]
    assert [(r["offered_rate"], r["latency_ms"]["p99"]) for r in retried] == [(100, 140.0),
                                                                              (400, 150.0)]
    assert told == [(100, False, True), (100, True, False), (200, True, False),
                    (400, False, True), (400, False, False), (282.843, False, False)]
    best = sweep.highest_sustained(steps, 100.0)
    assert best is not None and best["offered_rate"] == 200

    lossy = sweep.climb(lambda rate: _result(rate, lost=3), [100, 200], 0, 100.0)
    assert [s["offered_rate"] for s in lossy[0]] == [100] and lossy[1] == []  # never retried
    once = sweep.climb(lambda rate: _result(rate, p99=500.0), [100], 0, 100.0, retries=0)
    assert once[1] == []  # --sweep-retries 0: the first failure counts
    assert sweep.climb(lambda rate: None, [100, 200], 0, 100.0) == ([], [])  # server gone


@given(st.floats(min_value=1_000, max_value=5_000_000), st.integers(0, 5), st.integers(0, 2))
def test_sweep_bracket_always_narrows(capacity: float, refine: int, extra: int) -> None:
    rates = sweep.ladder(10_000, 2, 4_000_000, 12)
    run = _sweep(capacity, rates, refine, extra)
    fails = [r for r in run if r > capacity]
    if not fails:  # the whole ladder passed
        assert run == rates
        return
    if run[0] > capacity:  # nothing passed: no bracket to bisect
        assert run == rates[: 1 + extra]
        return
    lo = max(r for r in run if r <= capacity)
    assert min(fails) / lo <= 2 ** (1 / 2**refine) * 1.000001
    assert len(set(run)) == len(run)


def test_sweep_without_refine_stops_at_the_first_failure() -> None:
    rates = [100.0, 200.0, 400.0, 800.0]
    assert _sweep(250, rates, refine=0) == [100, 200, 400]
    assert _sweep(250, rates, refine=0, extra=1) == [100, 200, 400, 800]
    assert _sweep(50, rates, refine=3) == [100]  # nothing passed: nothing to bisect
    assert _sweep(10_000, rates, refine=3) == rates  # nothing failed


# Receive-path parsing: the fast decoders against the plain reference ---------


def _native_reference(stream: bytes, room: str, now_ns: int) -> tuple[object, ...]:
    """What NativeLoadPeer must find in `stream`: transports' FrameDecoder, one body at a time."""
    decoder = FrameDecoder(16 * 1024 * 1024)
    checker = StreamChecker()
    delivered = corrupt = 0
    latencies: dict[int, int] = {}
    for body in decoder.feed(stream):
        if type(body) is not dict:
            corrupt += 1
            continue
        if body.get("t") == "msg" and body.get("room") == room:
            if not isinstance(body.get("seq"), int):
                corrupt += 1
                continue
            checker.see(body["seq"])
            delivered += 1
            try:
                ts = payload.ts_of(body["text"])
            except (ValueError, KeyError, TypeError):
                corrupt += 1
                continue
            us = (now_ns - ts) // 1000
            latencies[us] = latencies.get(us, 0) + 1
        elif body.get("t") == "joined" and body.get("room") == room:
            checker.next = int(body.get("seq", 0)) + 1
    return (delivered, corrupt, checker.unique, checker.gaps, checker.duplicates,
            checker.reorders, latencies)


def _native_outcome(p: NativeLoadPeer) -> tuple[object, ...]:
    t = p.tally()
    return (t.delivered, t.corrupt, t.unique, t.gaps, t.duplicates, t.reorders,
            p.drain_latencies())


def _native_stream() -> bytes:
    """A join, in-order, gap, late, duplicate and damaged messages, other rooms' too."""

    def msg(seq: object, text: object = None, room: str = "r") -> bytes:
        return frame({"t": "msg", "room": room, "seq": seq, "ts": 1.5, "from": "s",
                      "text": payload.make(1_000_000 + 7 * int(str(seq)), 0, 1, 80)
                      if text is None else text})

    bad_msgpack = struct.pack(">I", 3) + b"\xc1\xc1\xc1"
    not_a_map = frame_packed(msgpack.packb([1, 2]))
    return b"".join([
        frame({"t": "welcome", "v": 1, "nick": "n", "server": "x"}),
        frame({"t": "joined", "room": "r", "members": ["n"], "seq": 9}),
        msg(10), msg(11), msg(14), msg(12), msg(11), msg(99, room="other"),
        bad_msgpack, not_a_map, msg(15, text="no payload here"), msg(16, text=7),
        frame({"t": "msg", "room": "r", "from": "s", "text": "seq missing"}),
        frame({"t": "presence", "room": "r", "nick": "x", "joined": True}),
        msg(17), msg(13),
    ])


def test_native_peer_matches_reference_at_every_split() -> None:
    stream = _native_stream()
    want = _native_reference(stream, "r", 5_000_000)
    # delivered 10 11 14 12 11 15 16 17 13; corrupt: 2 bad bodies, 2 bad texts, 1 no seq
    assert want[:6] == (9, 5, 8, 0, 1, 2)
    for cut in range(len(stream) + 1):
        p = NativeLoadPeer("n", "r", 80, True)
        p.feed(stream[:cut], 5_000_000)
        p.feed(stream[cut:], 5_000_000)
        assert p.ready and _native_outcome(p) == want, cut
    p = NativeLoadPeer("n", "r", 80, True)
    for i in range(len(stream)):
        p.feed(stream[i : i + 1], 5_000_000)
    assert _native_outcome(p) == want


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=8))
def test_native_peer_any_chunking(cuts: list[int]) -> None:
    stream = _native_stream()
    want = _native_reference(stream, "r", 5_000_000)
    p = NativeLoadPeer("n", "r", 80, True)
    pos = 0
    k = 0
    while pos < len(stream):
        step = cuts[k % len(cuts)]
        p.feed(stream[pos : pos + step], 5_000_000)
        pos += step
        k += 1
    assert _native_outcome(p) == want


def test_native_peer_oversized_frame_is_fatal_after_the_frames_before_it() -> None:
    p = NativeLoadPeer("n", "r", 64, True)
    p.feed(frame({"t": "joined", "room": "r", "members": [], "seq": 0}), 0)
    ok = frame({"t": "msg", "room": "r", "seq": 1, "ts": 0, "from": "s",
                "text": payload.make(0, 0, 1, 64)})
    p.feed(ok + struct.pack(">I", MAX_FRAME + 1) + b"junk", 10_000)
    assert p.error == "frame_too_large" and p.delivered == 1 and p.corrupt == 1
    p.feed(ok, 10_000)  # no resync after a fatal framing error
    assert p.delivered == 1 and p.checker.duplicates == 0


def test_native_sender_ignores_everything_after_joining() -> None:
    p = NativeLoadPeer("n", "r", 64, False)
    p.feed(frame({"t": "joined", "room": "r", "members": [], "seq": 3})[:5], 0)
    assert not p.ready
    p.feed(frame({"t": "joined", "room": "r", "members": [], "seq": 3})[5:], 0)
    assert p.ready
    p.feed(b"\xff" * 50, 0)
    assert p.corrupt == 0


def _old_parse_line(line: bytes, start: int, size: int) -> tuple[int, bytes, int]:
    """payload.parse_line as it was before parse_span: the reference."""
    ts = int(line[start + 2 : start + 2 + payload.TS_DIGITS])
    rest = line[start + 3 + payload.TS_DIGITS :].split(b" ", 2)
    if len(rest) < 3:
        raise ValueError("short")
    head = payload.HEADER_MIN + len(rest[0]) + len(rest[1]) + 2
    if len(line) - start != max(size, head):
        raise ValueError("length")
    return ts, rest[0], int(rest[1])


@given(st.integers(0, 10**19), st.integers(0, 10**6), st.integers(1, 10**9),
       st.integers(0, 300), st.integers(0, 4), st.integers(0, 200), st.binary(max_size=3))
def test_parse_span_agrees_with_the_old_parser(
    ts: int, sender: int, counter: int, size: int, prefix: int, cut: int, junk: bytes,
) -> None:
    head = b"<x> "[:prefix]
    good = head + payload.make(ts, sender, counter, size).encode()
    assert payload.parse_line(good, len(head), size) == (ts, str(sender).encode(), counter)
    for line in (good, good[:cut], good[:cut] + junk + good[cut:]):
        s = line.find(payload.MARK_B)
        if s < 0:
            continue
        try:
            want: object = _old_parse_line(line, s, size)
        except ValueError:
            want = ValueError
        for raw in (line, line + b"\r"):  # a CR past `end` is not part of the payload
            try:
                got: object = payload.parse_span(raw, s, len(line), size)
            except ValueError:
                got = ValueError
            assert got == want


def test_line_peers_agree_at_every_split() -> None:
    def run(peer: TextLoadPeer | IrcLoadPeer, stream: bytes, cut: int) -> tuple[object, ...]:
        peer.feed(stream[:cut], 2_000_000)
        peer.feed(stream[cut:], 2_000_000)
        t = peer.tally()
        return (t.delivered, t.unique, t.corrupt, t.gaps, t.duplicates, t.reorders,
                sorted(peer.streams), peer.drain_latencies())

    text = b"".join(b"<s> " + _line(s, k) + b"\n" for k in (1, 2, 4, 3, 3) for s in (0, 1))
    text += b"<s> " + _line(0, 5)[:30] + b"\n* notice\n"
    irc = b"".join(b":s!~s@h PRIVMSG #r :" + _line(s, k) + b"\r\n"
                   for k in (1, 2, 3) for s in (0, 7))
    irc += b":s!~s@h PRIVMSG #r :" + _line(7, 4) + b"x\r\n"
    # (delivered, unique, corrupt, gaps, duplicates, reorders) of each whole stream
    for make, stream, counts in (
            (lambda: TextLoadPeer("n", "r", 64, True, greeting=False), text, (10, 8, 1, 0, 2, 2)),
            (lambda: _ready_irc(), irc, (6, 6, 1, 0, 0, 0))):
        want = run(make(), stream, 0)
        assert want[:6] == counts
        for cut in range(len(stream) + 1):
            assert run(make(), stream, cut) == want, cut


def _ready_irc() -> IrcLoadPeer:
    p = IrcLoadPeer("n", "r", 64, True)
    p.ready = True
    return p


def test_line_peer_counts_an_endless_line_once() -> None:
    p = TextLoadPeer("n", "r", 64, True, greeting=False)
    chunk = b"x" * (64 * 1024)
    for _ in range(17):
        p.feed(chunk, 0)
    assert p.corrupt == 1
    p.feed(b"\n<s> " + _line(0, 1) + b"\n", 2_000_000)  # resyncs at the next newline
    assert p.unique() == 1 and p.corrupt == 1


def test_record_counts_fills_the_same_buckets_as_one_value_at_a_time() -> None:
    rnd = random.Random(3)
    counts: dict[int, int] = {}
    for _ in range(20_000):
        us = int(rnd.lognormvariate(8, 2.5)) - 3  # some <1 and some over the top
        counts[us] = counts.get(us, 0) + 1
    one = histo.new_histogram()
    for us, n in counts.items():
        one.record_value(min(max(us, 1), histo.HIGHEST_US), n)
    bulk = histo.new_histogram()
    histo.record_counts(bulk, counts)
    assert histo.encode(bulk) == histo.encode(one)
    assert list(bulk.counts) == list(one.counts)


def test_percentile_of_counts_matches_the_histogram() -> None:
    """The live p99 comes from the parent's plain counts, not a histogram:
    it must be the value HDR would give for the same deliveries."""
    rnd = random.Random(5)
    for _ in range(40):
        counts: dict[int, int] = {}
        parts = []
        for _ in range(rnd.randint(1, 4)):
            raw: dict[int, int] = {}
            for _ in range(rnd.randint(1, 2_000)):
                us = int(rnd.lognormvariate(rnd.uniform(3, 11), rnd.uniform(0.2, 2.0)))
                raw[us] = raw.get(us, 0) + rnd.randint(1, 3)
            parts.append(histo.bucket_counts(raw))
            histo.add_counts(counts, parts[-1])
        hist = histo.merge_counts(histo.new_histogram(), parts)
        assert sum(counts.values()) == hist.get_total_count()
        for p in (0.0, 50.0, 90.0, 99.0, 99.9, 100.0):
            assert histo.percentile_us(counts, p) == hist.get_value_at_percentile(p)
    assert histo.percentile_us({}, 99.0) == 0


def test_latency_point_reports_the_median_run_and_every_run() -> None:
    from benchmarks.suite import median_run

    runs = [{"latency_ms": {"p50": p50, "p99": p99}, "tag": tag}
            for tag, p50, p99 in (("a", 3.0, 66.0), ("b", 1.0, 9.0), ("c", 2.0, 12.0))]
    chosen = median_run(runs)
    assert chosen["tag"] == "c"  # p99 12 is the median of 9, 12, 66
    assert chosen["p99_runs_ms"] == [66.0, 9.0, 12.0]
    assert chosen["p50_runs_ms"] == [3.0, 1.0, 2.0]
    assert median_run(runs[:2])["tag"] == "b"  # two runs: the lower one
    assert median_run(runs[:1])["tag"] == "a"


def test_pooled_latency_counts_every_run_by_its_deliveries() -> None:
    """A run with a stall weighs in the pooled p99 by its share of deliveries,
    which the median run hides."""
    from benchmarks.suite import median_run

    def run(values_us: list[int]) -> dict[str, Any]:
        h = histo.new_histogram()
        for v in values_us:
            h.record_value(v)
        return {"latency_ms": histo.summary_ms(h), "latency_hist": histo.encode(h)}

    calm = [1000] * 990 + [5000] * 10           # p99 1 ms
    stalled = [1000] * 940 + [50_000] * 60      # p99 50 ms: a 6 % stall
    runs = [run(calm), run(calm), run(stalled)]
    chosen = median_run(runs)
    assert chosen["latency_ms"]["p99"] == 1.0
    pooled = chosen["pooled_ms"]
    assert pooled["count"] == 3000
    # 60 stalled deliveries of 3,000 (2 %): the pooled p99 is the stall's
    assert 49.0 <= pooled["p99"] <= 51.0
    assert pooled["p50"] == 1.0


def test_idle_release_is_timed_from_the_start_of_the_drop() -> None:
    """The relay may be back to idle before the load processes have exited:
    the release time counts from when the drop began, never 0 for that."""
    import os
    import time

    from benchmarks.idle import thread_count, wait_released

    me = [os.getpid()]
    began = time.monotonic() - 3.0  # the drop began 3 s ago
    released = wait_released(me, thread_count(me), began, limit_s=10.0)
    assert released is not None and 3.0 <= released < 10.0
    assert wait_released(me, thread_count(me) - 1, time.monotonic(), limit_s=0.3) is None


def _relay_error(dialect: str) -> bytes:
    """A rate_limited error exactly as the relay's codec for `dialect` writes it."""
    from transports.irc import IrcServerCodec
    from transports.native import NativeServerCodec
    from transports.text import TextServerCodec

    codec = {"native": NativeServerCodec, "text": TextServerCodec, "irc": IrcServerCodec}[dialect]()
    return codec.encode({"t": "error", "code": "rate_limited", "ref": "say",
                         "text": "over 20 messages/s (burst 40); this one was dropped"})


def test_senders_notice_the_relays_errors_in_what_they_discard() -> None:
    """A sender reads everything only to throw it away, but an error in it (say,
    the relay's rate limit) is kept, so the report can say why it lost."""
    traffic = {
        "native": frame({"t": "msg", "room": "bench", "seq": 1, "text": "code"}),
        "text": b"<a> hello error\n",
        "irc": b":a!a@relay PRIVMSG #bench :hello :error\r\n",
    }
    expect = {"native": "rate_limited", "irc": "rate_limited",
              "text": "over 20 messages/s (burst 40); this one was dropped"}
    for dialect, peer_cls in (("native", NativeLoadPeer), ("text", TextLoadPeer),
                              ("irc", IrcLoadPeer)):
        peer = peer_cls("s1", "bench", 100, checking=False)
        peer.ready = True
        peer.feed(traffic[dialect], 0)
        assert peer.error is None, dialect  # ordinary traffic is no error
        peer.feed(traffic[dialect] + _relay_error(dialect) + traffic[dialect], 0)
        assert peer.error == expect[dialect], dialect


def test_irc_senders_notice_any_servers_closing_error_line() -> None:
    """Another IRC server's flood limit ends a sender with an ERROR line: the
    report gives its reason, whether the line starts the read or follows others."""
    closing = b"ERROR :Closing Link: s1[127.0.0.1] (Excess Flood)\r\n"
    mid_line = b":a!a@irc PRIVMSG #bench :why ERROR :is no error here\r\n"
    for data in (closing, mid_line + closing):
        peer = IrcLoadPeer("s1", "bench", 100, checking=False)
        peer.ready = True
        peer.feed(mid_line, 0)
        assert peer.error is None
        peer.feed(data, 0)
        assert peer.error == "Closing Link: s1[127.0.0.1] (Excess Flood)"


def test_a_long_error_line_is_cut_to_error_text_bytes() -> None:
    """A server's long reason is kept to its first ERROR_TEXT bytes (not characters),
    as the C engine keeps it, so both engines report the same text."""
    reason = "Closing Link: " + "é" * dialects.ERROR_TEXT  # 14 bytes, then 2 per character
    peer = IrcLoadPeer("s1", "bench", 100, checking=False)
    peer.ready = True
    peer.feed(b"ERROR :" + reason.encode() + b"\r\n", 0)
    assert peer.error == "Closing Link: " + "é" * ((dialects.ERROR_TEXT - 14) // 2)


def _suite_data(peaks: list[dict[str, Any]]) -> dict[str, Any]:
    env = {"cpu_model": "CPU", "machine": "x86_64", "cpu_count": 2, "python": "3.11",
           "platform": "Linux", "time": "T"}
    lat = {"latency_ms": {"p50": 2.0, "p99": 7.0}, "p50_runs_ms": [2.5, 1.5, 2.0],
           "p99_runs_ms": [7.0, 5.0, 30.0], "pooled_ms": {"p99": 9.0},
           "generator": {"engine": "c"}}
    return {"environment": env, "p99_limit_ms": 100.0, "peaks": peaks,
            "latency": {"chat-relay-w2": lat}, "skipped": {}}


def test_suite_table_shows_p50_and_p99_of_the_latency_point() -> None:
    from benchmarks.suite import markdown

    peak = {"server": "chat-relay-w2", "receivers": 100, "deliveries_per_s": 2.0e6,
            "max_delivered_per_s": 2.2e6, "generator_bottleneck": False, "steps": [],
            "first_failure": None}
    full = markdown(_suite_data([peak]))
    assert "| server | N=100 | p50 at 1k msg/s | p99 at 1k msg/s, N=100 |" in full
    assert "|---|---|---|---|" in full
    assert ("| chat-relay-w2 | 2,000k / 2,200k | 2.00 ms | 7.0 ms (5.0-30.0); "
            "all runs 9.0 ms |") in full
    assert "Deliveries/s: peak sustained" in full
    alone = markdown(_suite_data([]))
    assert "| server | p50 at 1k msg/s | p99 at 1k msg/s, N=100 |" in alone
    assert "send lag" not in full  # results from before it was kept
    data = _suite_data([peak])
    data["latency"]["chat-relay-w2"]["generator"]["send_lag_ms"] = {"p99": 1.94, "count": 9.0}
    assert ("the load generator's own send lag p99 at 1k msg/s (median run; it is part of "
            "the latency above): chat-relay-w2 1.9 ms.") in markdown(data)
    assert "|---|---|---|" in alone
    assert "Deliveries/s" not in alone  # no peak columns to explain


def test_a_latency_only_run_keeps_the_full_table(tmp_path: Path) -> None:
    from rich.console import Console

    from benchmarks.suite import write_outputs

    (tmp_path / "latest.md").write_text("full suite table\n", encoding="utf-8")
    write_outputs(_suite_data([]), tmp_path, "2026-11-27-latency", Console(quiet=True))
    assert (tmp_path / "2026-11-27-latency.md").read_text(encoding="utf-8").startswith("Machine")
    assert (tmp_path / "latest.md").read_text(encoding="utf-8") == "full suite table\n"


def test_a_second_run_on_one_day_never_replaces_the_first(tmp_path: Path) -> None:
    import time

    from benchmarks.suite import result_stamp

    at = time.strptime("2026-11-27 07:34", "%Y-%m-%d %H:%M")
    assert result_stamp(tmp_path, "", now=at) == "2026-11-27"
    assert result_stamp(tmp_path, "-latency", now=at) == "2026-11-27-latency"
    (tmp_path / "2026-11-27-latency.json").write_text("{}", encoding="utf-8")
    assert result_stamp(tmp_path, "-latency", now=at) == "2026-11-27-0734-latency"
    assert result_stamp(tmp_path, "", now=at) == "2026-11-27"


def test_the_floor_row_is_explained_under_the_table() -> None:
    from benchmarks.suite import markdown

    data = _suite_data([])
    assert "floor" not in markdown(data)
    data["latency"]["floor-w2"] = data["latency"]["chat-relay-w2"]
    table = markdown(data)
    assert "| floor-w2 | 2.00 ms |" in table
    assert "- floor-w2: chat-relay's design with nothing on top" in table


def test_loss_that_no_connection_explains_gets_a_hint() -> None:
    from benchmarks.runner import silent_loss_warning

    hint = silent_loss_warning(9360, 10000, {}, 0, 5.0)
    assert hint is not None
    assert hint.startswith("9,360 of 10,000 deliveries had not arrived 5 s after the last send")
    assert "flood limit" in hint and "--drain" in hint
    assert silent_loss_warning(0, 10000, {}, 0, 5.0) is None
    assert silent_loss_warning(10, 100, {"slow_consumer": 1}, 0, 5.0) is None  # explained
    assert silent_loss_warning(10, 100, {}, 10, 5.0) is None  # corrupt lines: shown as such


def test_result_table_says_when_no_latency_was_measured() -> None:
    from rich.console import Console

    from benchmarks.report import latency_rows, result_table

    empty = histo.summary_ms(histo.new_histogram())
    assert latency_rows(empty) == [
        ("latency", "none: nothing sent in the timed window arrived")]
    h = histo.new_histogram()
    h.record_value(2500)
    assert latency_rows(histo.summary_ms(h))[0] == ("latency p50 / p90", "2.50 / 2.50 ms")
    r = {"latency_ms": empty, "offered_rate": 200.0, "sent": 10, "expected": 100,
         "delivered": 0, "lost": 100, "loss_ratio": 1.0, "duplicates": 0, "reorders": 0,
         "corrupt": 0, "deliveries_per_s": 0.0,
         "connect": {"connected": 12, "failed": 0, "rate_per_s": 11.0,
                     "latency_ms": {"p50": 1.0, "p99": 2.0}},
         "generator": {"busy": [0.02], "late_sends": 0, "max_send_lag_ms": 0.0}}
    console = Console(width=120, record=True)
    console.print(result_table(r))
    text = console.export_text()
    assert "none: nothing sent" in text and "0.00 / 0.00 ms" not in text


def test_contention_summary_keeps_cases_apart_and_sums_the_machines_cpu() -> None:
    """benchmarks.experiments.contention: each case's medians come from its own runs only,
    and the CPU sum is per run (server + generator + hog), then the median."""
    from benchmarks.experiments.contention import Case, duty, markdown, summarize

    def run(case: Case, p50: float, p99: float, server: float, gen: float,
            hog: float) -> dict[str, Any]:
        h = histo.new_histogram()
        for _ in range(99):
            h.record_value(int(p50 * 1000))
        h.record_value(int(p99 * 1000))
        return {"case": case.label, "p50_ms": p50, "p99_ms": p99, "lost": 0,
                "server_cpu": server, "generator_cpu": gen, "hog_cpu": hog,
                "latency_hist": histo.encode(h)}

    alone, hogged = Case("ngircd", 0.0), Case("ngircd", 0.6)
    assert (alone.label, hogged.label) == ("ngircd", "ngircd + hog 60%")
    runs = [run(alone, 0.8, 3.0, 0.5, 0.5, 0.0), run(hogged, 1.8, 7.0, 0.5, 0.6, 0.6),
            run(alone, 0.9, 13.0, 0.5, 0.5, 0.0), run(hogged, 2.0, 8.0, 0.6, 0.6, 0.6),
            run(alone, 1.0, 5.0, 0.6, 0.4, 0.0), run(hogged, 1.6, 6.0, 0.5, 0.7, 0.5)]
    rows = summarize(runs)
    assert [r["case"] for r in rows] == ["ngircd", "ngircd + hog 60%"]
    first, second = rows
    assert (first["runs"], first["p50_ms"], first["p99_ms"]) == (3, 0.9, 5.0)
    assert (first["p99_min_ms"], first["p99_max_ms"]) == (3.0, 13.0)
    assert first["total_cpu"] == 1.0 and first["hog_cpu"] == 0.0
    assert (second["p50_ms"], second["p99_ms"]) == (1.8, 7.0)
    assert abs(second["total_cpu"] - 1.7) < 1e-9
    assert "| ngircd + hog 60% | 3 | 1.80 | 7.0 (6.0-8.0) |" in markdown(rows, 2)
    assert duty(0.6) == (0.6 * 0.001, 0.4 * 0.001)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="hog share"):
            duty(bad)


def test_live_progress_reads_one_percentile_not_the_whole_summary(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The live p99 costs one percentile walk: summary_ms() (~80 ms of pure
    Python a call, four calls a second) in the parent took ~0.2 CPU from the
    relay and the load processes during every chat-bench run."""
    from benchmarks import runner

    seen: list[dict[str, Any]] = []
    run = runner.Run(RunConfig(), seen.append)
    run.counts, run.latest, run.t_start = {}, {}, 0

    def whole_summary(_h: Any) -> dict[str, float]:
        raise AssertionError("summary_ms() on every progress report")

    monkeypatch.setattr(runner.histo, "summary_ms", whole_summary)
    for k in range(2):
        run._other(k, "progress", {"sent": 10, "delivered": 100, "gaps": 0,
                                   "latencies": {1000: 98, 9000: 2}})
    assert [p["sent"] for p in seen] == [10, 20]
    assert 9.0 <= seen[-1]["p99_ms"] <= 9.01  # HDR: 3 significant digits


def test_live_line_fits_80_columns_and_shows_no_latency_before_it_is_measured() -> None:
    """During the warm-up no timed message has arrived: the line says so
    rather than showing p99 0.00 ms."""
    from benchmarks import runner
    from benchmarks.report import live_line

    seen: list[dict[str, Any]] = []
    run = runner.Run(RunConfig(warmup=3600.0), seen.append)
    run.counts, run.latest, run.t_start = {}, {}, time.monotonic_ns()
    run._other(0, "progress", {"sent": 5, "delivered": 50, "gaps": 0, "latencies": {}})
    assert seen[-1]["p99_ms"] is None and seen[-1]["warming_up"]
    assert live_line(seen[-1], 100.0).endswith("p99 (warm-up)")
    run.cfg = RunConfig(warmup=0.0)
    run._other(0, "progress", {"sent": 6, "delivered": 60, "gaps": 0, "latencies": {}})
    assert live_line(seen[-1], 100.0).endswith("p99 -")  # timed, nothing arrived yet
    run._other(0, "progress", {"sent": 7, "delivered": 70, "gaps": 0,
                               "latencies": {1000: 99, 9000: 1}})
    assert live_line(seen[-1], 100.0).endswith("p99    1.00 ms")
    worst = {"elapsed": 999.9, "sent": 999_999_999, "delivered": 0, "gaps": 999_999,
             "p99_ms": 99_999.99}
    assert len(live_line(worst, 99_999_999.0)) <= 80
