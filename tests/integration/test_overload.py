"""Overload degrades, not collapses (issue 21): pushback on senders, pacing to readers.

A sender that offers more than the relay can fan out must be pushed back
(its reader stops reading), not let the backlog pile up in every member's
outbox until all of them are cut. A member is cut only when it is behind
the others. The logic (relay/worker/pacing.py) is tested without sockets; the
rest against real relay processes, bounded in messages and seconds.
"""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest

from relay.worker.pacing import CreditWindow, FanoutPacer, ReaderWeight
from tests.conftest import RelayFactory
from tests.integration.test_metrics import metrics_url, value, wait_metrics
from tests.relayproc import UNIT, RelayProcess
from tests.wire import NativePeer, Recorder
from transports.native import frame

BLAST_SECONDS = 3.0
BLAST_LIMIT = 12_000  # messages: the readers take ~1.5 MB/s each, so a few seconds of them
TEXT = 200  # bytes of text per message: 16 KiB rounds hold ~70 of them at --max-outbox 64k


# The logic, at its bounds ------------------------------------------------------------


def test_window_is_full_exactly_at_the_bound() -> None:
    credit = CreditWindow(16)
    assert credit.add(15) is not None  # 16 // 8 = 2 sent since the last ask: ask for a receipt
    assert not credit.must_wait(queued=0, weight=0)  # 15 of 16 in flight
    assert credit.must_wait(queued=1, weight=0)  # 16: full
    assert not credit.must_wait(queued=0, weight=0)
    credit.add(1)
    assert credit.inflight == 16 and credit.must_wait(queued=0, weight=0)


def test_heaviest_waits_first_a_light_sender_still_goes() -> None:
    credit = CreditWindow(100)
    credit.add(60)
    assert credit.must_wait(queued=0, weight=5000)  # heavy: needs half the window free
    assert not credit.must_wait(queued=0, weight=1)  # light: one message still fits
    assert credit.must_wait(queued=39, weight=1)


def test_receipts_are_cumulative_so_a_lost_one_costs_nothing() -> None:
    credit = CreditWindow(80)
    first = credit.add(10)
    second = credit.add(10)
    assert first is not None and second is not None and credit.inflight == 20
    assert credit.receipt(second)  # the first receipt was lost on the bus
    assert credit.inflight == 0 and not credit.overdue()
    assert not credit.receipt(first)  # late or duplicate: nothing more to free
    assert credit.add(3) is None and credit.overdue()  # below 80 // 8: asked at the heartbeat
    assert credit.receipt(credit.ask()) and credit.inflight == 0


def test_reader_weight_counts_the_last_two_periods() -> None:
    weight = ReaderWeight()
    weight.add(400, now=10.0)
    weight.add(100, now=10.5)
    assert weight.value(10.9) == 500
    weight.add(7, now=11.2)  # a new period: the last one still counts
    assert weight.value(11.5) == 507
    assert weight.value(12.3) == 7
    assert weight.value(13.3) == 0  # silent for two periods: light again


def test_pacer_pauses_over_half_until_all_under_an_eighth_and_gives_up_at_max_pause(
        ) -> None:
    pacer = FanoutPacer(max_pause=0.5)
    assert not pacer.paused(over_high=0, over_low=3, now=0.0)  # behind a little: go on
    assert pacer.stuck_deadline() is None
    assert pacer.paused(over_high=1, over_low=1, now=1.0)  # one has half the limit queued
    assert pacer.stuck_deadline() == 1.5
    assert not pacer.paused(over_high=0, over_low=1, now=1.2)  # under half: one more round
    assert pacer.paused(over_high=1, over_low=1, now=1.3)  # ... but the episode goes on
    assert pacer.stuck_deadline() == 1.5  # so a slow member cannot pace the room for long
    assert not pacer.paused(over_high=0, over_low=0, now=1.4)  # all caught up: it ends
    assert pacer.stuck_deadline() is None
    assert FanoutPacer.minority(5, 20) and not FanoutPacer.minority(6, 20)


# Real relays ------------------------------------------------------------------------


class Blaster(threading.Thread):
    """Says as fast as its socket takes it for `seconds`, in whole batches of frames.

    A message counts as sent once all of its bytes are in the socket; the time
    spent waiting for the socket to take more is how hard TCP pushed back.
    """

    def __init__(self, peer: NativePeer, seconds: float) -> None:
        super().__init__(daemon=True)
        self.peer = peer
        self.seconds = seconds
        self.sent = 0
        self.blocked = 0.0
        self.longest_block = 0.0

    def run(self) -> None:
        sock = self.peer.sock
        pad = "x" * TEXT
        deadline = time.monotonic() + self.seconds
        pending = b""
        stalled_since: float | None = None
        while pending or (time.monotonic() < deadline and self.sent < BLAST_LIMIT):
            if not pending:
                pending = b"".join(frame({"t": "say", "room": "lobby", "text": f"{i} {pad}"})
                                   for i in range(self.sent, self.sent + 50))
                self.sent += 50
            t0 = time.monotonic()
            try:
                taken = sock.send(pending, socket.MSG_DONTWAIT)
            except (BlockingIOError, TimeoutError):
                taken = 0
            if taken:
                pending = pending[taken:]
                stalled_since = None
                continue
            select.select([], [sock], [], 0.05)
            now = time.monotonic()
            self.blocked += now - t0
            stalled_since = stalled_since or t0
            self.longest_block = max(self.longest_block, now - stalled_since)


class SteadyReader(Recorder):
    """A member that keeps reading, at a steady ~1.5 MB/s: slower than the sender.

    Its receive buffer is fixed (Linux would grow it to 32 MiB on loopback),
    so what the relay cannot send it waits in the relay.
    """

    def __init__(self, peer: NativePeer) -> None:
        super().__init__(peer)
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)

    def run(self) -> None:
        sock = self.peer.sock
        sock.settimeout(0.05)
        while not self.halt.is_set() and not self.peer.closed:
            try:
                data = sock.recv(16384)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                self.peer.closed = True
                break
            for body in self.peer.decoder.feed(data):
                if isinstance(body, dict) and body.get("t") == "msg":
                    self.seqs.append(body["seq"])
                else:
                    self.peer.inbox.append(body)
            self.halt.wait(0.01)


def readers(port: int, count: int) -> list[Recorder]:
    recorders: list[Recorder] = [SteadyReader(NativePeer.joined(port, f"reader{i}"))
                                 for i in range(count)]
    for r in recorders:
        r.start()
    return recorders


def blast(port: int) -> tuple[Blaster, Recorder]:
    sender = NativePeer.joined(port, "blaster")
    sender.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
    echoes = Recorder(sender)  # the sender reads its own echoes, as a client must
    echoes.start()
    blaster = Blaster(sender, BLAST_SECONDS * UNIT)
    blaster.start()
    return blaster, echoes


def cut(peer: NativePeer) -> bool:
    return peer.closed or any(isinstance(b, dict) and b.get("code") == "slow_consumer"
                              for b in peer.inbox)


def assert_every_message_in_order(recorders: list[Recorder], total: int) -> None:
    deadline = time.monotonic() + 60 * UNIT
    for r in recorders:
        while len(r.seqs) < total and not r.peer.closed and time.monotonic() < deadline:
            r.halt.wait(0.01)
        r.stop()
        assert r.seqs == list(range(1, total + 1))
        assert not cut(r.peer), f"{r.peer.nick} was cut"


def stalled(port: int, nick: str) -> socket.socket:
    """A member that never reads: a raw socket with a tiny receive buffer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5 * UNIT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(frame({"t": "hello", "v": 1, "nick": nick, "rooms": ["lobby"]}))
    return sock


def wait_cuts(relay: RelayProcess, count: int) -> None:
    """The relay cut exactly `count` slow consumers (they never read, so reading
    their sockets to see the close would crawl through a 4 KiB TCP window)."""
    wait_metrics(metrics_url(relay),
                 lambda s: value(s, "chat_relay_slow_consumer_cuts_total") == count)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("window", ["2000", "64"])
def test_fast_sender_is_pushed_back_and_20_readers_lose_nothing(
        relay_factory: RelayFactory, window: str) -> None:
    relay = relay_factory(workers=1, args=["--rate-limit", "0", "--max-outbox", "65536",
                                           "--max-inflight", window, "--metrics", "127.0.0.1:0"])
    recorders = readers(relay.port, 20)
    blaster, echoes = blast(relay.port)
    blaster.join()
    total = blaster.sent
    assert_every_message_in_order([*recorders, echoes], total)
    print(f"window {window}: {total} msgs to 21 members; the sender waited "
          f"{blaster.blocked:.2f} s of {BLAST_SECONDS * UNIT:.1f} (longest "
          f"{blaster.longest_block:.2f} s)")
    # Nobody was cut. With the small window the sender is certainly faster than
    # the window lets it be: the relay stopped reading it (a reader waited for
    # credit). With the default window a quiet machine may keep up with the
    # whole blast, and then there is nothing to push back.
    if window == "64":
        wait_metrics(metrics_url(relay), lambda s: value(s, "chat_relay_pushed_back_total") > 0
                     and value(s, "chat_relay_slow_consumer_cuts_total") == 0)
        assert blaster.blocked > 0
    else:
        wait_metrics(metrics_url(relay),
                     lambda s: value(s, "chat_relay_slow_consumer_cuts_total") == 0)


@pytest.mark.timeout(120)
def test_only_the_reader_that_stops_is_cut(relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=1, args=["--rate-limit", "0", "--max-outbox", "65536",
                                           "--metrics", "127.0.0.1:0"])
    recorders = readers(relay.port, 19)
    stopped = stalled(relay.port, "stopped")
    blaster, echoes = blast(relay.port)
    blaster.join()
    assert_every_message_in_order([*recorders, echoes], blaster.sent)
    wait_cuts(relay, 1)
    stopped.close()


@pytest.mark.timeout(120)
def test_a_stopped_majority_holds_the_room_only_for_max_pause(
        relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=1, args=["--rate-limit", "0", "--max-outbox", "65536",
                                           "--max-pause", "0.5", "--metrics", "127.0.0.1:0"])
    live = readers(relay.port, 1)
    stopped = [stalled(relay.port, f"stopped{i}") for i in range(3)]
    blaster, echoes = blast(relay.port)
    blaster.join()
    # Three of five members stopped: fan-out waited for them for 0.5 s, then
    # went on without them, and they were cut; the others got everything.
    assert_every_message_in_order([*live, echoes], blaster.sent)
    wait_cuts(relay, 3)
    for sock in stopped:
        sock.close()
