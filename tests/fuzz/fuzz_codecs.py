"""Fuzz every dialect decoder: `python -m tests.fuzz.fuzz_codecs --runs 1000000`.

Two engines, one target (tests/fuzz/target.py: feed a fresh codec, check
that nothing raises, nothing logs an error and buffers stay under the
limits):

- `mutate` (always available): deterministic mutation of real samples plus
  random bytes, round-robin over the dialects; `--seed` makes a run
  reproducible, so a failure printed here is a failure anyone can replay.
- `atheris` (when `pip install atheris` works): coverage-guided libFuzzer,
  seeded with the same samples; input byte 0 picks the dialect, bytes 1-4
  how the input is cut.

`--engine auto` (the default) picks atheris when it is installed. A failing
input is written to `--artifacts` (default: the system temp dir) and can be
replayed with `--replay FILE`. Exit status 0 means no failure.
"""

from __future__ import annotations

import argparse
import os
import resource
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.fuzz.samples import SEEDS
from tests.fuzz.target import DIALECTS, Case, FuzzFailure, Mutator, run_case

_HEADER = struct.Struct(">BI")  # dialect index, chunking seed


def encode_case(case: Case) -> bytes:
    """A case as one byte string (the atheris input format, and artifact files)."""
    return _HEADER.pack(DIALECTS.index(case.dialect), case.seed) + case.data


def decode_case(raw: bytes) -> Case:
    if len(raw) < _HEADER.size:
        raw = raw + b"\x00" * (_HEADER.size - len(raw))
    index, seed = _HEADER.unpack_from(raw)
    return Case(DIALECTS[index % len(DIALECTS)], raw[_HEADER.size:], seed)


def _save(case: Case, artifacts: str) -> str:
    os.makedirs(artifacts, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f"fuzz-{case.dialect}-", suffix=".bin", dir=artifacts)
    with os.fdopen(fd, "wb") as f:
        f.write(encode_case(case))
    return path


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mutate(runs: int, seed: int, dialects: Sequence[str], seconds: float,
               artifacts: str, quiet: bool = False) -> int:
    """The built-in engine; returns the number of failures (it stops at the first)."""
    import random

    rng = random.Random(seed)
    mutators = {d: Mutator(d, rng) for d in dialects}
    start = time.monotonic()
    deadline = start + seconds if seconds > 0 else float("inf")
    next_report = start + 10.0
    done = 0
    decoded = 0
    for i in range(runs):
        dialect = dialects[i % len(dialects)]
        case = Case(dialect, mutators[dialect].make(), rng.randrange(1 << 30))
        try:
            decoded += run_case(case)
        except FuzzFailure as exc:
            path = _save(case, artifacts)
            print(f"FAIL after {done} runs: {exc}\n  input saved to {path}\n"
                  f"  replay: python -m tests.fuzz.fuzz_codecs --replay {path}\n"
                  f"  {case.describe()[:2000]}", file=sys.stderr)
            return 1
        done += 1
        now = time.monotonic()
        if now >= deadline:
            break
        if not quiet and now >= next_report:
            next_report = now + 10.0
            print(f"  {done:,} runs, {done / (now - start):,.0f}/s, max RSS {_rss_mib():.0f} MiB",
                  flush=True)
    elapsed = time.monotonic() - start
    if not quiet:
        print(f"ok: {done:,} runs over {', '.join(dialects)} in {elapsed:.1f} s "
              f"({done / max(elapsed, 1e-9):,.0f}/s), {decoded:,} items decoded, "
              f"max RSS {_rss_mib():.0f} MiB, seed {seed}")
    return 0


def run_atheris(runs: int, artifacts: str, extra: Sequence[str]) -> int:
    import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]

    corpus = tempfile.mkdtemp(prefix="fuzz-corpus-")
    n = 0
    for dialect, seeds in SEEDS.items():
        if dialect not in DIALECTS:
            continue
        for data in seeds:
            Path(corpus, f"seed-{n}").write_bytes(encode_case(Case(dialect, data, n)))
            n += 1

    def one_input(raw: bytes) -> None:
        run_case(decode_case(raw))

    os.makedirs(artifacts, exist_ok=True)
    argv = [sys.argv[0], f"-runs={runs}", f"-artifact_prefix={artifacts.rstrip('/')}/",
            "-max_len=16384", "-rss_limit_mb=2048", *extra, corpus]
    atheris.instrument_all()
    atheris.Setup(argv, one_input)
    atheris.Fuzz()  # exits the process: 0 when every run passed
    return 0


def _have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.fuzz_codecs",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100_000, help="inputs to try")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="stop after this long (0: when --runs are done)")
    parser.add_argument("--seed", type=int, default=1, help="mutate engine: rng seed")
    parser.add_argument("--dialect", action="append", choices=DIALECTS,
                        help="fuzz only this dialect (repeatable; default: every registered one)")
    parser.add_argument("--engine", choices=("auto", "mutate", "atheris"), default="auto")
    parser.add_argument("--artifacts", default=os.path.join(tempfile.gettempdir(),
                                                            "chat-relay-fuzz"),
                        help="where failing inputs are written")
    parser.add_argument("--replay", metavar="FILE", help="run one saved input and exit")
    args, extra = parser.parse_known_args(argv)
    if args.replay:
        case = decode_case(Path(args.replay).read_bytes())
        print(case.describe()[:2000])
        run_case(case)  # raises with the reason
        print("ok: no failure")
        return 0
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _have_atheris() else "mutate"
    print(f"fuzzing {', '.join(args.dialect or DIALECTS)} with the {engine} engine, "
          f"{args.runs:,} runs", flush=True)
    if engine == "atheris":
        if args.dialect:
            parser.error("--dialect works with --engine mutate only")
        return run_atheris(args.runs, args.artifacts, extra)
    if extra:
        parser.error(f"unknown arguments: {' '.join(extra)}")
    return run_mutate(args.runs, args.seed, args.dialect or DIALECTS, args.seconds,
                      args.artifacts)


if __name__ == "__main__":
    sys.exit(main())
