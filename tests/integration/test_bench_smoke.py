"""chat-bench end to end against a real relay and the seed baseline (a few seconds)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from benchmarks.baselines.seed_server import SeedServer
from benchmarks.runner import RunConfig, run_once
from tests.relayproc import RelayProcess

ROOT = Path(__file__).resolve().parents[2]


def _tiny(port: int, dialect: str, **kw: object) -> RunConfig:
    base: dict[str, object] = dict(port=port, dialect=dialect, receivers=6, senders=2,
                                   rate=200.0, duration=0.8, warmup=0.2, procs=2, drain=3.0,
                                   connect_timeout=10.0)
    return RunConfig(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("dialect", "engine"), [
    ("native", "c"), ("native", "python"), ("text", "c"), ("text", "python"), ("irc", "c")])
def test_chat_bench_against_relay_loses_nothing(dialect: str, engine: str) -> None:
    with RelayProcess(workers=2, args=["--rate-limit", "0"]) as relay:
        result = run_once(_tiny(relay.port, dialect, engine=engine))
    assert result["generator"]["engine"] == engine
    assert result["connect"]["connected"] == 8 and result["connect"]["failed"] == 0
    assert result["sent"] == 200  # 200 msgs/s for 1.0 s, paced, none skipped
    assert result["expected"] == 6 * 200
    assert result["delivered"] == result["expected"]
    assert result["lost"] == result["duplicates"] == result["reorders"] == 0
    assert result["ok"]
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert lat["count"] > 0
    # Every message of the timed window (after the 0.2 s warm-up) has its send lag.
    lag = result["generator"]["send_lag_ms"]
    assert lag["count"] == 160
    assert lag["max"] <= result["generator"]["max_send_lag_ms"] * 1.001 + 0.01  # HDR: 3 digits


@pytest.mark.parametrize("engine", ["c", "python"])
def test_a_load_process_without_senders_reports_its_real_cpu_share(engine: str) -> None:
    # One sender, two processes: the second only receives. Its busy share is
    # over the sending phase too, not over the instant it had nothing to send.
    with RelayProcess(workers=1, args=["--rate-limit", "0"]) as relay:
        result = run_once(_tiny(relay.port, "native", senders=1, engine=engine))
    assert result["lost"] == 0 and result["delivered"] == 6 * 200
    busy = result["generator"]["busy"]
    assert len(busy) == 2 and all(0.0 <= b <= 1.5 for b in busy), busy


def test_chat_bench_against_seed_baseline_via_cli(tmp_path: Path) -> None:
    seed = subprocess.Popen([sys.executable, "-m", "benchmarks.baselines.seed_server",
                             "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert seed.stdout is not None
        line = seed.stdout.readline()
        port = int(line.rsplit(":", 1)[1])
        out = tmp_path / "r.json"
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.cli", "127.0.0.1", str(port), "--dialect",
             "text", "--no-greeting", "-n", "4", "-s", "1", "-r", "100", "-d", "0.5",
             "--warmup", "0.1", "-p", "1", "--json", str(out)],
            cwd=ROOT, capture_output=True, text=True, timeout=40)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "deliveries/s" in proc.stdout
        import json

        data = json.loads(out.read_text())
        assert data["run"]["expected"] == 4 * 60
        assert data["run"]["lost"] == 0
        assert (data["run"]["cut_receivers"], data["run"]["shed"]) == (0, 0)
        assert "cut receivers / shed / backlog" in proc.stdout
        assert data["environment"]["cpu_count"] >= 1
    finally:
        seed.terminate()  # the process this test started, by its handle
        seed.wait(5)


@pytest.mark.parametrize("engine", ["c", "python"])
def test_chat_bench_says_when_the_relay_rate_limits_its_senders(engine: str) -> None:
    """Loss from the relay's flood limit is named, not just counted."""
    with RelayProcess(workers=1, args=["--rate-limit", "5", "--rate-burst", "5"]) as relay:
        result = run_once(_tiny(relay.port, "native", engine=engine))
    assert result["lost"] > 0 and not result["ok"]
    assert result["errors"] == {"sender: rate_limited": 2}
    # What the relay refused reached no receiver: shed, told apart from a cut.
    assert result["refused_senders"] == 2 and result["cut_receivers"] == 0
    assert 0 < result["shed"] <= result["sent"] and result["shed"] * 6 == result["lost"]
    assert any("rate-limited 2 sender(s)" in w and "--rate-limit 0" in w
               for w in result["warnings"])


@pytest.mark.parametrize("sweep", [False, True])
def test_chat_bench_exits_1_when_messages_were_lost_and_still_writes_its_figures(
        tmp_path: Path, sweep: bool) -> None:
    """A script that runs chat-bench as a check sees the loss in the exit status
    (a sweep: no step sustained); the JSON holds the figures all the same."""
    import json

    from benchmarks import cli

    out = tmp_path / "r.json"
    argv = ["-n", "4", "-s", "1", "-p", "1", "-r", "100", "-d", "0.5", "--warmup", "0.1",
            "--drain", "2", "--json", str(out)]
    if sweep:
        argv += ["--sweep", "--sweep-start", "100", "--sweep-max", "100"]
    with RelayProcess(workers=1, args=["--rate-limit", "5", "--rate-burst", "5"]) as relay:
        rc = cli.main(["127.0.0.1", str(relay.port), *argv])
    assert rc == cli.FAULT_EXIT == 1
    data = json.loads(out.read_text(encoding="utf-8"))
    if sweep:
        assert data["sweep"]["best"] is None and data["sweep"]["steps"][0]["lost"] > 0
    else:
        assert data["run"]["lost"] > 0 and data["run"]["ok"] is False


def test_no_server_is_one_clear_error_naming_each_reason_once() -> None:
    import socket

    from benchmarks.runner import RunError

    with socket.socket() as s:  # a loopback port with nothing listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RunError) as err:
        run_once(_tiny(port, "native", receivers=3, senders=1, procs=1))
    assert str(err.value) == (f"no connection to 127.0.0.1:{port} succeeded: "
                              "connect: ECONNREFUSED")


def test_chat_bench_sweep_writes_json_and_plot_and_says_when_it_was_capped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two steps that both hold: the sweep reports the higher one and says that
    the ladder, not the relay, ended it."""
    import json

    from benchmarks import cli, plot

    out, png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    with RelayProcess(workers=2, args=["--rate-limit", "0"]) as relay:
        rc = cli.main(["127.0.0.1", str(relay.port), "-n", "4", "-s", "1", "-p", "1",
                       "--sweep", "--sweep-start", "100", "--sweep-factor", "2",
                       "--sweep-max", "200", "-d", "0.5", "--warmup", "0.2", "--drain", "2",
                       "--json", str(out), "--plot", str(png)])
    text = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    steps = data["sweep"]["steps"]
    assert [round(s["offered_rate"]) for s in steps] == [100, 200]
    assert all(s["lost"] == 0 for s in steps)
    assert data["sweep"]["capped"] is True
    assert data["sweep"]["best"]["offered_rate"] == 200
    assert "highest sustained: 200 msgs/s" in text
    assert "every step held" in text
    assert png.exists() == plot.available()


def test_chat_bench_plots_one_runs_latency_curve(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--plot without --sweep draws the run's latency and send lag by percentile
    (it used to be ignored); the points are the histogram's own percentiles."""
    import json

    from benchmarks import cli, histo, plot

    out, png = tmp_path / "run.json", tmp_path / "run.png"
    with RelayProcess(workers=1, args=["--rate-limit", "0"]) as relay:
        rc = cli.main(["127.0.0.1", str(relay.port), "-n", "3", "-s", "1", "-p", "1",
                       "-r", "200", "-d", "0.5", "--warmup", "0.2", "--drain", "2",
                       "--json", str(out), "--plot", str(png)])
    text = capsys.readouterr().out
    assert rc == 0
    run = json.loads(out.read_text(encoding="utf-8"))["run"]
    lat = histo.decode(run["latency_hist"])
    curve = histo.curve_ms(lat, plot.CURVE_PERCENTILES)
    # 300 deliveries resolve percentiles up to 99.5 (1/0.005 = 200 <= 300), not 99.7
    assert [p for p, _ in curve][-1] == 99.5
    assert curve[0][1] == lat.get_min_value() / 1000.0
    assert [ms for _, ms in curve] == sorted(ms for _, ms in curve)
    assert png.exists() == plot.available()
    assert ("plot written to" in text) == plot.available()


def test_idle_connections_against_a_relay_and_its_connection_limit() -> None:
    """`chat-bench --idle`: every connection held and the relay's RSS weighed;
    then a relay whose per-IP limit refuses some, and the warning that says which
    flags lift it."""
    from benchmarks.idle import run_idle

    with RelayProcess(workers=2) as relay:
        res = run_idle(_tiny(relay.port, "native", procs=1), 30, 0.2, [relay.pid])
    assert (res["connect"]["connected"], res["connect"]["failed"]) == (30, 0)
    assert res["rss_per_connection"] is not None and res["release_s"] is not None
    assert not any("refused" in w for w in res["warnings"])
    with RelayProcess(workers=2, args=["--max-per-ip", "10"]) as relay:
        res = run_idle(_tiny(relay.port, "native", procs=1), 30, 0.2, [relay.pid])
    refused = res["connect"]["failure_reasons"].get("too_many_connections", 0)
    assert refused > 0 and res["connect"]["connected"] + refused == 30
    assert any(w.startswith(f"the relay refused {refused} connection(s) as too many")
               and "--max-per-ip" in w for w in res["warnings"])


def test_refusal_warning_counts_only_connection_limit_refusals() -> None:
    from benchmarks.runner import refusal_warning

    assert refusal_warning({"connect: ECONNREFUSED": 3}) is None
    hint = refusal_warning({"too_many_connections": 1744, "timeout": 2})
    assert hint is not None and hint.startswith("the relay refused 1,744 connection(s)")


def test_design_floor_baseline_relays_every_line_through_its_hub() -> None:
    """The floor (benchmarks/baselines/floor_relay.py) must lose nothing, or the
    latency it reports would not be the design's."""
    from benchmarks import suite

    with suite.server("floor-w2") as (pid, port, dialect, greeting):
        result = run_once(_tiny(port, dialect, greeting=greeting))
    assert (dialect, greeting) == ("text", False)
    assert result["sent"] == 200 and result["expected"] == 6 * 200
    assert result["delivered"] == result["expected"]
    assert result["lost"] == result["duplicates"] == result["reorders"] == result["corrupt"] == 0



@pytest.mark.parametrize("name", ["floor-loop-w2", "floor-nohub-w2"])
def test_design_floor_with_one_loop_per_worker_relays_every_line(name: str) -> None:
    """The event-loop floor (benchmarks/baselines/floor_loop_relay.py), with
    the hub and without it, must lose nothing either: it is compared with the
    threaded floor to price the threading shape."""
    from benchmarks import suite

    with suite.server(name) as (pid, port, dialect, greeting):
        result = run_once(_tiny(port, dialect, greeting=greeting))
    assert (dialect, greeting) == ("text", False)
    assert result["sent"] == 200 and result["expected"] == 6 * 200
    assert result["delivered"] == result["expected"]
    assert result["lost"] == result["duplicates"] == result["reorders"] == result["corrupt"] == 0


class _LateRegisteringSeed(SeedServer):
    """The seed server, registering each client only `delay` s after accepting
    it, as the seed does when its accept loop lags. Without the probe, whatever
    was sent in that window would be counted as lost."""

    def __init__(self, delay: float) -> None:
        super().__init__("127.0.0.1", 0)
        self.delay = delay
        threading.Thread(target=self.serve, daemon=True).start()

    def register(self, conn: socket.socket) -> None:
        threading.Timer(self.delay, super().register, args=(conn,)).start()


def test_a_bare_line_server_that_registers_late_loses_nothing_thanks_to_the_probe() -> None:
    server = _LateRegisteringSeed(delay=0.5)
    try:
        result = run_once(_tiny(server.address[1], "text", greeting=False, warmup=0.05))
    finally:
        server.close()
    assert result["connect"]["connected"] == 8
    assert result["delivered"] == result["expected"] == 6 * 170
    assert result["lost"] == result["corrupt"] == 0


def test_a_join_storm_is_timed_after_the_last_welcome_and_refused_opens_are_retried() -> None:
    # 40 clients, 20 in flight, against a relay that takes 3 handshakes at a
    # time: most are refused as too many at first, and opened again.
    with RelayProcess(workers=1, args=["--rate-limit", "0", "--max-handshakes", "3"]) as relay:
        result = run_once(_tiny(relay.port, "native", receivers=38, concurrency=20,
                                after_join=0.5, warmup=5.0))
    join = result["join"]
    assert (join["welcomed"], join["failed"]) == (40, 0) and result["connect"]["failed"] == 0
    assert join["retried"] > 0 and join["retried"] == result["connect"]["retried"]
    assert 0 < join["first_send_after_s"] < join["window_after_s"]
    # the window follows the last welcome, not --warmup (5 s) after the first send
    assert 0.49 <= join["window_after_s"] < 1.0, join
    assert result["lost"] == 0 and result["latency_ms"]["count"] > 0
