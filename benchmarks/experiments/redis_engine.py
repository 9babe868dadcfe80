"""Sequenced msgs/s and p99 through the Redis engine against the zmq hub.

Starts its own redis-server and relay hosts (separate `chat-relay start`
process trees on loopback ports), runs chat-bench with its load processes
spread over the hosts (spread.py), prints one line per configuration and
Redis's CPU seconds and used_memory. Configurations: embedded hub (1 host),
`--hub tcp://` (a `chat-relay hub` and N hosts), `--engine redis://` (1..N
hosts); 1 room or many.

    python -m benchmarks.experiments.redis_engine --hosts 1 3 --rooms 1 1000 --rate 2000
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent.parent
BANNER = re.compile(r"listening on \S+:(\d+)")
PY = sys.executable


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_line(proc: subprocess.Popen[str], rx: re.Pattern[str]) -> re.Match[str]:
    assert proc.stdout is not None
    for line in proc.stdout:
        m = rx.search(line)
        if m:
            return m
    raise RuntimeError(f"{proc.args!r} ended before printing {rx.pattern}")


@contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    port = _port()
    exe = shutil.which("redis-server")
    assert exe, "redis-server missing"
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.PIPE, text=True)
    try:
        _wait_line(proc, re.compile("Ready to accept"))
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def relay_hosts(n: int, extra: list[str]) -> Iterator[list[tuple[int, int]]]:
    """n `chat-relay start` trees (1 worker each); yields (port, pid) per host."""
    procs: list[subprocess.Popen[str]] = []
    try:
        hosts = []
        for _ in range(n):
            proc = subprocess.Popen(
                [PY, "-m", "relay", "start", "--port", "0", "--workers", "1", "--no-mdns",
                 "--rate-limit", "0", "--log-level", "WARNING", "--max-per-ip", "100000",
                 "--max-connections", "100000", *extra],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append(proc)
            hosts.append((int(_wait_line(proc, BANNER).group(1)), proc.pid))
        yield hosts
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def zmq_hub(keys: Path) -> Iterator[str]:
    subprocess.run([PY, "-m", "relay", "keys", "generate", str(keys)], cwd=ROOT, check=True,
                   capture_output=True)
    bind = f"tcp://127.0.0.1:{_port()}"
    proc = subprocess.Popen([PY, "-m", "relay", "hub", "--bind", bind, "--keys", str(keys)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_line(proc, re.compile("hub listening on tcp://"))
        yield bind
    finally:
        proc.terminate()
        proc.wait(15)


def bench(ports: list[int], rooms: int, rate: int, seconds: float,
          receivers: int = 30) -> dict[str, str]:
    receivers, senders = (receivers, 9) if rooms == 1 else (rooms, rooms)
    cmd = [PY, "-m", "benchmarks.experiments.spread", ",".join(map(str, ports)), "--",
           "127.0.0.1", str(ports[0]), "-n", str(receivers), "-s", str(senders), "-r", str(rate),
           "-d", str(seconds), "--warmup", "1", "--rooms", str(rooms), "-p", str(3)]
    text = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300).stdout
    got = {}
    for key in ("delivered", "lost", "deliveries/s", "latency p99 / p99.9",
                "duplicates / reorders / corrupt"):
        m = re.search(re.escape(key) + r"\s*│\s*([^│]+?)\s*│", text)
        got[key] = m.group(1) if m else "?"
    if "?" in got.values():
        got["raw"] = text[-800:]
    return got


def redis_figures(url: str) -> tuple[int, int]:
    import redis

    r = redis.Redis.from_url(url)
    info = r.info("memory")
    return int(info["used_memory"]), int(r.dbsize())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--rooms", type=int, nargs="+", default=[1, 1000])
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--receivers", type=int, default=30, help="receivers in the 1-room runs")
    ap.add_argument("--modes", nargs="+", default=["embedded", "hub", "redis"])
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop our children on the way out
    for mode in args.modes:
        for hosts in args.hosts:
            if mode == "embedded" and hosts != 1:
                continue
            for rooms in args.rooms:
                print(f"{mode:8} hosts={hosts} rooms={rooms:<5} rate={args.rate}", end=" ",
                      flush=True)
                with tempfile.TemporaryDirectory() as tmp:
                    run(mode, hosts, rooms, args, Path(tmp))


def run(mode: str, hosts: int, rooms: int, args: argparse.Namespace, tmp: Path) -> None:
    load = time.strftime("%H:%M:%S") + " load " + " ".join(
        f"{x:.2f}" for x in psutil.getloadavg())
    if mode == "redis":
        with redis_server() as (url, pid), relay_hosts(hosts, ["--engine", url]) as hs:
            cpu0 = sum(psutil.Process(pid).cpu_times()[:2])
            got = bench([p for p, _ in hs], rooms, args.rate, args.seconds, args.receivers)
            cpu = sum(psutil.Process(pid).cpu_times()[:2]) - cpu0
            mem, keys = redis_figures(url)
            got["redis"] = f"cpu {cpu:.2f} s, used_memory {mem / 1e6:.1f} MB, {keys} keys"
    elif mode == "hub":
        with zmq_hub(tmp / "keys") as bind, \
                relay_hosts(hosts, ["--hub", bind, "--keys", str(tmp / "keys")]) as hs:
            got = bench([p for p, _ in hs], rooms, args.rate, args.seconds, args.receivers)
    else:
        with relay_hosts(1, []) as hs:
            got = bench([p for p, _ in hs], rooms, args.rate, args.seconds, args.receivers)
    print(load, "|", " | ".join(f"{k}: {v}" for k, v in got.items()), flush=True)


if __name__ == "__main__":
    main()
