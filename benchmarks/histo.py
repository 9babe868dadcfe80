"""Latency histograms: one HDR histogram per load process, merged in the parent.

Percentiles cannot be averaged across processes; HDR histograms can be
added bucket by bucket without losing precision, and travel between
processes as compact base64 strings (`encode`/`decode`).
"""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 120_000_000  # two minutes: anything slower is a failed run anyway
SIG_FIGS = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIG_FIGS)


def encode(h: HdrHistogram) -> str:
    """A compressed, text-safe form of `h` (empty histograms included)."""
    data = h.encode()
    return data.decode("ascii") if isinstance(data, bytes) else str(data)


def decode(data: str) -> HdrHistogram:
    return HdrHistogram.decode(data.encode("ascii"))


def merge_encoded(into: HdrHistogram, encoded: list[str]) -> HdrHistogram:
    """Add every encoded histogram into `into` and return it."""
    for item in encoded:
        part = decode(item)
        if part.get_total_count():
            into.add(part)
    return into


def record_counts(h: HdrHistogram, counts: dict[int, int]) -> None:
    """Add a µs -> count dict to `h`, one `record_value` per HDR bucket used.

    `record_value` is pure Python and costs microseconds; the load processes
    gather thousands of distinct µs values between flushes, but far fewer
    buckets (3 significant figures: 1 µs wide below 2048 µs, then 2^k wide).
    Each value is replaced by the lowest value of its bucket first, which
    fills the same buckets: counts, percentiles, mean and the max as merged
    from encoded histograms (which keep only the buckets) are unchanged.
    """
    bits = h.sub_bucket_half_count_magnitude + 1 + h.unit_magnitude
    top = HIGHEST_US
    buckets: dict[int, int] = {}
    for us, n in counts.items():
        v = min(max(us, LOWEST_US), top)
        shift = v.bit_length() - bits
        if shift > 0:
            v = v >> shift << shift
        buckets[v] = buckets.get(v, 0) + n
    for v, n in buckets.items():
        h.record_value(v, n)


def summary_ms(h: HdrHistogram) -> dict[str, float]:
    """p50/p90/p99/p99.9/max/mean in milliseconds (zeros when empty)."""
    out: dict[str, float] = {}
    empty = h.get_total_count() == 0
    for p in PERCENTILES:
        key = "p" + (str(p).rstrip("0").rstrip(".")).replace(".", "_")
        out[key] = 0.0 if empty else h.get_value_at_percentile(p) / 1000.0
    out["max"] = 0.0 if empty else h.get_max_value() / 1000.0
    out["mean"] = 0.0 if empty else float(h.get_mean_value()) / 1000.0
    out["count"] = float(h.get_total_count())
    return out
