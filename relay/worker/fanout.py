"""Fan-out: a room batch encoded once per (dialect, variant), one send per member per round.

The bus thread hands room batches here; each is encoded once per
(codec, variant) (a text client's variant is whether the room is its
current room), and each member's bytes are gathered until the send round,
which makes one non-blocking send per member. Only the members who wrote a
message in the batch get a custom copy (the native dialect echoes their
`id`; text and IRC skip their own lines). A round hands a member at most a
quarter of --max-outbox; the tail of a bigger batch is carried to the next.

When rounds run (SendRounds, the linger): at once when idle, in held rounds
when busy. Every send round costs one syscall per member with output. Under
load a round to a big room takes milliseconds, and sending each message on
its own round would spend the worker (and every client) on syscalls. So
after a round, output waits up to LINGER_FACTOR times what the recent rounds
took, capped by --max-linger: the worker then spends at most
1/(1 + LINGER_FACTOR) of its time in send rounds, and each member gets more
messages per send. The linger is at least MIN_LINGER (1.5 ms), so a steady
stream of small batches (1,000 msgs/s to 100 members) also goes out about two
messages per send: measured 6.9 -> 6.0 µs of CPU per delivery for +1 ms of
median and ~+1 ms of p99 latency (chat-bench -n 100 -s 10 -r 1000). 2 ms saved
1.2 µs but cost +1.6 ms of median and +2-5 ms of p99; 3 ms saved 1.4 µs.
When the last round was longer ago than the linger, output goes at once, so a
quiet relay adds no latency. A round to more than MID_ROUND_LOOK members looks
at the bus as it goes (busdrain.py): members it has not reached yet get what
came in within the same send. SendRounds is pure logic with no clock of its
own: the caller passes the time.

Why a quarter: at saturation the rounds grow on their own (what arrives
during one round goes in the next), so the linger only has to leave the
worker some time for its readers. A factor of 2 (a third of the time in
send rounds) cost a relay at 1,000 msgs/s to 100 members 0.4 ms of median
and ~3 ms of p99 latency, as every message waited for twice a 0.65 ms round,
and its peak throughput was no higher within the noise (benchmarks: 2.0-2.7M
against 2.7M deliveries/s at N=1000).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from relay.worker.writer import Connection
from transports.codec import ServerCodec

Members = dict[str, dict[int, Connection]]  # room -> conn id -> confirmed local member
OnError = Callable[[str, Exception], None]  # (what, exception): an item left out

LINGER_FACTOR = 0.25
# The least a worker holds output that follows a round closely (seconds), so a
# steady stream of small batches goes out several messages per send.
MIN_LINGER = 0.0015
_SMOOTHING = 0.25  # weight of the newest round in the moving average
# Members a long send round writes between two looks at the bus (busdrain.py):
# about 2 ms of sends on loopback, and a round to fewer members never looks.
MID_ROUND_LOOK = 256


class SendRounds:
    def __init__(self, max_linger: float, factor: float = LINGER_FACTOR,
                 min_linger: float = 0.0) -> None:
        self.max_linger = max_linger
        self.factor = factor
        self.min_linger = min_linger
        self.cost = 0.0  # seconds a recent round took (moving average)
        self.last_end = float("-inf")
        self.due: float | None = None  # when held output must go out

    def linger(self) -> float:
        return min(self.max_linger, max(self.min_linger, self.factor * self.cost))

    def hold(self, now: float, urgent: bool = False) -> bool:
        """New output is ready at `now`: True to hold it until `self.due`.

        `urgent` output (a reader waits on it) goes at once, with anything held.
        """
        if urgent:
            return False
        if self.due is not None:
            return True  # a round is already scheduled; this output joins it
        linger = self.linger()
        if now - self.last_end >= linger:
            return False
        self.due = self.last_end + linger
        return True

    def sent(self, start: float, end: float) -> None:
        """A round ran from `start` to `end`."""
        self.due = None
        self.last_end = end
        self.cost += (end - start - self.cost) * _SMOOTHING


def joined(pending: bytes | list[bytes]) -> bytes:
    return pending if isinstance(pending, bytes) else b"".join(pending)


class Fanout:
    """Output of the bus thread's drain, gathered per client, sent in rounds.

    `members` and `room_seq` are room sync's (roomsync.py): who gets a room's
    batches, and the last msg seq delivered per room (written here).
    """

    def __init__(self, worker_id: str, members: Members, room_seq: dict[str, int],
                 max_outbox: int, max_linger: float, on_error: OnError) -> None:
        self.worker_id = worker_id
        self.members = members
        self.room_seq = room_seq
        self.on_error = on_error
        self.rounds = SendRounds(max_linger, min_linger=MIN_LINGER)
        # Bytes due per client this drain: one chunk, or a list once there are more.
        self.out: dict[Connection, bytes | list[bytes]] = {}
        self.round_budget = max(4096, max_outbox // 4)  # bytes a member gets per round
        self.round_bytes = 0  # of one member's share held in `out` now (at most)
        self.last_round = 0  # members the last send round wrote to
        # Room batches (their tails) waiting for the next round: a hub batch can
        # hold thousands of messages, more than one round may hand a member.
        self.carry: deque[tuple[str, list[list[Any]]]] = deque()
        # What readers wait on (a handshake, a bye barrier, a paged reply): called
        # after the next round.
        self.after_flush: list[Callable[[], None]] = []
        self.delivered = 0  # room items written to members (for metrics)
        # A pause in a long round: sends up what readers queued, takes room batches
        # off the bus; True when it delivered any (BusLoop._mid_round). None: rounds
        # never pause.
        self.mid_round: Callable[[], bool] | None = None

    def emit(self, conn: Connection, data: bytes) -> None:
        """Queue bytes for `conn` until the end of this drain (one send per client)."""
        if data:
            pending = self.out.get(conn)
            if pending is None:
                self.out[conn] = data
            elif isinstance(pending, list):
                pending.append(data)
            else:
                self.out[conn] = [pending, data]

    def take(self, conn: Connection) -> bytes:
        """What is due to `conn` this round, taken out of the round (b"" if nothing)."""
        pending = self.out.pop(conn, None)
        return joined(pending) if pending else b""

    def fan_out(self, room: str, items: list[list[Any]]) -> None:
        """Deliver one room batch, or queue it behind the tail of an earlier one."""
        if self.carry:
            self.carry.append((room, items))
        else:
            self.fan_out_some(room, items)

    def fan_out_some(self, room: str, items: list[list[Any]]) -> None:
        """Deliver what of a room batch fits this round's byte budget; carry the rest.

        Sizes are guessed from the texts (one len() per message, not per member).
        """
        left = self.round_budget - self.round_bytes
        size = 0
        for n, item in enumerate(items):
            size += len(item[0].get("text") or "") + 64
            if size > left and n:
                self.carry.appendleft((room, items[n:]))
                items = items[:n]
                break
        self.deliver(room, items)

    def take_carried(self) -> bool:
        """Fan out carried tails while the round has room; True when all went."""
        carry = self.carry
        while carry and self.round_bytes < self.round_budget:
            room, items = carry.popleft()
            self.fan_out_some(room, items)
        return not carry and self.round_bytes < self.round_budget

    def _authored(self, items: list[list[Any]]) -> dict[int, list[int]]:
        """Which items each local author sees its own way: conn id -> indexes."""
        authored: dict[int, list[int]] = {}
        me = self.worker_id
        for idx, item in enumerate(items):
            if item[1] == me and item[2] is not None:
                authored.setdefault(item[2], []).append(idx)
            elif type(item[1]) is list:  # a presence_batch: each author sees it its own way
                for worker, conn_id in item[1]:
                    if worker == me:
                        own = authored.setdefault(conn_id, [])
                        if not own or own[-1] != idx:  # a rename after a join: once
                            own.append(idx)
        return authored

    def deliver(self, room: str, items: list[list[Any]]) -> None:
        """Deliver room items: encode once per (dialect, variant), send once per member."""
        for body, _w, _c, _id in items:
            if body.get("t") == "msg":
                self.room_seq[room] = body["seq"]
        members = self.members.get(room)
        if not members:
            return
        authored = self._authored(items)
        cache: dict[tuple[type[ServerCodec], Hashable], tuple[list[bytes], bytes]] = {}
        out = self.out
        # The per-member loop is the relay's hottest code: one dict lookup for
        # the encoding, one for the outgoing bytes, nothing else in the common case.
        for conn in members.values():
            key = conn.fan_key
            if key is None:
                codec = conn.codec
                key = (type(codec), codec.fanout_key(room))
                if codec.fixed_fanout_key:
                    conn.fan_key = key
            encoded = cache.get(key)
            if encoded is None:
                try:
                    chunks = [key[0].encode_fanout(item[0], key[1]) for item in items]
                except Exception:
                    chunks = self._encode_each(key, items)
                encoded = cache[key] = (chunks, b"".join(chunks))
            if authored and conn.id in authored:
                chunks = list(encoded[0])
                for idx in authored[conn.id]:
                    try:
                        chunks[idx] = conn.codec.encode_own(items[idx][0], items[idx][3])
                    except Exception as exc:  # the author sees it as everyone does
                        self.on_error(f"own copy of a {room} item", exc)
                data = b"".join(chunks)
            else:
                data = encoded[1]
            if not data:
                continue
            pending = out.get(conn)
            if pending is None:
                out[conn] = data
            elif isinstance(pending, list):
                pending.append(data)
            else:
                out[conn] = [pending, data]
        self.delivered += len(members) * len(items)
        if cache:
            self.round_bytes += max(len(e[1]) for e in cache.values())

    def _encode_each(self, key: tuple[type[ServerCodec], Hashable], items: list[list[Any]]
                     ) -> list[bytes]:
        """A room batch one dialect could not encode: item by item, so only the
        item that raises is left out (logged), never the batch."""
        chunks = []
        for item in items:
            try:
                chunks.append(key[0].encode_fanout(item[0], key[1]))
            except Exception as exc:
                self.on_error(f"{item[0].get('t')} item for {key[0].name} members", exc)
                chunks.append(b"")
        return chunks

    # Send rounds ---------------------------------------------------------------------

    def flush_full_or_soon(self) -> None:
        """A round that reached its byte budget goes at once (it cannot grow)."""
        if self.round_bytes >= self.round_budget:
            self.flush()
        else:
            self.flush_soon()

    def flush_soon(self) -> None:
        """Send what this drain produced now, or hold it while the worker is busy
        (the linger). A reader waiting on a handshake or a bye never waits."""
        if not self.rounds.hold(time.monotonic(), urgent=bool(self.after_flush)):
            self.flush()

    def flush(self) -> None:
        """One send round: every client gets its share of the held output in one send."""
        out, self.out = self.out, {}
        self.round_bytes = 0
        # Readers waiting on a handshake or a bye barrier go on only once what
        # came before it is on its way (an error about a later frame must not overtake a welcome).
        waiting, self.after_flush = self.after_flush, []
        t0 = time.monotonic()
        members = len(out)
        if members > MID_ROUND_LOOK and self.mid_round is not None:
            self._long_round(out)
        else:
            for conn, pending in out.items():
                conn.send(joined(pending))
        if members:
            self.last_round = members
            end = time.monotonic()
            self.rounds.sent(t0, end)
            if self.out:  # what a look took in for members already written: next round
                self.rounds.hold(end)
        else:
            self.rounds.due = None
        for go_on in waiting:
            go_on()

    def _long_round(self, out: dict[Connection, bytes | list[bytes]]) -> None:
        """A round to many members, with a look at the bus every MID_ROUND_LOOK
        members: a member not written yet gets what came in, after its share,
        in this round's send (busdrain.py says why)."""
        assert self.mid_round is not None
        order = list(out)
        for start in range(0, len(order), MID_ROUND_LOOK):
            for conn in order[start:start + MID_ROUND_LOOK]:
                conn.send(joined(out.pop(conn)))
            if out and self.mid_round():
                new = self.out
                for conn in [c for c in new if c in out]:
                    out[conn] = [joined(out[conn]), joined(new.pop(conn))]
