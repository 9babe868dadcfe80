"""How many messages one hub sequences and forwards: the ceiling of a relay-wide order.

Starts a real hub (`chat-relay hub`, CURVE on TCP by default, or ipc) and N
fake relays: processes that speak the bus (relay/bus/) through a BusLink,
exactly as a worker's bus thread does, but with no clients behind them. Each
fake relay registers one client per room, then keeps a window of `say`
requests in flight (batched, as a worker batches) and counts the `msg` items
the hub broadcasts back. Every relay is in every room, so each message is
delivered to N relays.

    python -m benchmarks.experiments.hub_ceiling --relays 4 --seconds 5
    python -m benchmarks.experiments.hub_ceiling --sweep          # 1, 2, 4, 8 relays, tcp and ipc

Prints one line per run and writes JSON (benchmarks/results/hub_ceiling.json).
The fake relays share the CPU with the hub, so on a small machine the figure
is a floor of the hub's ceiling; `hub_cpu` says how busy the hub was.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import psutil
import zmq

from relay import curve
from relay.bus.link import BusLink
from relay.bus.messages import Heartbeat, Hello, Say
from relay.bus.wire import ANNOUNCE, pack, room_topic, unpack, worker_topic

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "hub_ceiling.json"


@dataclass
class Run:
    bus: str
    relays: int
    rooms: int
    batch: int
    window: int
    text_bytes: int
    seconds: float
    sequenced_per_s: float     # messages the hub gave a seq to
    delivered_per_s: float     # msg items the relays received (sequenced x relays)
    bus_msgs_in_per_s: float   # request batches into the hub
    hub_cpu: float             # the hub process's CPU use during the run (1.0 = one core)
    sequenced_per_hub_core: float  # sequenced_per_s / hub_cpu: the hub's cost, not the load's


def start_hub(endpoint: str, keys: str) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "relay", "hub", "--bind", endpoint, "--log-level", "WARNING",
           "--bus-hwm", "1000000"]
    if keys:
        cmd += ["--keys", keys]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"listening on (\S+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"hub did not start: {line!r}")
    return proc, m.group(1)


def fake_relay(idx: int, endpoint: str, keys: str, rooms: int, batch: int, window: int,
               text_bytes: int, go: Event, warmup: float, seconds: float,
               results: mp.Queue[dict[str, int]]) -> None:
    """One relay's bus thread, minus the clients: register, then keep `window` says in flight."""
    wid = f"bench{idx}-{os.getpid()}"
    ctx: zmq.Context[Any] = zmq.Context()
    link = BusLink(ctx, endpoint, wid, hwm=1_000_000, keys=keys, epoch=1)
    sock = link.sock
    for topic in [worker_topic(wid), ANNOUNCE] + [room_topic(f"r{r}") for r in range(rooms)]:
        link.subscribe(topic)

    # Handshake: heartbeat until the hub answers on our topic, then one client per room.
    ready = False
    while not ready:
        link.send([Heartbeat(hello=True).to_wire()])
        if sock.poll(200):
            topic, _, body = sock.recv_multipart()
            ready = topic == worker_topic(wid)
    link.send([Hello(f"{wid}-{r}", [f"r{r}"], {}, "").to_wire(r + 1) for r in range(rooms)])
    joined = 0
    while joined < rooms:
        topic, _, body = sock.recv_multipart()
        if topic == worker_topic(wid):
            joined += sum(1 for _, reply in unpack(body) if reply.get("t") == "joined")
    text = "x" * text_bytes
    batches = [pack([Say(f"r{r}", text).to_wire(r + 1) for _ in range(batch)])
               for r in range(rooms)]
    results.put({"ready": idx})
    go.wait()
    outstanding = own = seen = sent_batches = 0
    counts = {"own": 0, "seen": 0, "batches": 0}
    start = time.monotonic()
    measure_from, measure_to = start + warmup, start + warmup + seconds
    measuring = False
    turn = 0
    while True:
        now = time.monotonic()
        if not measuring and now >= measure_from:
            measuring = True
            counts = {"own": -own, "seen": -seen, "batches": -sent_batches}
        if now >= measure_to:
            break
        while outstanding + batch <= window:
            link.send_body(batches[turn % rooms])
            turn += 1
            outstanding += batch
            sent_batches += 1
        if not sock.poll(100):
            continue
        for _ in range(1000):
            try:
                topic, _, body = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if topic[:1] != b"r":
                continue
            for item in unpack(body):
                seen += 1
                if item[1] == wid:
                    own += 1
                    outstanding -= 1
    counts["own"] += own
    counts["seen"] += seen
    counts["batches"] += sent_batches
    results.put(counts)
    link.close(linger=0)
    ctx.term()


def run(bus: str, relays: int, rooms: int, batch: int, window: int, text_bytes: int,
        seconds: float, warmup: float = 1.0) -> Run:
    with tempfile.TemporaryDirectory(prefix="hub-ceiling-") as tmp:
        keys = ""
        if bus == "tcp":
            keys = os.path.join(tmp, "keys")
            curve.generate(keys)
            endpoint = "tcp://127.0.0.1:*"  # the hub's banner names the port
        else:
            endpoint = f"ipc://{tmp}/hub"
        hub, endpoint = start_hub(endpoint, keys)
        spawn = mp.get_context("spawn")
        go = spawn.Event()
        results: mp.Queue[dict[str, int]] = spawn.Queue()
        procs = [spawn.Process(target=fake_relay,
                               args=(i, endpoint, keys, rooms, batch, window, text_bytes, go,
                                     warmup, seconds, results))
                 for i in range(relays)]
        try:
            for p in procs:
                p.start()
            for _ in procs:  # every fake relay registered: one start line for all
                results.get(timeout=120)
            hub_ps = psutil.Process(hub.pid)
            go.set()
            time.sleep(warmup)
            cpu0 = sum(hub_ps.cpu_times()[:2])
            time.sleep(seconds)
            cpu = (sum(hub_ps.cpu_times()[:2]) - cpu0) / seconds
            got = [results.get(timeout=60) for _ in procs]
            for p in procs:
                p.join(10)
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
            hub.terminate()
            hub.wait(10)
    return Run(
        bus=bus, relays=relays, rooms=rooms, batch=batch, window=window,
        text_bytes=text_bytes, seconds=seconds,
        sequenced_per_s=sum(g["own"] for g in got) / seconds,
        delivered_per_s=sum(g["seen"] for g in got) / seconds,
        bus_msgs_in_per_s=sum(g["batches"] for g in got) / seconds,
        hub_cpu=round(cpu, 2),
        sequenced_per_hub_core=sum(g["own"] for g in got) / seconds / max(cpu, 0.01),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bus", choices=["tcp", "ipc"], default="tcp",
                    help="tcp (CURVE, as between hosts) or ipc (one host)")
    ap.add_argument("--relays", type=int, default=4)
    ap.add_argument("--rooms", type=int, default=1, help="rooms; every relay joins all")
    ap.add_argument("--batch", type=int, default=100, help="says per request batch")
    ap.add_argument("--window", type=int, default=1000, help="says in flight per relay")
    ap.add_argument("--text-bytes", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--sweep", action="store_true", help="relays 1,2,4,8 on tcp and ipc")
    ap.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = ap.parse_args(argv)
    plan = ([(bus, n) for bus in ("tcp", "ipc") for n in (1, 2, 4, 8)] if args.sweep
            else [(args.bus, args.relays)])
    runs = []
    for bus, n in plan:
        r = run(bus, n, args.rooms, args.batch, args.window, args.text_bytes, args.seconds)
        runs.append(r)
        print(f"{r.bus:3} relays={r.relays:2} rooms={r.rooms} batch={r.batch:3}  "
              f"sequenced {r.sequenced_per_s:10,.0f} msg/s  delivered "
              f"{r.delivered_per_s:10,.0f} msg/s  hub cpu {r.hub_cpu:.2f} "
              f"({r.sequenced_per_hub_core:,.0f} msg/s per hub core)", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {"cpus": os.cpu_count(), "loadavg": os.getloadavg(),
              "runs": [asdict(r) for r in runs]}
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
