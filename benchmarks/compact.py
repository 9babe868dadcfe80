"""The summary of a `make bench` run that git keeps: figures, not histograms.

A suite's full results (every step's HDR histograms of latency and send lag,
connect figures, warnings, parameters) run to 1.3 MB a run; they go to
`results/raw/`, which git ignores. What is committed is this summary: each
step's percentiles, rates, loss, errors (cut receivers among them) and the
server's CPU per delivery, in the same shape as the full results, so
`python -m benchmarks.suite --render` draws the same table and plots from
either. A suite run is kept under SUMMARY_LIMIT bytes.

    python -m benchmarks.compact benchmarks/results/2026-11-27.json ...

rewrites full results in place as summaries, moving the originals to
`results/raw/` (it refuses a file whose table the summary would change).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

SUMMARY_LIMIT = 50_000
FORMAT = 1  # the "summary" key: steps as tables (expand() reads them back)
# Floats keep 3 decimals (µs in ms, a thousandth of a message/s) and, below
# 1, at least this many significant digits (CPU shares, µs per delivery).
DIGITS = 4

# Left out, as no reader needs them and a summary must stay under its limit:
# delivered (expected - lost + duplicates), ok (those and connect.failed),
# the latency count (deliveries/s x duration) and p90.
STEP_KEYS = ("offered_rate", "expected", "lost", "duplicates", "reorders",
             "corrupt", "deliveries_per_s", "loadavg", "cut_receivers", "shed",
             "backlog", "refused_senders")
PERCENTILES = ("p50", "p99", "p99_9", "max")
WHOLE = 100_000  # floats from here up (rates: deliveries/s) keep no decimals
GENERATOR_KEYS = ("busy", "engine", "bottleneck")
LATENCY_RUN_KEYS = ("p50_runs_ms", "p99_runs_ms", "pooled_ms", "cpu_us_per_delivery_runs")


def rounded(value: Any) -> Any:
    """Floats to 3 decimals (DIGITS significant below 1; none from WHOLE up, as
    ints), through dicts and lists."""
    if isinstance(value, float):
        if value == 0.0 or not math.isfinite(value):
            return value
        if abs(value) >= WHOLE:
            return round(value)
        return round(value, max(3, DIGITS - 1 - math.floor(math.log10(abs(value)))))
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def step(r: dict[str, Any]) -> dict[str, Any]:
    """One run's figures without its histograms, parameters or warnings."""
    out = {k: r[k] for k in STEP_KEYS if k in r}
    out["latency_ms"] = percentiles(r.get("latency_ms", {}))
    if r.get("errors"):  # closed connections by reason: cut receivers, refused senders
        out["errors"] = r["errors"]
    gen = r.get("generator", {})
    out["generator"] = {k: gen[k] for k in GENERATOR_KEYS if k in gen}
    if gen.get("send_lag_ms"):
        out["generator"]["send_lag_ms"] = percentiles(gen["send_lag_ms"], ("count", "p50",
                                                                           "p99", "max"))
    if r.get("connect", {}).get("failed"):
        out["connect"] = {"failed": r["connect"]["failed"]}
    if r.get("join"):  # a join storm's phase (workloads.storm_target judges it)
        out["join"] = dict(r["join"])
    cpu = r.get("server_cpu")
    if cpu and cpu.get("us_per_delivery") is not None:
        out["server_cpu"] = {k: cpu.get(k) for k in ("cpu_s", "us_per_delivery")}
    return out


def percentiles(summary_ms: dict[str, Any],
                keys: tuple[str, ...] = PERCENTILES) -> dict[str, Any]:
    """The percentiles kept; the count as the integer it is."""
    out = {k: summary_ms[k] for k in keys if k in summary_ms}
    if "count" in out:
        out["count"] = int(out["count"])
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; dicts keyed by free text (errors) stay whole."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "errors":
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def table(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Steps as one row each under shared column names: a suite's 120 steps
    would otherwise spell every key 120 times, a third of the summary."""
    rows = [flatten(step(s)) for s in steps]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return {"columns": columns, "rows": [[r.get(c) for c in columns] for r in rows]}


def untable(t: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps back from table(): missing cells (null) stay missing."""
    steps = []
    for row in t["rows"]:
        s: dict[str, Any] = {}
        for column, value in zip(t["columns"], row, strict=True):
            if value is None:
                continue
            *path, last = column.split(".")
            here = s
            for part in path:
                here = here.setdefault(part, {})
            here[last] = value
        steps.append(s)
    return steps


def peak(p: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in p.items() if k not in ("steps", "retried")}
    out["steps"] = table(p.get("steps", []))
    out["retried"] = table(p.get("retried", []))
    return out


def expand(data: dict[str, Any]) -> dict[str, Any]:
    """Suite results whose steps are lists again (full results pass unchanged):
    what the table and the plots read."""
    peaks = []
    for p in data.get("peaks", []):
        p = dict(p)
        for key in ("steps", "retried"):
            if isinstance(p.get(key), dict):
                p[key] = untable(p[key])
        peaks.append(p)
    out = {**data, "peaks": peaks}
    if isinstance(data.get("workloads"), dict):
        out["workloads"] = untable(data["workloads"])
    return out


def workload_table(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Workload runs as a table (as steps): who and what, then the run's figures
    under "run." (a skipped one: its reason)."""
    rows = [flatten({**{k: v for k, v in e.items() if k != "run"},
                     **({"run": step(e["run"])} if "run" in e else {})}) for e in entries]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return {"columns": columns, "rows": [[r.get(c) for c in columns] for r in rows]}


def latency(run: dict[str, Any]) -> dict[str, Any]:
    out = step(run)
    out.update({k: run[k] for k in LATENCY_RUN_KEYS if k in run})
    return out


def idle(res: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in res.items() if k not in ("connect", "relay_pids")}
    con = res.get("connect")
    if con:
        out["connect"] = {k: con[k] for k in ("connected", "failed", "failure_reasons",
                                              "seconds", "rate_per_s") if k in con}
    return out


def summary(data: dict[str, Any]) -> dict[str, Any]:
    """The committed summary of one suite run's full results."""
    # The targets' verdicts are drawn again from the figures (workloads.targets).
    out = {k: v for k, v in data.items()
           if k not in ("peaks", "latency", "idle", "workloads", "targets")}
    out["summary"] = FORMAT
    out["peaks"] = [peak(p) for p in data.get("peaks", [])]
    if data.get("workloads"):
        out["workloads"] = workload_table(data["workloads"])
    out["latency"] = {name: latency(r) for name, r in data.get("latency", {}).items()}
    if "idle" in data:
        out["idle"] = idle(data["idle"])
    return dict(rounded(out))


def dumps(data: Any, depth: int = 0) -> str:
    """A summary as text: indented, but each step (a row, a latency run) on
    one line, so that a diff between two runs reads line by line. Keys keep
    their order: the table lists servers in the order they ran."""
    one_line = depth >= 5 or (isinstance(data, dict) and "offered_rate" in data
                              and "steps" not in data)
    pad = "\n" + " " * (depth + 1)
    end = "\n" + " " * depth
    if isinstance(data, dict) and data and not one_line:
        items = [f"{json.dumps(k)}: {dumps(v, depth + 1)}" for k, v in data.items()]
        return "{" + pad + ("," + pad).join(items) + end + "}" + ("\n" if depth == 0 else "")
    if isinstance(data, list) and not one_line and any(nested(v) for v in data):
        return "[" + pad + ("," + pad).join(dumps(v, depth + 1) for v in data) + end + "]"
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def nested(v: Any) -> bool:
    """Whether `v` spans lines in dumps(): a dict, or a list holding containers (a
    table row, which holds a list of numbers at most, stays on one line)."""
    return isinstance(v, dict) or (isinstance(v, list)
                                   and any(isinstance(x, dict | list) for x in v))


def is_full(data: dict[str, Any]) -> bool:
    """Whether `data` is a suite's full results (not a summary, not another tool's)."""
    return "peaks" in data and "latency" in data and "summary" not in data


def convert(path: Path) -> tuple[int, int] | None:
    """Replace full results at `path` by their summary, the original going to
    raw/ beside it; (bytes before, after), or None when there was nothing to do."""
    from benchmarks.suite import markdown

    data = json.loads(path.read_text(encoding="utf-8"))
    if not is_full(data):
        return None
    small = summary(data)
    if markdown(expand(json.loads(dumps(small)))) != markdown(data):
        raise ValueError(f"{path}: the summary would change the table")
    raw = path.parent / "raw"
    raw.mkdir(exist_ok=True)
    before = path.stat().st_size
    path.replace(raw / path.name)
    path.write_text(dumps(small), encoding="utf-8")
    return before, path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compact",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args(argv)
    for path in args.files:
        sizes = convert(path)
        if sizes is None:
            print(f"{path}: not full suite results, left alone")
        else:
            print(f"{path}: {sizes[0]:,} -> {sizes[1]:,} bytes (original in raw/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
