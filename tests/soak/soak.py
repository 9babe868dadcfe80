"""Soak a real relay: churn and traffic for minutes, then check nothing leaked.

`python -m tests.soak.soak --minutes 30` (`make soak`) starts a relay on an
ephemeral loopback port and, until the time is up:

- keeps `--steady` native clients in `lobby` that read everything and check
  that their seqs never skip (a lost message would show as a jump);
- has those clients talk at `--rate` messages/s in total;
- churns `--churn` short-lived connections a second, mixed: native
  hello/say/bye, text lines then /quit, connect-and-close, RST mid-frame,
  half a frame then a close, a bad frame.

It samples RSS, open fds and threads of every relay process (supervisor, hub,
workers) right after start, after a warm-up (the baseline: thread stacks,
zmq buffers and allocator arenas exist by then) and at the end, after the
churn stopped and the relay had `--settle` seconds to close what was open.
Fds and threads must return to the baseline (within `--fd-tolerance` and
`--thread-tolerance`), RSS must stay within `--rss-tolerance-mib` (or 10%)
of it, and the processes must be the same ones (none died and restarted).
Everything is bounded in count and time; the summary is printed and written
to benchmarks/results/soak-<date>.json. Exit status 0 means it passed.
"""

from __future__ import annotations

import argparse
import json
import random
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from tests.relayproc import ROOT, RelayProcess
from tests.wire import read_for
from transports.native import FrameDecoder, frame

RESULTS = ROOT / "benchmarks" / "results"


# Sampling -----------------------------------------------------------------------------


@dataclass
class ProcSample:
    pid: int
    role: str
    rss_mib: float
    fds: int
    threads: int


def _role(proc: psutil.Process) -> str:
    cmd = proc.cmdline()
    for role in ("_hub", "_worker"):
        if role in cmd:
            return role.lstrip("_")
    return "supervisor"


def sample(relay: RelayProcess) -> list[ProcSample]:
    out = []
    for proc in [psutil.Process(relay.pid), *relay.children()]:
        try:
            with proc.oneshot():
                out.append(ProcSample(proc.pid, _role(proc), proc.memory_info().rss / 2**20,
                                      proc.num_fds(), proc.num_threads()))
        except psutil.NoSuchProcess:
            continue
    return sorted(out, key=lambda s: (s.role, s.pid))


def totals(samples: Sequence[ProcSample]) -> dict[str, float]:
    return {"rss_mib": round(sum(s.rss_mib for s in samples), 1),
            "fds": sum(s.fds for s in samples),
            "threads": sum(s.threads for s in samples)}


# Steady clients -------------------------------------------------------------------------


@dataclass
class Steady:
    nick: str
    sock: socket.socket
    decoder: FrameDecoder = field(default_factory=lambda: FrameDecoder(1 << 24))
    last_seq: int | None = None
    received: int = 0
    gaps: int = 0
    errors: list[str] = field(default_factory=list)


def connect_steady(port: int, nick: str) -> Steady:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(frame({"t": "hello", "v": 1, "nick": nick, "rooms": ["lobby"]}))
    client = Steady(nick, sock)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for body in client.decoder.feed(sock.recv(65536)):
            if isinstance(body, dict) and body.get("t") == "joined":
                client.last_seq = int(body["seq"])
                sock.setblocking(False)
                return client
    raise RuntimeError(f"{nick} was not welcomed")


def read_steady(clients: list[Steady], stop: threading.Event) -> None:
    """One thread reads every steady client and checks its seqs are contiguous."""
    sel = selectors.DefaultSelector()
    for client in clients:
        sel.register(client.sock, selectors.EVENT_READ, client)
    while not stop.is_set():
        for key, _ in sel.select(0.2):
            c: Steady = key.data
            try:
                data = c.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError as exc:
                data = b""
                c.errors.append(f"recv: {exc}")
            if not data:
                c.errors.append("closed by the relay")
                sel.unregister(c.sock)
                continue
            for body in c.decoder.feed(data):
                if not isinstance(body, dict):
                    continue
                t = body.get("t")
                if t == "msg":
                    seq = int(body["seq"])
                    if c.last_seq is not None and seq != c.last_seq + 1:
                        c.gaps += 1
                    c.last_seq = seq
                    c.received += 1
                elif t == "error":
                    c.errors.append(str(body.get("code")))
    sel.close()


# Churn -------------------------------------------------------------------------------------

Churn = Callable[[int, random.Random], None]


def _conn(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def churn_native(port: int, rng: random.Random) -> None:
    with _conn(port) as s:
        nick = f"n{rng.randrange(1 << 40)}"
        s.sendall(frame({"t": "hello", "v": 1, "nick": nick, "rooms": ["lobby", "churn"]})
                  + frame({"t": "say", "room": "churn", "text": "hi"})
                  + frame({"t": "bye"}))
        read_for(s, 3.0)


def churn_text(port: int, rng: random.Random) -> None:
    with _conn(port) as s:
        s.sendall(b"/join churn\nhello from nc\n/who\n/quit\n")
        read_for(s, 3.0)


def churn_close(port: int, rng: random.Random) -> None:
    _conn(port).close()


def churn_rst(port: int, rng: random.Random) -> None:
    s = _conn(port)
    hello = frame({"t": "hello", "v": 1, "nick": f"r{rng.randrange(1 << 40)}"})
    s.sendall(hello[: rng.randrange(1, len(hello))])
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def churn_bad(port: int, rng: random.Random) -> None:
    with _conn(port) as s:
        s.sendall(struct.pack(">I", 3) + b"\xc1\xc1\xc1" + struct.pack(">I", 1 << 20))
        read_for(s, 1.0)


CHURN: list[Churn] = [churn_native, churn_native, churn_text, churn_close, churn_rst,
                      churn_bad]


# The run -------------------------------------------------------------------------------------


@dataclass
class Counters:
    churned: int = 0
    churn_failures: int = 0
    sent: int = 0
    failure_samples: list[str] = field(default_factory=list)


def _churn_loop(port: int, per_second: float, deadline: float, counters: Counters,
                pool: ThreadPoolExecutor, seed: int) -> None:
    rng = random.Random(seed)
    lock = threading.Lock()

    def one(action: Churn, s: int) -> None:
        try:
            action(port, random.Random(s))
        except OSError as exc:
            with lock:
                counters.churn_failures += 1
                if len(counters.failure_samples) < 5:
                    counters.failure_samples.append(f"{action.__name__}: {exc}")
        with lock:
            counters.churned += 1

    interval = 1.0 / per_second
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        pool.submit(one, rng.choice(CHURN), rng.randrange(1 << 30))
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing, not waiting for a condition


def _talk_loop(clients: list[Steady], rate: float, deadline: float, counters: Counters) -> None:
    interval = 1.0 / rate
    next_at = time.monotonic()
    i = 0
    while time.monotonic() < deadline:
        c = clients[i % len(clients)]
        try:
            c.sock.sendall(frame({"t": "say", "room": "lobby", "text": f"{c.nick} {i}"}))
            counters.sent += 1
        except BlockingIOError:
            pass  # its kernel buffer is full; the next client talks instead
        except OSError as exc:
            c.errors.append(f"send: {exc}")
        i += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _phase(relay: RelayProcess, seconds: float, args: argparse.Namespace, clients: list[Steady],
           counters: Counters, seed: int) -> None:
    deadline = time.monotonic() + seconds
    with ThreadPoolExecutor(args.parallel) as pool:
        talker = threading.Thread(target=_talk_loop,
                                  args=(clients, args.rate, deadline, counters), daemon=True)
        talker.start()
        _churn_loop(relay.port, args.churn, deadline, counters, pool, seed)
        talker.join(10)


def _compare(baseline: dict[str, float], end: dict[str, float], args: argparse.Namespace
             ) -> dict[str, Any]:
    rss_limit = max(args.rss_tolerance_mib, baseline["rss_mib"] * 0.10)
    checks = {
        "rss_mib": (end["rss_mib"] - baseline["rss_mib"], rss_limit),
        "fds": (end["fds"] - baseline["fds"], args.fd_tolerance),
        "threads": (end["threads"] - baseline["threads"], args.thread_tolerance),
    }
    return {name: {"growth": round(g, 1), "tolerance": round(t, 1), "ok": g <= t}
            for name, (g, t) in checks.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    total = args.minutes * 60.0
    warmup = min(args.warmup, total / 4)
    relay_args = ["--rate-limit", "0", "--max-per-ip", "100000",
                  "--max-connections", "100000", "--hello-timeout", "5"]
    relay = RelayProcess(workers=args.workers, args=relay_args).start()
    started_at = datetime.now()
    counters = Counters()
    stop_reading = threading.Event()
    clients: list[Steady] = []
    timeline: list[dict[str, Any]] = []
    try:
        start = sample(relay)
        pids = {s.pid for s in start}
        clients = [connect_steady(relay.port, f"steady{i}") for i in range(args.steady)]
        reader = threading.Thread(target=read_steady, args=(clients, stop_reading), daemon=True)
        reader.start()
        print(f"relay on port {relay.port}; warm-up {warmup:.0f} s, then {total - warmup:.0f} s "
              f"of churn ({args.churn:g}/s) and traffic ({args.rate:g} msg/s)", flush=True)
        _phase(relay, warmup, args, clients, counters, seed=1)
        time.sleep(args.settle)  # let warm-up connections finish closing, same as at the end
        baseline = sample(relay)
        t0 = time.monotonic()
        left = total - warmup
        step = 0
        while left > 0:
            chunk = min(args.sample_every, left)
            _phase(relay, chunk, args, clients, counters, seed=100 + step)
            left -= chunk
            step += 1
            point = {"t": round(time.monotonic() - t0, 1), **totals(sample(relay)),
                     "churned": counters.churned}
            timeline.append(point)
            print(f"  {point['t']:7.0f} s  rss {point['rss_mib']:7.1f} MiB  "
                  f"fds {point['fds']:5d}  threads {point['threads']:5d}  "
                  f"churned {counters.churned}", flush=True)
        time.sleep(args.settle)
        end = sample(relay)
        stop_reading.set()
        reader.join(5)
    finally:
        stop_reading.set()
        for c in clients:
            c.sock.close()
        relay.stop()
    same_processes = {s.pid for s in end} == pids
    comparison = _compare(totals(baseline), totals(end), args)
    received = sum(c.received for c in clients)
    gaps = sum(c.gaps for c in clients)
    client_errors = sorted({e for c in clients for e in c.errors})
    passed = (same_processes and all(v["ok"] for v in comparison.values()) and gaps == 0
              and not client_errors)
    return {
        "started": started_at.isoformat(timespec="seconds"),
        "minutes": args.minutes,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "passed": passed,
        "same_processes": same_processes,
        "start": totals(start), "baseline": totals(baseline), "end": totals(end),
        "comparison": comparison,
        "processes": {"start": [asdict(s) for s in start],
                      "baseline": [asdict(s) for s in baseline],
                      "end": [asdict(s) for s in end]},
        "churned": counters.churned,
        "churn_failures": counters.churn_failures,
        "churn_failure_samples": counters.failure_samples,
        "messages_sent": counters.sent,
        "messages_received": received,
        "seq_gaps": gaps,
        "client_errors": client_errors,
        "timeline": timeline,
    }


def summary(result: dict[str, Any]) -> str:
    lines = [f"soak: {result['minutes']:g} min, {result['churned']} connections churned "
             f"({result['churn_failures']} failed to connect/send), "
             f"{result['messages_sent']} msgs sent, {result['messages_received']} delivered "
             f"to steady clients, {result['seq_gaps']} seq gaps",
             f"{'':10}{'start':>12}{'baseline':>12}{'end':>12}{'growth':>10}{'allowed':>10}"]
    for key in ("rss_mib", "fds", "threads"):
        cmp = result["comparison"][key]
        lines.append(f"{key:10}{result['start'][key]:>12}{result['baseline'][key]:>12}"
                     f"{result['end'][key]:>12}{cmp['growth']:>10}{cmp['tolerance']:>10}"
                     f"  {'ok' if cmp['ok'] else 'LEAK?'}")
    lines.append(f"same relay processes throughout: {result['same_processes']}")
    if result["client_errors"]:
        lines.append(f"steady client errors: {result['client_errors']}")
    lines.append("PASSED" if result["passed"] else "FAILED")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.soak.soak", description=__doc__)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steady", type=int, default=20, help="long-lived reading clients")
    p.add_argument("--rate", type=float, default=200.0, help="messages/s from steady clients")
    p.add_argument("--churn", type=float, default=30.0, help="short connections per second")
    p.add_argument("--parallel", type=int, default=32, help="churn connections at once (max)")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds before the baseline")
    p.add_argument("--settle", type=float, default=5.0, help="quiet seconds before a sample")
    p.add_argument("--sample-every", type=float, default=15.0)
    p.add_argument("--rss-tolerance-mib", type=float, default=16.0)
    p.add_argument("--fd-tolerance", type=int, default=4)
    p.add_argument("--thread-tolerance", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.churn <= 0 or args.rate <= 0 or args.steady < 1:
        p.error("--minutes, --churn, --rate and --steady must be positive")
    result = run(args)
    print(summary(result))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"soak-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
