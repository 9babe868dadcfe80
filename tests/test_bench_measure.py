"""chat-bench's measurement logic, without sockets: pacing, seq checks, merging."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from benchmarks import histo, payload, sweep
from benchmarks.dialects import IrcPeer, NativePeer, TextPeer
from benchmarks.pacing import Schedule, split_rate
from benchmarks.runner import RunConfig, plan_processes, process_rate
from benchmarks.seqcheck import StreamChecker
from transports.native import frame

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
    p = NativePeer("n", "r", 64, True)
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
    p = TextPeer("n", "room", 64, True, greeting=False)
    stream = b"".join(b"<guest-1> " + _line(s, k) + b"\n" for k in (1, 2, 3) for s in (0, 1))
    for i in range(len(stream)):  # one byte at a time, like a relay that splits chunks
        p.feed(stream[i : i + 1], 2_000_000)
    assert p.unique() == 6 and p.corrupt == 0
    # A chunk relayed into the middle of another line corrupts both halves.
    p.feed(_line(0, 4)[:20] + _line(1, 4) + b"\n", 2_000_000)
    assert p.corrupt == 1
    assert p.tally().gaps == 0


def test_text_peer_handshake_joins_after_greeting() -> None:
    p = TextPeer("n", "bench1", 64, True)
    assert p.feed(b"* welcome, you are guest-3; /help for commands\n", 0) == b"/join bench1\n"
    assert not p.ready
    p.feed(b"* you joined bench1\n", 0)
    assert p.ready


def test_irc_peer_registers_joins_and_answers_ping() -> None:
    p = IrcPeer("bxr1", "bench1", 64, True)
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


def test_sweep_picks_last_pass_before_first_failure() -> None:
    def step(rate: float, lost: int, p99: float) -> dict[str, object]:
        return {"offered_rate": rate, "lost": lost, "duplicates": 0, "reorders": 0,
                "corrupt": 0, "latency_ms": {"p99": p99}}

    steps = [step(100, 0, 5), step(200, 0, 9), step(400, 0, 150), step(800, 0, 50)]
    best = sweep.highest_sustained(steps, 100.0)  # type: ignore[arg-type]
    assert best is not None and best["offered_rate"] == 200
    assert sweep.should_stop(steps, 100.0)  # type: ignore[arg-type]
    assert not sweep.should_stop(steps[:3], 100.0, extra=1)  # type: ignore[arg-type]
    assert sweep.highest_sustained([step(100, 1, 1)], 100.0) is None  # type: ignore[list-item]
    assert sweep.ladder(100, 2, 1000, 10) == [100, 200, 400, 800]
