"""Issue 4, bus: every bus message carries (origin, epoch, seq); gaps are counted, never silent.

Two runs against a real relay (`chat-relay start`, 2 workers, loopback):

(a) default `--bus-hwm`: 1,000,000 messages pushed through by native clients
    that send and read in separate processes (each keeps a window of its own
    says in flight, so no reader can fall behind far enough to be cut as a slow
    consumer). Expect: zero bus gaps in the metrics and the log, and every
    client saw every seq exactly once, in order.
(b) `--bus-hwm` tiny, a burst, and one worker made slow on purpose by a large
    local fan-out (many members that read and discard). The hub's XPUB drops
    bus messages for a subscriber whose pipe is full (SNDHWM, after the
    worker's RCVHWM and the ipc socket buffers are full); that worker counts
    the jump in the bus seq, logs it and exports it, and its clients see seq
    jumps (never a silent hole). A worker's XSUB also drops upstream at its
    SNDHWM; the hub counts those (`process="hub"`). A control run repeats the
    burst at the default HWM.

    python -m benchmarks.experiments.bus_gaps                      # both runs
    python -m benchmarks.experiments.bus_gaps --only b --hwm 1     # just the tiny-HWM run

Shared helpers (placing clients on a chosen worker, scraping metrics, the
machine's load) are used by benchmarks/experiments/faults.py too.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import select
import socket
import struct
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgpack
import psutil

from relay.config import Settings
from tests.relayproc import RelayProcess
from transports.native import frame

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
METRICS_URL = re.compile(r"metrics on (http://\S+)")
_LEN = struct.Struct(">I")
ROOM = "bench"


# Shared helpers ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Facts that explain the figures: CPUs, load (other jobs share this box), versions."""
    return {
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def today() -> str:
    return time.strftime("%Y-%m-%d")


def start_relay(workers: int, args: list[str]) -> tuple[RelayProcess, str]:
    """A relay with metrics on an ephemeral port; returns it and its metrics URL."""
    relay = RelayProcess(workers, ["--metrics", "127.0.0.1:0", *args]).start(30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in list(relay.output):
            m = METRICS_URL.search(line)
            if m:
                return relay, m.group(1)
        time.sleep(0.05)
    relay.stop()
    raise RuntimeError("relay printed no metrics URL:\n" + "".join(relay.output))


def scrape(url: str) -> dict[str, float]:
    """Prometheus text -> {"name{labels}": value} (HELP/TYPE lines skipped)."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def metric(values: dict[str, float], name: str, **labels: str) -> float:
    """Sum of every series of `name` whose labels include `labels`."""
    total = 0.0
    for key, value in values.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def worker_pids(relay_pid: int) -> list[int]:
    pids = []
    for child in psutil.Process(relay_pid).children(recursive=True):
        try:
            if "_worker" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                pids.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return sorted(pids)


def served_by(relay_pid: int) -> dict[int, int]:
    """Client-side port -> pid of the worker that holds that connection."""
    out: dict[int, int] = {}
    for pid in worker_pids(relay_pid):
        try:
            for c in psutil.Process(pid).net_connections(kind="tcp"):
                if c.raddr:
                    out[c.raddr.port] = pid
        except psutil.NoSuchProcess:
            continue
    return out


def place(port: int, relay_pid: int, worker_pid: int, count: int, tries: int = 40
          ) -> list[socket.socket]:
    """Open `count` connections served by `worker_pid` (0: any worker), bounded.

    Workers share one listening socket, so which one accepts is up to the
    kernel: connect a round, see who serves each, keep the right ones. Each
    socket sends the first byte of a native frame (0x00) at once, so the relay
    never takes a silent newcomer for a text client (0.3 s of silence makes
    one); `hello()` sends the rest of the hello frame.
    """
    kept: list[socket.socket] = []
    for _ in range(tries):
        if len(kept) >= count:
            break
        need = count - len(kept)
        round_ = []
        for _ in range(need if worker_pid == 0 else min(200, max(4, need * 2))):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"\x00")
            round_.append(s)
        if worker_pid == 0:
            kept.extend(round_)
            break
        deadline = time.monotonic() + 2.0
        owners: dict[int, int] = {}
        ports = [s.getsockname()[1] for s in round_]
        while time.monotonic() < deadline:
            owners = served_by(relay_pid)
            if all(p in owners for p in ports):
                break
            time.sleep(0.02)
        for s, p in zip(round_, ports, strict=True):
            if owners.get(p) == worker_pid and len(kept) < count:
                kept.append(s)
            else:
                s.close()
    if len(kept) < count:
        raise RuntimeError(f"could place only {len(kept)} of {count} on worker {worker_pid}")
    return kept


def read_frames(buf: bytearray) -> list[Any]:
    """Split complete native frames off the front of `buf` and decode them."""
    out: list[Any] = []
    pos, end = 0, len(buf)
    view = memoryview(buf)
    unpackb = msgpack.unpackb
    while end - pos >= 4:
        (n,) = _LEN.unpack_from(buf, pos)
        if end - pos - 4 < n:
            break
        out.append(unpackb(view[pos + 4:pos + 4 + n]))
        pos += 4 + n
    view.release()
    if pos:
        del buf[:pos]
    return out


def join(sock: socket.socket, nick: str, rooms: list[str], resume: dict[str, int] | None = None,
         timeout: float = 10.0) -> tuple[dict[str, int], bytearray, list[Any]]:
    """hello (after place()'s first byte) and wait for welcome and each `joined`.

    Returns each room's joined seq, unparsed leftovers and frames that came
    after (a resume replays history right behind its `joined`).
    """
    body: dict[str, Any] = {"t": "hello", "v": 1, "nick": nick, "rooms": rooms}
    if resume:
        body["resume"] = resume
    sock.settimeout(timeout)
    sock.sendall(frame(body)[1:])
    want = set(rooms) | set(resume or {})
    buf = bytearray()
    joined: dict[str, int] = {}
    rest: list[Any] = []
    welcomed = False
    deadline = time.monotonic() + timeout
    while not (welcomed and want <= set(joined)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{nick}: no welcome/joined in {timeout} s")
        data = sock.recv(1 << 16)
        if not data:
            raise RuntimeError(f"{nick}: closed during hello")
        buf += data
        for b in read_frames(buf):
            t = b.get("t") if isinstance(b, dict) else None
            if t == "welcome":
                welcomed = True
            elif t == "joined":
                joined[b["room"]] = int(b["seq"])
            elif t == "error" and not welcomed:
                raise NickTaken(str(b)) if b.get("code") == "nick_taken" else RuntimeError(
                    f"{nick}: hello refused: {b}")
            elif welcomed:
                rest.append(b)
    return joined, buf, rest


class NickTaken(RuntimeError):
    pass


def hello(sock: socket.socket, nick: str, rooms: list[str], timeout: float = 20.0
          ) -> tuple[dict[str, int], bytearray]:
    """Say hello and wait for welcome and every `joined`; returns {room: seq} and leftovers."""
    joined, buf, _ = join(sock, nick, rooms, timeout=timeout)
    return joined, buf


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{today()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def log_lines(relay: RelayProcess, pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [line.rstrip() for line in list(relay.output) if rx.search(line)]


# The fast client: sends a window of says, reads everything, checks every seq ---------


@dataclass
class ClientSpec:
    nick: str
    port: int
    relay_pid: int
    worker_pid: int         # 0: wherever the kernel puts it
    rooms: list[str]        # says alternate between these rooms
    send: int               # says to send
    window: int             # own says in flight at most; 0 = send all as fast as possible
    index: int = 0          # our slot in the shared progress array
    lag: int = 0            # send only while the slowest reader is fewer msgs behind us
    text_bytes: int = 16
    quiet: float = 3.0      # stop this long after the last message once our sends are done
    expect: int = 0         # stop once this many msgs arrived (0: stop on `quiet` only)
    deadline: float = 600.0  # hard bound on the run, seconds


@dataclass
class ClientResult:
    nick: str
    worker_pid: int
    joined_seq: dict[str, int]  # each room's seq when we joined it
    sent: int = 0
    echoes: int = 0
    received: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)
    jumps: int = 0          # times the seq skipped ahead
    missing: int = 0        # seqs skipped in those jumps
    behind: int = 0         # a seq at or below the last one (duplicate or reorder)
    closed: bool = False
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0    # from "go" to the last msg received
    markers_seen: int = 0


def fast_client(spec: ClientSpec, progress: Any, pipe: Connection) -> None:
    """Child process: one connection that sends its share and checks every msg it gets."""
    try:
        (sock,) = place(spec.port, spec.relay_pid, spec.worker_pid, 1)
        joined, buf = hello(sock, spec.nick, spec.rooms)
        res = ClientResult(spec.nick, spec.worker_pid, joined, last_seq=dict(joined))
        pipe.send(("ready", joined))
        if not pipe.poll(120) or pipe.recv() != "go":
            return
        run_client(spec, sock, buf, res, pipe, progress)
        pipe.send(("done", asdict(res)))
    except Exception as exc:  # report, never hang the parent
        pipe.send(("error", f"{spec.nick}: {exc!r}"))


def run_client(spec: ClientSpec, sock: socket.socket, buf: bytearray, res: ClientResult,
               pipe: Connection, progress: Any) -> None:
    """Send and read. Without `expect`: once our says are out and the line has been
    quiet for `spec.quiet`, tell the parent ("quiet"), then read on until a
    marker message (text "marker") arrived in every room: messages lost at the
    tail of a burst show up as a seq jump only when a later message comes.

    With `spec.lag`, every client publishes how many msgs it has read in the
    shared `progress` array and sends only while the slowest reader is fewer
    than `lag` behind it: a reader that the (loaded) machine deschedules then
    holds everyone back instead of growing an outbox until it is cut as a
    slow consumer, which would be a true verdict about the load, not the bus."""
    rooms = spec.rooms
    says = [frame({"t": "say", "room": r, "text": "x" * spec.text_bytes}) for r in rooms]
    chunk = 256  # frames per send() call: the relay reads many frames per recv
    sock.setblocking(False)
    out = b""
    expected = {room: seq + 1 for room, seq in res.joined_seq.items()}
    last_rx = time.monotonic()
    t0 = time.monotonic()
    hard = t0 + spec.deadline
    nick = spec.nick
    quiet_told = False
    markers: set[str] = set()
    while True:
        now = time.monotonic()
        if now > hard:
            res.errors.append("deadline")
            break
        if res.sent >= spec.send and not out:
            if spec.expect and res.received >= spec.expect:
                break
            if not spec.expect and not quiet_told and now - last_rx > spec.quiet:
                pipe.send(("quiet", None))
                quiet_told = True
            if quiet_told and (len(markers) == len(rooms) or now - last_rx > 120.0):
                break
        if not out and res.sent < spec.send:
            room_left = spec.send - res.sent
            if spec.window:
                room_left = min(room_left, spec.window - (res.sent - res.echoes))
            if spec.lag:
                room_left = min(room_left, spec.lag - (res.received - min(progress)))
            n = min(chunk, room_left)
            if n > 0:  # rooms alternate say by say: one bus message per say then
                out = b"".join(says[(res.sent + k) % len(says)] for k in range(n))
                res.sent += n
        rl, wl, _ = select.select([sock], [sock] if out else [], [], 0.05)
        if wl:
            try:
                k = sock.send(out)
                out = out[k:]
            except BlockingIOError:
                pass
        if not rl:
            continue
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        except OSError as exc:
            res.errors.append(repr(exc))
            res.closed = True
            break
        if not data:
            res.closed = True
            break
        last_rx = time.monotonic()
        buf += data
        for body in read_frames(buf):
            if not isinstance(body, dict):
                continue
            t = body.get("t")
            if t == "msg":
                seq = body["seq"]
                room = body["room"]
                res.received += 1
                want = expected[room]
                if seq == want:
                    expected[room] = seq + 1
                elif seq > want:
                    res.jumps += 1
                    res.missing += seq - want
                    expected[room] = seq + 1
                else:
                    res.behind += 1
                res.last_seq[room] = max(res.last_seq[room], seq)
                if body.get("from") == nick:
                    res.echoes += 1
                elif body.get("text") == "marker":
                    res.received -= 1  # not part of the burst
                    markers.add(room)
                    continue
                res.seconds = last_rx - t0  # the burst's last msg so far
            elif t == "error":
                res.errors.append(str(body.get("code")))
        if spec.lag:
            progress[spec.index] = res.received
    res.markers_seen = len(markers)
    sock.close()


def sink(port: int, relay_pid: int, worker_pid: int, count: int, rooms: list[str],
         pipe: Connection) -> None:
    """Child process: `count` members on one worker that read and discard (a big fan-out).

    They say hello one after another (each waits for its `joined`s), so the
    join storm itself stays small enough for a tiny HWM.
    """
    try:
        socks = place(port, relay_pid, worker_pid, count)
        failed = 0
        for i, s in enumerate(socks):
            try:
                hello(s, f"sink{os.getpid()}-{i}", rooms, timeout=5.0)
            except (RuntimeError, OSError):
                failed += 1
            s.setblocking(False)
        pipe.send(("ready", failed))
        received = 0
        closed = 0
        live = list(socks)
        while live:
            if pipe.poll(0):
                if pipe.recv() == "stop":
                    break
                pipe.send(("bytes", received))  # the parent asks while the burst drains
            rl, _, _ = select.select(live, [], [], 0.1)
            for s in rl:
                try:
                    data = s.recv(1 << 20)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    closed += 1
                    live.remove(s)
                    continue
                received += len(data)
        pipe.send(("done", {"members": count, "hello_failed": failed, "bytes": received,
                            "closed_by_relay": closed}))
        for s in socks:
            s.close()
    except Exception as exc:
        pipe.send(("error", repr(exc)))


# One run --------------------------------------------------------------------------


def expect_msg(pipe: Connection, kind: str, timeout: float = 30.0) -> Any:
    if not pipe.poll(timeout):
        raise RuntimeError(f"no {kind!r} from a child in {timeout} s")
    got, value = pipe.recv()
    if got != kind:
        raise RuntimeError(f"child said {got}: {value}")
    return value


def gaps_by_pid(lines: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in lines:
        m = re.search(r"\[(\d+)\]", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + 1
    return out


def run(label: str, hwm: int | None, rooms: list[str], clients: int, per_client: int,
        window: int, fanout: int, extra: list[str], deadline: float) -> dict[str, Any]:
    args = ["--rate-limit", "0", "--max-per-ip", "100000", "--max-connections", "100000",
            "--log-level", "INFO"] + extra
    if hwm is not None:
        args += ["--bus-hwm", str(hwm)]
    ctx = mp.get_context("spawn")
    relay, url = start_relay(2, args)
    procs: list[Any] = []
    try:
        workers = worker_pids(relay.pid)
        expect = per_client * clients if window else 0  # (a): nothing may be lost
        specs = [ClientSpec(f"c{i}", relay.port, relay.pid, workers[i % 2], rooms, per_client,
                            window, index=i, lag=4 * window if window else 0, expect=expect,
                            deadline=deadline) for i in range(clients)]
        progress = ctx.RawArray("q", clients)
        pipes: list[Connection] = []
        sinks: list[Connection] = []
        parts = max(1, fanout // 200) if fanout else 0
        for _ in range(parts):  # the slow worker: workers[0] gets the big fan-out
            a, b = ctx.Pipe()
            p = ctx.Process(target=sink, args=(relay.port, relay.pid, workers[0],
                                               fanout // parts, rooms, b), daemon=True)
            p.start()
            procs.append(p)
            sinks.append(a)
        for spec in specs:
            a, b = ctx.Pipe()
            p = ctx.Process(target=fast_client, args=(spec, progress, b), daemon=True)
            p.start()
            procs.append(p)
            pipes.append(a)
        for pipe in [*sinks, *pipes]:
            if not pipe.poll(300):
                raise RuntimeError("a client never got ready")
            kind, value = pipe.recv()
            if kind != "ready":
                raise RuntimeError(str(value))
        time.sleep(1.5)  # the last presences settle; three metrics heartbeats pass
        before = scrape(url)
        mark = len(relay.output)  # log lines from here on belong to the run
        for pipe in pipes:
            pipe.send("go")
        results: list[dict[str, Any]] = []
        tail: dict[str, Any] = {}
        if not expect:  # (b): the burst is over; what did the tail lose?
            for pipe in pipes:
                if not pipe.poll(deadline + 60):
                    raise RuntimeError("a client never went quiet")
                kind, value = pipe.recv()
                if kind != "quiet":
                    raise RuntimeError(str(value))
            # A worker far behind delivers in multi-second bursts, so a client's
            # silence proves little: wait until the fan-out members' byte counts
            # stand still too (the slow worker has drained its bus backlog).
            still, last_bytes = 0.0, -1
            until = time.monotonic() + 300
            while still < 3.0 and time.monotonic() < until:
                for pipe in sinks:
                    pipe.send("count")
                now_bytes = sum(int(expect_msg(pipe, "bytes")) for pipe in sinks)
                still = still + 0.5 if now_bytes == last_bytes else 0.0
                last_bytes = now_bytes
                time.sleep(0.5)
            time.sleep(1.2)
            quiet = scrape(url)
            tail["bus_missing_before_marker"] = int(
                metric(quiet, "chat_relay_bus_missing_total")
                - metric(before, "chat_relay_bus_missing_total"))
            (msock,) = place(relay.port, relay.pid, 0, 1)
            hello(msock, "marker", rooms)
            msock.sendall(b"".join(frame({"t": "say", "room": r, "text": "marker"})
                                   for r in rooms))
        for pipe in pipes:
            if not pipe.poll(deadline + 60):
                raise RuntimeError("a client never finished")
            kind, value = pipe.recv()
            if kind != "done":
                raise RuntimeError(str(value))
            results.append(value)
        seconds = max(r["seconds"] for r in results)
        sink_stats = []
        for pipe in sinks:
            pipe.send("stop")
            if pipe.poll(30):
                sink_stats.append(pipe.recv()[1])
        time.sleep(1.2)  # two metrics heartbeats
        after = scrape(url)
        output = list(relay.output)
        setup_gaps = [line.rstrip() for line in output[:mark] if "bus gap" in line]
        gap_lines = [line.rstrip() for line in output[mark:] if "bus gap" in line]
        cuts = [line for line in output[mark:] if "slow consumer" in line]
    except Exception:
        Path("/tmp/bus_gaps_relay.log").write_text("".join(relay.output))
        print("relay log tail (whole log in /tmp/bus_gaps_relay.log):\n"
              + "".join(relay.output[-30:]), file=sys.stderr)
        raise
    finally:
        relay.stop()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    sent = sum(r["sent"] for r in results)
    markers = len(rooms) if tail else 0
    seqs_assigned = int(metric(after, "chat_relay_hub_messages_total")
                        - metric(before, "chat_relay_hub_messages_total")) - markers
    if tail:
        tail["bus_missing_after_marker"] = int(
            metric(after, "chat_relay_bus_missing_total")
            - metric(before, "chat_relay_bus_missing_total"))
        tail["clients_saw_marker_in_every_room"] = all(r["markers_seen"] == len(rooms)
                                                       for r in results)

    def delta(name: str, **labels: str) -> int:
        return int(metric(after, name, **labels) - metric(before, name, **labels))

    per_worker: dict[str, dict[str, int]] = {}
    for r in results:
        w = per_worker.setdefault(str(r["worker_pid"]), {"clients": 0, "seq_jumps": 0,
                                                         "missing_seqs": 0})
        w["clients"] += 1
        w["seq_jumps"] += r["jumps"]
        w["missing_seqs"] += r["missing"]
    for pid, count in gaps_by_pid(gap_lines).items():
        per_worker.setdefault(pid, {"clients": 0, "seq_jumps": 0, "missing_seqs": 0})
        per_worker[pid]["gap_log_lines"] = count
    return {
        "label": label,
        "bus_hwm": hwm if hwm is not None else Settings().bus_hwm,
        "workers": 2,
        "rooms": rooms,
        "clients": clients,
        "says_per_client": per_client,
        "window": window,
        "fanout_members_on_slow_worker": fanout,
        "slow_worker_pid": workers[0] if fanout else None,
        "says_sent": sent,
        "seqs_assigned": seqs_assigned,
        "lost_upstream": sent - seqs_assigned,  # says the hub never sequenced
        "tail": tail,
        "seconds": round(seconds, 2),
        "msgs_per_s": round(seqs_assigned / seconds) if seconds else 0,
        "deliveries_to_checked_clients": sum(r["received"] for r in results),
        "client_missing_seqs": sum(r["missing"] for r in results),
        "client_jumps": sum(r["jumps"] for r in results),
        "client_behind": sum(r["behind"] for r in results),
        "every_client_saw_every_seq": all(
            r["missing"] == 0 and r["behind"] == 0 and r["received"] == seqs_assigned
            for r in results),
        "metrics": {
            "bus_gaps_worker": delta("chat_relay_bus_gaps_total", process="worker"),
            "bus_missing_worker": delta("chat_relay_bus_missing_total", process="worker"),
            "bus_gaps_hub": delta("chat_relay_bus_gaps_total", process="hub"),
            "bus_missing_hub": delta("chat_relay_bus_missing_total", process="hub"),
            "hub_messages": delta("chat_relay_hub_messages_total"),
            "deliveries": delta("chat_relay_deliveries_total"),
            "slow_consumer_cuts": delta("chat_relay_slow_consumer_cuts_total"),
            "totals_since_start": {
                "bus_gaps": metric(after, "chat_relay_bus_gaps_total"),
                "bus_missing": metric(after, "chat_relay_bus_missing_total"),
            },
        },
        "log_gap_lines": len(gap_lines),
        "log_gap_samples": gap_lines[:5],
        "log_gap_lines_during_setup": len(setup_gaps),
        "log_gap_samples_during_setup": setup_gaps[:5],
        "log_slow_consumer_lines": len(cuts),
        "per_worker": per_worker,
        "sinks": sink_stats,
        "clients_detail": results,
    }


def tail_text(tail: dict[str, Any]) -> str:
    if not tail:
        return "-"
    late = tail["bus_missing_after_marker"] - tail["bus_missing_before_marker"]
    return f"{late} bus msgs" if late else "none"


def table(runs: list[dict[str, Any]]) -> str:
    head = ("| run | bus_hwm | says sent | seqs | msgs/s | gaps worker (missing) | "
            "gaps hub (missing) | gap log lines | client seq jumps (missing) | dup/reorder | "
            "every client saw every seq | tail loss counted only after a later msg |")
    rows = [head, "|" + "---|" * 12]
    for r in runs:
        m = r["metrics"]
        rows.append(
            f"| {r['label']} | {r['bus_hwm']} | {r['says_sent']:,} | {r['seqs_assigned']:,} | "
            f"{r['msgs_per_s']:,} | {m['bus_gaps_worker']} ({m['bus_missing_worker']}) | "
            f"{m['bus_gaps_hub']} ({m['bus_missing_hub']}) | {r['log_gap_lines']} | "
            f"{r['client_jumps']} ({r['client_missing_seqs']}) | {r['client_behind']} | "
            f"{'yes' if r['every_client_saw_every_seq'] else 'no'} | {tail_text(r['tail'])} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--only", choices=["a", "b"], default=None)
    ap.add_argument("--messages", type=int, default=1_000_000, help="run (a) total says")
    ap.add_argument("--clients", type=int, default=4, help="sender+reader clients (2 workers)")
    ap.add_argument("--window", type=int, default=500,
                    help="own says in flight per client; readers at most 4x this apart")
    ap.add_argument("--hwm", type=int, default=10, help="run (b) --bus-hwm")
    ap.add_argument("--burst", type=int, default=200_000, help="run (b) total says, no window")
    ap.add_argument("--fanout", type=int, default=400,
                    help="run (b) members on the slow worker that read and discard")
    ap.add_argument("--no-control", action="store_true",
                    help="skip run (b)'s control: the same burst at the default HWM")
    ap.add_argument("--deadline", type=float, default=600.0)
    args = ap.parse_args(argv)
    started = machine()
    runs: list[dict[str, Any]] = []
    if args.only in (None, "a"):
        per = args.messages // args.clients
        print(f"(a) default --bus-hwm, {per * args.clients:,} says from {args.clients} "
              f"clients on 2 workers, window {args.window}...", flush=True)
        runs.append(run("a: default hwm", None, [ROOM], args.clients, per, args.window, 0, [],
                        args.deadline))
    if args.only in (None, "b"):
        per = args.burst // args.clients
        print(f"(b) --bus-hwm {args.hwm}, burst of {per * args.clients:,} says, "
              f"{args.fanout} read-and-discard members on one worker...", flush=True)
        runs.append(run(f"b: hwm {args.hwm}, burst, fan-out {args.fanout}", args.hwm,
                        [ROOM, ROOM + "2"], args.clients, per, 0, args.fanout,
                        ["--max-outbox", str(256 * 1024 * 1024)], min(args.deadline, 300)))
        if not args.no_control:
            print("(b control) the same burst and fan-out at the default --bus-hwm...", flush=True)
            runs.append(run(f"b control: default hwm, burst, fan-out {args.fanout}", None,
                            [ROOM, ROOM + "2"], args.clients, per, 0, args.fanout,
                            ["--max-outbox", str(256 * 1024 * 1024)], min(args.deadline, 300)))
    result = {"benchmark": "bus_gaps", "machine_start": started, "machine_end": machine(),
              "runs": runs, "note": NOTE}
    path = save("bus-gaps", result)
    print(table(runs))
    end = machine()["loadavg"]
    print(f"load average at start {started['loadavg']}, at end {end}"
          f" ({started['cpus']} CPUs shared with other jobs; clients and relay share them)")
    print(NOTE)
    print(f"saved {path.relative_to(ROOT)}")
    return 0


NOTE = """\
Where drops happen: a worker's XSUB receives with RCVHWM, the hub's XPUB sends with
SNDHWM; when a worker's bus thread falls behind, its RCVHWM pipe fills, then the ipc
socket buffers, then the hub's XPUB pipe to that worker, and XPUB drops what no longer
fits for that subscriber only (it never blocks the hub). A worker's XSUB drops requests
upstream at its SNDHWM the same way (the hub would count those as process="hub").
Run (b) makes the hub publish one bus message per say (says alternate between two rooms,
so no two consecutive items share a topic) and gives one worker a 400-member fan-out;
on this 2-CPU box both workers' bus threads fall behind the hub during the burst, so
both count gaps. The control run differs only in --bus-hwm. A burst's tail that is
dropped shows as a jump only when a later message on that topic arrives: the run sends
one marker per room after the burst and counts what that revealed."""


if __name__ == "__main__":
    sys.exit(main())
