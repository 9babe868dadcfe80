"""Redis memory per room at the history budget (--history msgs per room's stream).

Fills ROOMS rooms of a redis-server we start with HISTORY msgs each through
the engine's own SEQUENCE script (the exact keys and stream entries a relay
writes: seq, epoch, capped stream), texts of SIZE bytes, in batches of 100
msgs per script call, then reads used_memory and MEMORY USAGE of one
stream, and the redis-server's CPU seconds spent filling (psutil).

    python -m benchmarks.experiments.redis_room_memory --rooms 200 --history 1000 --size 100
"""

from __future__ import annotations

import argparse
import time

import psutil
import redis

from benchmarks.experiments.redis_engine import redis_server
from relay.bus.wire import pack
from relay.hub import redis_scripts as lua


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rooms", type=int, default=200)
    ap.add_argument("--history", type=int, default=1000)
    ap.add_argument("--size", type=int, default=100)
    args = ap.parse_args()
    with redis_server() as (url, pid):
        r = redis.Redis.from_url(url)
        script = r.register_script(lua.SEQUENCE)
        base = int(r.info("memory")["used_memory"])
        now = time.time_ns() // 1_000_000
        proc = psutil.Process(pid)
        cpu0 = sum(proc.cpu_times()[:2])
        for k in range(args.rooms):
            room = f"room{k}"
            for first in range(0, args.history, 100):
                bodies = [pack({"t": "msg", "room": room, "ts": now, "from": f"user{i % 50}",
                                "text": "x" * args.size}) for i in range(first, first + 100)]
                script(keys=[lua.room_key(room, "seq"), lua.room_key(room, "epoch"),
                             lua.room_key(room, "log")],
                       args=[lua.room_key(room, "ch"), args.history, 0, now, b"", *bodies])
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        used = int(r.info("memory")["used_memory"]) - base
        one = int(r.memory_usage(lua.room_key("room0", "log")) or 0)
        print(f"{args.rooms} rooms x {args.history} msgs of {args.size}-byte text: "
              f"used_memory +{used / 1e6:.1f} MB, {used / args.rooms / 1e3:.0f} kB per room "
              f"({used / args.rooms / args.history:.0f} B per msg); MEMORY USAGE of one "
              f"stream {one / 1e3:.0f} kB; stream length {r.xlen(lua.room_key('room0', 'log'))}"
              f"; redis cpu {cpu:.2f} s to fill ({cpu / args.rooms * 1e3:.1f} ms per room, "
              f"{cpu / args.rooms / args.history * 1e6:.1f} us per msg in batches of 100)")


if __name__ == "__main__":
    main()
