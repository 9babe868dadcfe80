"""PNG plots (matplotlib is the optional `plot` extra; imported only here)."""

from __future__ import annotations

import math
from typing import Any

# Percentiles a latency curve is drawn through: dense in the tail, where
# servers differ, on an axis of "nines" (90 %, 99 %, 99.9 % equally apart).
CURVE_PERCENTILES = (*range(0, 90, 10), 90.0, 95.0, 97.0, 98.0, 99.0, 99.5, 99.7, 99.8,
                     99.9, 99.95, 99.97, 99.99, 99.995, 99.999)


def nines(percentile: float) -> float:
    """Where a percentile sits on the nines axis: 90 -> 1, 99 -> 2, 99.9 -> 3."""
    return -math.log10(max(1e-6, 1.0 - percentile / 100.0))


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    """pyplot on the file-only backend (no display here, and none needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep_png(series: dict[str, list[dict[str, Any]]], path: str, title: str) -> None:
    """Latency percentiles and delivered rate against offered load, one line per series."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, steps in series.items():
        steps = sorted(steps, key=lambda s: float(s["offered_rate"]))
        x = [float(s["offered_rate"]) for s in steps]
        for key, style in (("p50", ":"), ("p99", "-"), ("p99_9", "--")):
            ax1.plot(x, [s["latency_ms"][key] for s in steps], style, marker=".",
                     label=f"{name} {key.replace('_', '.')}")
        ax2.plot(x, [s["deliveries_per_s"] for s in steps], marker="o", label=name)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("offered load (msgs/s)")
    ax1.set_ylabel("end-to-end latency (ms)")
    ax1.legend(fontsize=7)
    ax1.grid(True, which="both", alpha=0.3)
    ax2.set_xscale("log")
    ax2.set_xlabel("offered load (msgs/s)")
    ax2.set_ylabel("deliveries/s")
    ax2.legend(fontsize=7)
    ax2.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    _save(plt, fig, path)


def bars_png(rows: list[dict[str, Any]], path: str, title: str) -> None:
    """Peak deliveries/s per server, grouped by receiver count."""
    plt = _pyplot()
    servers = list(dict.fromkeys(r["server"] for r in rows))
    ns = sorted({int(r["receivers"]) for r in rows})
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(servers))
    for k, server in enumerate(servers):
        vals = []
        for n in ns:
            hit = [r for r in rows if r["server"] == server and int(r["receivers"]) == n]
            vals.append(hit[0]["deliveries_per_s"] if hit else 0.0)
        ax.bar([i + k * width for i in range(len(ns))], vals, width, label=server)
    ax.set_xticks([i + width * (len(servers) - 1) / 2 for i in range(len(ns))])
    ax.set_xticklabels([f"N={n}" for n in ns])
    ax.set_ylabel("peak sustained deliveries/s")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(title)
    _save(plt, fig, path)


def percentiles_png(curves: dict[str, list[tuple[float, float]]], path: str,
                    title: str) -> None:
    """Latency against percentile (HDR style), one line per (percentile, ms) curve."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    top = 0.0
    for name, points in curves.items():
        if not points:
            continue
        ax.plot([nines(p) for p, _ in points], [ms for _, ms in points], marker=".",
                label=name)
        top = max(top, max(nines(p) for p, _ in points))
    ticks = [k for k in range(0, 6) if k <= max(1.0, top) + 0.01]
    ax.set_xticks(ticks)
    ax.set_xticklabels(["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"][: len(ticks)])
    ax.set_xlabel("percentile")
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    _save(plt, fig, path)
