"""Latency histograms: one HDR histogram per load process, merged in the parent.

Percentiles cannot be averaged across processes; HDR histograms can be
added bucket by bucket without losing precision. Latencies travel from the
load processes as plain {bucket floor µs: count} dicts (`bucket_counts`),
which the parent adds up as plain dicts (`add_counts`) and turns into one
histogram at the end (`merge_counts`): encoding an HDR histogram costs a load
process 5-15 ms, a stall in its receive loop that showed up as every
server's p99, and recording into one costs the parent ~7 ms per report
(pure Python), where adding dicts costs 0.7 ms. Connect times, sent once, travel as
compact base64 strings (`encode`/`decode`).
"""

from __future__ import annotations

from collections.abc import Mapping

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


def _bucket_bits() -> int:
    """Values below 2**this µs have buckets 1 µs wide; above, 2**k wide
    (3 significant figures), as in `new_histogram()`."""
    h = new_histogram()
    return int(h.sub_bucket_half_count_magnitude + 1 + h.unit_magnitude)


_BUCKET_BITS = _bucket_bits()


def _bucket_floor(us: int) -> tuple[int, int]:
    """(lowest value, width) of the HDR bucket that holds `us`."""
    shift = us.bit_length() - _BUCKET_BITS
    if shift <= 0:
        return us, 1
    return us >> shift << shift, 1 << shift


def bucket_counts(counts: dict[int, int]) -> dict[int, int]:
    """A µs -> count dict folded onto the lowest value of each HDR bucket.

    The load processes gather thousands of distinct µs values between
    flushes, but far fewer buckets (1 µs wide below 2048 µs, then 2^k wide),
    so this is what they send. Recording bucket floors fills the same
    buckets: counts, percentiles, mean and max are those of the raw values
    as an HDR histogram keeps them.
    """
    buckets: dict[int, int] = {}
    for us, n in counts.items():
        v = _bucket_floor(min(max(us, LOWEST_US), HIGHEST_US))[0]
        buckets[v] = buckets.get(v, 0) + n
    return buckets


def add_counts(into: dict[int, int], part: Mapping[int, int]) -> dict[int, int]:
    """Add one report's {bucket floor µs: count} to `into` and return it."""
    get = into.get
    for v, n in part.items():
        into[v] = get(v, 0) + n
    return into


def percentile_us(counts: Mapping[int, int], percentile: float) -> int:
    """What `HdrHistogram.get_value_at_percentile` gives for these counts,
    without building the histogram (0 when empty)."""
    total = sum(counts.values())
    if not total:
        return 0
    want = max(1, int(percentile / 100.0 * total + 0.5))
    seen = 0
    for v in sorted(counts):
        seen += counts[v]
        if seen >= want:
            low, width = _bucket_floor(min(max(v, LOWEST_US), HIGHEST_US))
            return low + width - 1  # HDR reports a bucket by its highest value
    return 0  # not reached: seen ends at total >= want


def record_counts(h: HdrHistogram, counts: dict[int, int]) -> HdrHistogram:
    """Add a µs -> count dict to `h`, one `record_value` per HDR bucket used
    (`record_value` is pure Python and costs microseconds)."""
    for v, n in bucket_counts(counts).items():
        h.record_value(v, n)
    return h


def merge_counts(into: HdrHistogram, parts: list[dict[int, int]]) -> HdrHistogram:
    """Add every process's bucket counts into `into` and return it: summed as
    dicts first, so each bucket costs one pure-Python `record_value`."""
    total: dict[int, int] = {}
    for part in parts:
        add_counts(total, part)
    return record_counts(into, total)


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


def curve_ms(h: HdrHistogram, percentiles: tuple[float, ...]) -> list[tuple[float, float]]:
    """(percentile, ms) points of `h` for a latency curve; none when it is empty.

    Percentiles beyond what the count can resolve (99.99 % of 1,000 values)
    are left out: they would only repeat the maximum."""
    count = h.get_total_count()
    if not count:
        return []
    return [(p, h.get_value_at_percentile(p) / 1000.0) for p in percentiles
            if p == 0 or (100.0 - p) / 100.0 * count >= 1.0]
