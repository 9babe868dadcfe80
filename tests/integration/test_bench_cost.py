"""The server's CPU per delivery: /proc reading, port -> PID, where it is shown."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from benchmarks import proctree
from benchmarks.runner import RunError
from tests.relayproc import RelayProcess

# A child that burns `BURN` CPU-seconds, says so, then idles until its stdin closes.
BURN = 0.3
BURNER = ("import sys, time\n"
          f"while time.process_time() < {BURN}:\n    pass\n"
          "print('burnt', flush=True)\nsys.stdin.read()\n")
# Tick counts become seconds by division: 2903/100 + 30/100 is a hair above
# 2933/100 in floating point, so sums are compared to within half a tick.
HALF_TICK = 0.5 / proctree.TICKS


def test_stat_fields_are_counted_from_the_last_parenthesis() -> None:
    """A command name may hold spaces and ')': ppid and the four CPU fields
    must still be the right ones (utime 11 + stime 12 + cutime 13 + cstime 14)."""
    line = ("4242 (a) b (c)) S 77 4242 4242 0 -1 4194560 100 0 0 0 "
            "11 12 13 14 20 0 3 0 123 456 78 18446744073709551615")
    assert proctree.parse_stat(line) == (77, 11 + 12 + 13 + 14)


def test_a_child_that_burns_cpu_shows_up_in_its_parents_tree_and_stays_after_it_exits() -> None:
    me = os.getpid()
    child = subprocess.Popen([sys.executable, "-c", BURNER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "burnt\n"
        assert child.pid in proctree.tree([me])
        burnt = proctree.cpu_seconds([child.pid])
        assert burnt >= BURN - 0.02  # clock ticks: 10 ms
        # Read the parent alone first: the tree's total can only be higher.
        alone = proctree.cpu_seconds([me])
        assert proctree.tree_cpu([me]) >= alone + burnt - HALF_TICK
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)  # reaped: its CPU moves into our cutime + cstime
    assert child.pid not in proctree.tree([me])
    assert proctree.cpu_seconds([me]) >= alone + burnt - HALF_TICK


def test_a_pid_that_does_not_exist_weighs_nothing() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    assert proctree.tree([gone.pid]) == []
    assert proctree.tree_cpu([gone.pid]) == 0.0


def _args(host: str, port: int, pids: list[int] | None = None) -> argparse.Namespace:
    return argparse.Namespace(host=host, port=port, server_pid=pids)


def test_the_port_leads_to_the_relays_supervisor_and_its_whole_tree() -> None:
    """chat-bench HOST PORT on this machine finds the relay by its listening
    socket: the workers share the supervisor's, so the root is the supervisor
    (not pytest, which runs the same python), and its tree holds the hub."""
    from benchmarks.cli import find_server

    with RelayProcess(workers=2) as relay:
        workers, hub = relay.worker_pids(), relay.hub_pid()
        assert set(workers) <= set(proctree.listening_pids(relay.port))
        assert proctree.server_roots(relay.port) == [relay.pid]
        assert find_server(_args("127.0.0.1", relay.port)) == ((relay.pid,), None)
        assert find_server(_args("localhost", relay.port)) == ((relay.pid,), None)
        tree = proctree.tree([relay.pid])
        assert {relay.pid, hub, *workers} <= set(tree)
        assert os.getpid() not in tree


def test_no_pid_is_guessed_for_a_remote_host_or_a_port_nobody_listens_on() -> None:
    from benchmarks.cli import find_server

    pids, why = find_server(_args("192.0.2.1", 8081))  # TEST-NET-1: never this machine
    assert pids == () and why is not None and "192.0.2.1 is not this machine" in why
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    with pytest.raises(RunError, match=f"--server-pid {gone.pid}: no such process"):
        find_server(_args("192.0.2.1", 8081, [gone.pid]))
    assert find_server(_args("192.0.2.1", 8081, [os.getpid()])) == ((os.getpid(),), None)
    import socket

    with socket.socket() as s:  # bound, not listening: nobody serves this port
        s.bind(("127.0.0.1", 0))
        pids, why = find_server(_args("127.0.0.1", s.getsockname()[1]))
    assert pids == () and why is not None and "pass --server-pid" in why


def _result(cpu: dict[str, Any]) -> dict[str, Any]:
    return {"latency_ms": {"p50": 1.0, "p90": 1.0, "p99": 2.0, "p99_9": 2.0, "max": 3.0,
                           "count": 10},
            "offered_rate": 200.0, "sent": 10, "expected": 100, "delivered": 100, "lost": 0,
            "loss_ratio": 0.0, "duplicates": 0, "reorders": 0, "corrupt": 0,
            "deliveries_per_s": 100.0, "server_cpu": cpu,
            "connect": {"connected": 12, "failed": 0, "rate_per_s": 11.0,
                        "latency_ms": {"p50": 1.0, "p99": 2.0}},
            "generator": {"busy": [0.02], "late_sends": 0, "max_send_lag_ms": 0.0}}


def test_the_table_shows_the_servers_cpu_per_delivery_or_a_dash() -> None:
    from benchmarks.report import result_table, server_cpu_note

    console = Console(width=120, record=True)
    weighed = _result({"pids": [1, 2, 3], "cpu_s": 0.25, "us_per_delivery": 12.345})
    console.print(result_table(weighed))
    text = console.export_text()
    assert "server CPU per delivery" in text
    assert "12.35 µs (0.25 CPU-s, 3 processes)" in text
    assert server_cpu_note(weighed) == "  server 12.35 µs/delivery"
    coarse = _result({"pids": [1], "cpu_s": 0.01, "us_per_delivery": 40.0,
                      "tick_us_per_delivery": 40.0})  # one tick in the whole window
    console.print(result_table(coarse))
    assert "40.00 µs (0.01 CPU-s, 1 process) ±40.00: run longer" in console.export_text()
    console.print(result_table(_result({"pids": [], "cpu_s": None, "us_per_delivery": None})))
    row = [ln for ln in console.export_text().splitlines() if "server CPU per" in ln]
    assert row and row[0].rstrip(" │").endswith(" -")


def test_chat_bench_weighs_the_relay_it_finds_and_writes_it_to_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import cli

    out = tmp_path / "run.json"
    with RelayProcess(workers=1, args=["--rate-limit", "0"]) as relay:
        rc = cli.main(["127.0.0.1", str(relay.port), "-n", "3", "-s", "1", "-p", "1",
                       "-r", "100", "-d", "0.5", "--warmup", "0.2", "--drain", "2",
                       "--json", str(out)])
        tree = set(proctree.tree([relay.pid]))
    text = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    cpu = data["run"]["server_cpu"]
    assert data["server_not_weighed"] is None
    assert relay.pid in cpu["pids"] and set(cpu["pids"]) == tree
    assert cpu["cpu_s"] is not None and cpu["cpu_s"] >= 0
    deliveries = data["run"]["deliveries_per_s"] * 0.5  # in the timed window
    assert cpu["us_per_delivery"] == pytest.approx(cpu["cpu_s"] * 1e6 / deliveries,
                                                   abs=0.01, rel=0.01)
    assert cpu["tick_us_per_delivery"] == pytest.approx(1e6 / proctree.TICKS / deliveries)
    assert f"server CPU per delivery: process tree(s) of PID {relay.pid}" in text
    assert "server CPU per" in text


def test_suite_table_has_a_cpu_column_for_every_server() -> None:
    from benchmarks.suite import markdown, median_run

    env = {"cpu_model": "CPU", "machine": "x86_64", "cpu_count": 2, "python": "3.11",
           "platform": "Linux", "time": "T"}

    def run(p99: float, us: float | None) -> dict[str, Any]:
        return {"latency_ms": {"p50": 1.0, "p99": p99}, "generator": {"engine": "c"},
                "server_cpu": {"pids": [1] if us else [], "cpu_s": 1.0 if us else None,
                               "us_per_delivery": us}}

    peak = {"server": "chat-relay-w2", "receivers": 100, "deliveries_per_s": 2.0e6,
            "max_delivered_per_s": 2.2e6, "generator_bottleneck": False, "steps": [],
            "first_failure": None, "server_cpu_us_per_delivery": 0.84}
    data = {"environment": env, "p99_limit_ms": 100.0, "peaks": [peak], "skipped": {},
            "latency": {"chat-relay-w2": median_run([run(5, 3.0), run(6, 1.0), run(7, 2.0)]),
                        "ngircd": median_run([run(5, None)])}}
    table = markdown(data)
    assert "| p99 at 1k msg/s, N=100 | CPU µs/delivery |" in table
    assert "|---|---|---|---|---|" in table
    assert [ln for ln in table.splitlines() if ln.startswith("| chat-relay-w2 |")][0].endswith(
        "| 2.0 |")
    assert [ln for ln in table.splitlines() if ln.startswith("| ngircd |")][0].endswith("| - |")
    assert ("- server CPU µs per delivery at the sustained peak, N=100: "
            "chat-relay-w2 0.84.") in table


def test_idle_weighs_the_relay_found_by_its_port_and_nothing_above_it() -> None:
    """--idle's RSS is the relay's tree: found by the port like the CPU figure,
    never climbing into the Python process that started the relay (pytest
    here, the suite in make bench), which runs the same executable."""
    from benchmarks.idle import run_idle
    from benchmarks.runner import RunConfig

    with RelayProcess(workers=1) as relay:
        cfg = RunConfig(port=relay.port, procs=1, connect_timeout=10.0)
        found = run_idle(cfg, 5, 0.2, None)
        tree = proctree.tree([relay.pid])
        unknown = run_idle(cfg, 5, 0.2, [])  # a remote host: nothing to weigh
    assert found["relay_pids"] == tree and os.getpid() not in tree
    assert found["connect"]["connected"] == 5 and found["rss_per_connection"] is not None
    assert found["release_s"] is not None
    assert unknown["relay_pids"] == [] and unknown["rss_per_connection"] is None
    assert "relay not found on this host: RSS not measured" in unknown["warnings"][-1]
