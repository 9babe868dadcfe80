"""What the user sees and keeps: live progress, the final table, the JSON file."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib import metadata
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text


def environment() -> dict[str, Any]:
    """Versions and machine facts, so a figure can be traced to where it came from."""
    versions: dict[str, str] = {}
    for dist in ("chat-relay", "msgpack", "hdrhistogram", "rich", "pyzmq", "matplotlib"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
        "versions": versions,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class Progress:
    """A one-line live status, refreshed from the runner's progress callback."""

    def __init__(self, console: Console, expected_per_msg: int) -> None:
        self.console = console
        self.expected_per_msg = expected_per_msg
        self.live = Live(Text("connecting..."), console=console, refresh_per_second=4,
                         transient=True)
        self._last: tuple[float, int] = (0.0, 0)

    def __enter__(self) -> Progress:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def update(self, p: dict[str, Any]) -> None:
        t, d = self._last
        rate = (p["delivered"] - d) / (p["elapsed"] - t) if p["elapsed"] > t else 0.0
        if p["elapsed"] - t >= 0.4:
            self._last = (p["elapsed"], p["delivered"])
            self.rate = rate
        self.live.update(Text(live_line(p, getattr(self, "rate", 0.0))))


def live_line(p: dict[str, Any], rate: float) -> str:
    """The progress line, under 80 columns; latency only once it is measured
    (during the warm-up nothing timed has arrived yet, and 0.00 ms would lie)."""
    if p["p99_ms"] is not None:
        p99 = f"p99 {p['p99_ms']:7.2f} ms"
    else:
        p99 = "p99 (warm-up)" if p.get("warming_up") else "p99 -"
    return (f"{p['elapsed']:5.1f} s  sent {p['sent']:>9,}  delivered/s {rate:>9,.0f}  "
            f"loss {p['gaps']:>6,}  {p99}")


def latency_rows(lat: dict[str, float]) -> list[tuple[str, str]]:
    """Percentile rows, or one row saying none was measured (never a fake 0.00 ms)."""
    if not lat.get("count", 1):
        return [("latency", "none: nothing sent in the timed window arrived")]
    return [
        ("latency p50 / p90", f"{lat['p50']:.2f} / {lat['p90']:.2f} ms"),
        ("latency p99 / p99.9", f"{lat['p99']:.2f} / {lat['p99_9']:.2f} ms"),
        ("latency max", f"{lat['max']:.2f} ms"),
    ]


def send_lag_row(gen: dict[str, Any]) -> tuple[str, str]:
    """How late the generator's sends left: latency counts from the due time,
    so this much of it is the generator's own, not the relay's."""
    lag = gen.get("send_lag_ms")
    if not lag or not lag.get("count"):
        return ("late sends / max send lag",
                f"{gen['late_sends']:,} / {gen['max_send_lag_ms']:.1f} ms")
    return ("send lag p50 / p99 / max",
            f"{lag['p50']:.2f} / {lag['p99']:.2f} / {gen['max_send_lag_ms']:.1f} ms")


def server_cpu_cell(r: dict[str, Any]) -> str:
    """The server's CPU µs per delivery in the timed window, or "-" (not weighed)."""
    cpu = r.get("server_cpu") or {}
    us = cpu.get("us_per_delivery")
    if us is None:
        return "-"
    n = len(cpu.get("pids", []))
    cell = f"{us:.2f} µs ({cpu['cpu_s']:.2f} CPU-s, {n} process{'es' if n != 1 else ''})"
    tick = cpu.get("tick_us_per_delivery")
    if tick and us < 10 * tick:  # under 10 clock ticks in all: say how coarse
        cell += f" ±{tick:.2f}: run longer"
    return cell


def server_cpu_note(r: dict[str, Any]) -> str:
    """The same figure for a one-line step report ("" when not weighed)."""
    us = (r.get("server_cpu") or {}).get("us_per_delivery")
    return "" if us is None else f"  server {us:.2f} µs/delivery"


def result_table(r: dict[str, Any], title: str = "chat-bench") -> Table:
    lat = r["latency_ms"]
    con = r["connect"]
    gen = r["generator"]
    t = Table(title=title, show_header=True)
    t.add_column("figure")
    t.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("offered rate", f"{r['offered_rate']:,.0f} msgs/s"),
        ("sent", f"{r['sent']:,}"),
        ("expected deliveries", f"{r['expected']:,}"),
        ("delivered", f"{r['delivered']:,}"),
        ("lost", f"{r['lost']:,} ({r['loss_ratio']:.4%})"),
        ("duplicates / reorders / corrupt",
         f"{r['duplicates']:,} / {r['reorders']:,} / {r['corrupt']:,}"),
        ("cut receivers / shed / backlog",
         f"{r.get('cut_receivers', 0):,} / {r.get('shed', 0):,} / {r.get('backlog', 0):,}"),
        ("deliveries/s", f"{r['deliveries_per_s']:,.0f}"),
        ("server CPU per delivery", server_cpu_cell(r)),
        *latency_rows(lat),
        ("connections", f"{con['connected']:,} ok, {con['failed']:,} failed"),
        ("connect time p50 / p99",
         f"{con['latency_ms']['p50']:.1f} / {con['latency_ms']['p99']:.1f} ms"),
        ("connect rate", f"{con['rate_per_s']:,.0f} /s"),
        *join_rows(r.get("join")),
        ("generator CPU per process", " ".join(f"{b:.0%}" for b in gen["busy"])),
        send_lag_row(gen),
    ]
    for name, value in rows:
        t.add_row(name, value)
    return t


def join_rows(join: dict[str, Any] | None) -> list[tuple[str, str]]:
    """A join storm's phase (--after-join): [] for other runs."""
    if not join:
        return []
    return [("join phase (first connect to last welcome)",
             f"{join['welcomed']:,} welcomed in {join['seconds']:.2f} s "
             f"({join['per_s']:,.0f} /s), {join['failed']:,} failed, "
             f"{join.get('retried', 0):,} refused as too many and retried"),
            ("timed window", f"from {join['window_after_s']:.2f} s after the last welcome "
                             f"(first send at {join['first_send_after_s']:.2f} s)")]


def print_result(console: Console, r: dict[str, Any]) -> None:
    console.print(result_table(r))
    for k, v in r.get("errors", {}).items():
        console.print(f"[yellow]connection error x{v}: {k}[/yellow]")
    for w in r.get("warnings", []):
        console.print(f"[bold red]warning:[/bold red] {w}")
    verdict = "[green]no loss, no duplicates, in order[/green]" if r.get("ok") else \
        "[red]loss, duplicates, reordering, corruption or failed connections (see above)[/red]"
    console.print(verdict)


def write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
