"""What `make bench` keeps in git: a compact summary a run, the full results aside."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks import compact, histo, plot, workloads
from benchmarks.suite import RAW, RESULTS, main, markdown, write_outputs, write_results


@functools.cache
def _histograms() -> tuple[dict[str, float], str, dict[str, float], str]:
    """A latency and a send-lag histogram (summary, encoded), made once: the
    summary walks the whole histogram in pure Python (~0.3 s each)."""
    rng = random.Random(3)
    lat, lag = histo.new_histogram(), histo.new_histogram()
    for _ in range(300):
        lat.record_value(rng.randint(200, 200_000))
        lag.record_value(rng.randint(10, 20_000))
    return histo.summary_ms(lat), histo.encode(lat), histo.summary_ms(lag), histo.encode(lag)


def _run(rate: float, rng: random.Random, lost: int = 0) -> dict[str, Any]:
    """One run's full figures, histograms included, as runner.run_once returns them."""
    lat_ms, lat_hist, lag_ms, lag_hist = _histograms()
    return {
        "offered_rate": rate, "sent": int(rate * 2.5), "expected": int(rate * 250),
        "delivered": int(rate * 250) - lost, "unique": int(rate * 250) - lost, "lost": lost,
        "loss_ratio": lost / (rate * 250), "duplicates": 0, "reorders": 0, "corrupt": 0,
        "deliveries_per_s": rate * 100 * rng.uniform(0.9, 1.0),
        "latency_ms": dict(lat_ms), "latency_hist": lat_hist,
        "generator": {"busy": [0.2, 0.21], "cpu_s": [0.5, 0.5], "late_sends": 3,
                      "max_send_lag_ms": 20.0, "send_lag_ms": dict(lag_ms),
                      "send_lag_hist": lag_hist, "bottleneck": False,
                      "engine": "c"},
        "errors": {"slow_consumer": 2} if lost else {},
        "server_cpu": {"pids": [11, 12, 13, 14], "cpu_s": 1.234,
                       "us_per_delivery": rng.uniform(0.5, 40.0)},
        "connect": {"connected": 104, "failed": 0, "failures": [], "failure_reasons": {},
                    "seconds": 0.2, "wall_seconds": 0.5, "nofile_limit": 4096,
                    "rate_per_s": 500.0, "latency_ms": dict(lat_ms)},
        "params": {"host": "127.0.0.1", "port": 4242, "receivers": 100, "senders": 4},
        "warnings": ["the load generator was the bottleneck (busiest 95% CPU) ..."],
        "ok": lost == 0, "loadavg": 1.234567,
    }


def full_results(steps: int = 12) -> dict[str, Any]:
    """A suite run bigger than any so far (4 servers x 3 N, 12 steps and a
    retry each: 156 runs; the largest committed one had 131), histograms and all."""
    rng = random.Random(7)
    peaks = []
    for server in ("chat-relay-w1", "chat-relay-w2", "seed", "ngircd"):
        for n in (10, 100, 1000):
            runs = [_run(250.0 * 1.5 ** k, rng, lost=100 if k == steps - 1 else 0)
                    for k in range(steps)]
            peaks.append({
                "server": server, "receivers": n, "steps": runs, "retried": runs[:1],
                "deliveries_per_s": runs[-2]["deliveries_per_s"],
                "offered_rate": runs[-2]["offered_rate"], "p99_ms": 12.5,
                "server_cpu_us_per_delivery": 1.5,
                "max_delivered_per_s": runs[-1]["deliveries_per_s"],
                "generator_bottleneck": False,
                "first_failure": {"offered_rate": runs[-1]["offered_rate"], "lost": 100,
                                  "reorders": 0, "corrupt": 0, "p99_ms": 250.0,
                                  "errors": {"slow_consumer": 2}},
            })
    latency = {}
    for server in ("chat-relay-w1", "chat-relay-w2", "seed", "ngircd", "floor-w2"):
        run = _run(1000.0, rng)
        run.update({"p50_runs_ms": [1.0, 2.0, 3.0], "p99_runs_ms": [5.0, 6.0, 7.0],
                    "pooled_ms": run["latency_ms"], "cpu_us_per_delivery_runs": [3.0, 2.5]})
        latency[server] = run
    # Every workload against every server (the rooms one skipped for the seed).
    work: list[dict[str, Any]] = []
    for w in workloads.WORKLOADS:
        for server in ("chat-relay-w1", "chat-relay-w2", "seed", "ngircd"):
            e: dict[str, Any] = {"workload": w.name, "server": server,
                                 "receivers": w.receivers, "senders": w.senders,
                                 "rooms": w.rooms}
            if w.needs_rooms and server == "seed":
                e["skipped"] = "a bare-line server has no rooms"
            else:
                e["run"] = {**_run(w.rate or 40_000.0, rng, lost=50 if server == "seed" else 0),
                            "cut_receivers": 1, "shed": 20, "backlog": 300,
                            "refused_senders": 0}
            if w.name == "overload":
                e.update(peak_rate=20_000.0, peak_source="this run's N=100 sweep")
            work.append(e)
    env = {"cpu_model": "CPU", "machine": "x86_64", "cpu_count": 2, "python": "3.11",
           "platform": "Linux", "time": "T", "versions": {"rich": "13"}}
    return {"environment": env, "params": {"receivers": "10,100,1000"}, "p99_limit_ms": 100.0,
            "peaks": peaks, "latency": latency, "skipped": {}, "workloads": work,
            "idle": {"idle": 20000, "connect": {"connected": 20000, "failed": 0,
                                                "failures": [], "failure_reasons": {},
                                                "seconds": 25.0, "rate_per_s": 800.0,
                                                "latency_ms": {"p50": 1.0}},
                     "relay_pids": list(range(40)), "rss_per_connection": 33000.0,
                     "release_s": 3.2}}


def test_a_runs_summary_is_small_holds_no_histogram_and_draws_the_same_table() -> None:
    full = full_results()
    text = compact.dumps(compact.summary(full))
    assert len(json.dumps(full)) > 5 * compact.SUMMARY_LIMIT  # what used to be committed
    assert len(text.encode()) < compact.SUMMARY_LIMIT
    assert "_hist" not in text and "relay_pids" not in text and "warnings\": [\"" not in text
    back = compact.expand(json.loads(text))
    assert markdown(back) == markdown(full)
    assert len(back["workloads"]) == 4 * len(workloads.WORKLOADS)
    assert back["workloads"][0]["run"]["shed"] == 20
    step, orig = back["peaks"][5]["steps"][3], full["peaks"][5]["steps"][3]
    for key in ("p50", "p99", "p99_9", "max"):  # what the sweep plot draws
        assert step["latency_ms"][key] == round(orig["latency_ms"][key], 3)
    assert step["offered_rate"] == round(orig["offered_rate"], 3)
    assert step["server_cpu"]["us_per_delivery"] == compact.rounded(
        orig["server_cpu"]["us_per_delivery"])
    last = back["peaks"][0]["steps"][-1]
    assert (last["lost"], last["errors"]) == (100, {"slow_consumer": 2})  # cut receivers
    assert "errors" not in back["peaks"][0]["steps"][0]  # none: left out, not {}
    assert len(back["peaks"][0]["retried"]) == 1


def test_floats_keep_three_decimals_and_four_digits_below_one() -> None:
    assert compact.rounded(12.345678) == 12.346
    assert compact.rounded(12345.6789) == 12345.679
    assert compact.rounded(1234567.891) == 1234568  # deliveries/s: a whole number
    assert compact.rounded(0.000123456) == 0.0001235
    assert compact.rounded({"a": [0.1234567, 2]}) == {"a": [0.1235, 2]}


def test_the_suite_writes_full_results_to_raw_and_the_summary_beside_the_table(
        tmp_path: Path) -> None:
    full = full_results(steps=3)
    write_results(full, tmp_path, "2026-12-01")
    write_outputs(full, tmp_path, "2026-12-01", Console(quiet=True))
    raw = json.loads((tmp_path / RAW / "2026-12-01.json").read_text(encoding="utf-8"))
    assert "latency_hist" in raw["peaks"][0]["steps"][0]
    kept = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert kept == (["2026-12-01-peak.png"] if plot.available() else []) + [
        "2026-12-01.json", "2026-12-01.md", "latest.md"]
    assert (tmp_path / RAW / "2026-12-01-sweep-n100.png").exists() == plot.available()
    summary = tmp_path / "2026-12-01.json"
    assert compact.is_full(raw) and not compact.is_full(json.loads(summary.read_text()))
    # --render draws the same table from the summary as from the full results
    (tmp_path / "again").mkdir()
    assert main(["--render", str(summary), "--out", str(tmp_path / "again")]) == 0
    assert ((tmp_path / "again" / "2026-12-01.md").read_text(encoding="utf-8")
            == (tmp_path / "2026-12-01.md").read_text(encoding="utf-8"))


def test_the_converter_shrinks_full_results_in_place_and_leaves_others_alone(
        tmp_path: Path) -> None:
    path, other = tmp_path / "2026-12-01.json", tmp_path / "faults-2026-12-01.json"
    path.write_text(json.dumps(full_results(steps=3)), encoding="utf-8")
    other.write_text('{"slow": {"cut": true}}', encoding="utf-8")
    assert compact.main([str(path), str(other)]) == 0
    assert "latency_hist" in (tmp_path / RAW / "2026-12-01.json").read_text(encoding="utf-8")
    assert "latency_hist" not in path.read_text(encoding="utf-8")
    assert compact.convert(path) is None  # a summary already
    assert other.read_text(encoding="utf-8") == '{"slow": {"cut": true}}'


def test_the_committed_results_stay_small() -> None:
    """benchmarks/results/ is in git: summaries, tables and one plot a run;
    full results belong in raw/ (ignored)."""
    files = [p for p in RESULTS.iterdir() if p.is_file()]
    assert files
    for p in files:
        limit = compact.SUMMARY_LIMIT if p.suffix == ".json" else 200_000
        assert p.stat().st_size < limit, p.name
    assert sum(p.stat().st_size for p in files) < 2_000_000
    assert not [p.name for p in files if p.name.endswith("-sweep-n100.png")]
