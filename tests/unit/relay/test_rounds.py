"""SendRounds: output goes at once when the worker is idle, in held rounds when busy."""

from __future__ import annotations

import pytest

from relay.worker.fanout import SendRounds


def test_idle_worker_sends_at_once() -> None:
    r = SendRounds(max_linger=0.02)
    assert not r.hold(100.0)
    r.sent(100.0, 100.001)  # a 1 ms round
    # Long after the last round: no linger, whatever the cost was.
    assert not r.hold(101.0)


def test_busy_worker_holds_for_factor_times_round_cost() -> None:
    r = SendRounds(max_linger=0.02, factor=2.0)
    r.cost = 0.003
    r.sent(10.0, 10.003)  # cost moves towards 3 ms, stays 3 ms
    assert r.cost == pytest.approx(0.003)
    assert r.hold(10.004)
    assert r.due == pytest.approx(10.003 + 0.006)
    # More output before the round: it joins the held round, due unchanged.
    assert r.hold(10.005)
    assert r.due == pytest.approx(10.009)
    r.sent(10.009, 10.012)
    assert r.due is None


def test_default_linger_is_a_quarter_of_a_round() -> None:
    r = SendRounds(max_linger=0.02)
    r.cost = 0.004
    r.last_end = 1.0
    assert r.hold(1.0005)
    assert r.due == pytest.approx(1.001)  # the worker spends at most 80 % in send rounds
    r.due = None
    assert not r.hold(1.0011)


def test_linger_is_capped_by_max_linger() -> None:
    r = SendRounds(max_linger=0.02, factor=2.0)
    r.cost = 0.5  # a pathological 500 ms round
    r.last_end = 5.0
    assert r.hold(5.001)
    assert r.due == pytest.approx(5.02)


def test_exactly_at_the_linger_bound_sends_at_once() -> None:
    r = SendRounds(max_linger=0.02, factor=2.0)
    r.cost = 0.005
    r.last_end = 1.0
    assert r.hold(1.0 + 0.0099)
    r.due = None
    assert not r.hold(1.0 + 0.0101)


def test_zero_max_linger_never_holds() -> None:
    r = SendRounds(max_linger=0.0)
    r.cost = 0.01
    r.last_end = 1.0
    assert not r.hold(1.0)


def test_urgent_output_is_never_held() -> None:
    r = SendRounds(max_linger=0.02)
    r.cost = 0.01
    r.last_end = 1.0
    assert r.hold(1.001)
    assert not r.hold(1.002, urgent=True)


def test_cost_is_a_moving_average() -> None:
    r = SendRounds(max_linger=1.0)
    r.sent(0.0, 0.004)
    assert r.cost == pytest.approx(0.001)
    for i in range(50):
        r.sent(float(i), i + 0.004)
    assert r.cost == pytest.approx(0.004, rel=1e-3)


def test_small_rounds_in_a_steady_stream_wait_the_minimum_linger() -> None:
    r = SendRounds(max_linger=0.02, min_linger=0.002)
    r.sent(1.0, 1.0001)  # a 0.1 ms round: a quarter of it would hold nothing
    assert r.hold(1.001)
    assert r.due == pytest.approx(1.0021)
    r.sent(1.0021, 1.0022)
    assert not r.hold(1.0043)  # a pause longer than the minimum: at once


def test_minimum_linger_is_capped_by_max_linger() -> None:
    r = SendRounds(max_linger=0.0, min_linger=0.002)
    r.sent(1.0, 1.0001)
    assert not r.hold(1.0002)


def test_fanout_rounds_use_the_minimum_linger() -> None:
    from relay.worker.fanout import MIN_LINGER, Fanout

    f = Fanout("w", {}, {}, 1 << 20, 0.02, lambda what, exc: None)
    assert f.rounds.min_linger == MIN_LINGER > 0
