"""--metrics: one Prometheus endpoint for the supervisor, the hub and every worker."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.metrics import parse_address
from tests.conftest import RelayFactory
from tests.relayproc import UNIT, RelayProcess
from tests.wire import NativePeer, TextPeer
from transports.native import frame

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
URL = re.compile(r"metrics on (http://\S+)")


def metrics_url(relay: RelayProcess) -> str:
    deadline = time.monotonic() + 5 * UNIT
    while time.monotonic() < deadline:
        for line in relay.output:
            m = URL.search(line)
            if m:
                return m.group(1)
        time.sleep(0.02)
    raise AssertionError("no metrics line in:\n" + "".join(relay.output))


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5 * UNIT) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_metrics(url: str, check: Callable[[Samples], bool], timeout: float = 10.0) -> Samples:
    """Scrape until `check` holds (values move at the processes' 0.5 s heartbeat)."""
    deadline = time.monotonic() + timeout * UNIT
    samples = scrape(url)
    while not check(samples):
        if time.monotonic() > deadline:
            shown = {k[0] + str(dict(k[1])): v for k, v in samples.items() if v}
            raise AssertionError(f"metrics never matched; last non-zero: {shown}")
        time.sleep(0.1)
        samples = scrape(url)
    return samples


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert parse_address(":0") == ("127.0.0.1", 0)
    assert parse_address("[::1]:9108") == ("::1", 9108)
    for bad in ("9108", "host:", "host:x", "host:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_metrics_move_with_traffic(relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=2, args=[
        "--metrics", "127.0.0.1:0", "--rate-limit", "20", "--rate-burst", "30",
        "--max-outbox", "16384", "--sndbuf", "4096"])
    url = metrics_url(relay)
    base = wait_metrics(url, lambda s: value(s, "chat_relay_workers") == 2)
    assert value(base, "chat_relay_connections", dialect="native") == 0
    workers = {dict(k[1])["worker"] for k in base if k[0] == "chat_relay_worker_queue_depth"}
    assert len(workers) == 2

    # Connections by dialect, across both workers.
    peers = [NativePeer.joined(relay.port, f"m{i}") for i in range(3)]
    text = TextPeer(relay.port)
    text.expect_text("welcome")
    wait_metrics(url, lambda s: value(s, "chat_relay_connections", dialect="native") == 3
                 and value(s, "chat_relay_connections", dialect="text") == 1
                 and value(s, "chat_relay_hub_clients") == 4)

    # Messages in, sequenced by the hub, delivered to 4 members each.
    for i in range(12):
        peers[i % 3].send({"t": "say", "room": "lobby", "text": f"hello {i}"})
    for p in peers:
        p.msgs("lobby", 12)
    wait_metrics(url, lambda s: value(s, "chat_relay_messages_in_total") == 12
                 and value(s, "chat_relay_hub_messages_total") == 12
                 and value(s, "chat_relay_deliveries_total") >= 12 * 4)

    # Rate-limit hits.
    for i in range(60):
        peers[0].send({"t": "say", "room": "lobby", "text": f"flood {i}"})
    peers[0].expect_error("rate_limited")
    wait_metrics(url, lambda s: value(s, "chat_relay_rate_limited_total") > 0)

    # A slow consumer: a raw native client in its own room that never reads.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", relay.port))
    slow.sendall(frame({"t": "hello", "v": 1, "nick": "sloth", "rooms": ["slow"]}))
    sender = NativePeer.joined(relay.port, "pusher", ["slow"])
    sender.expect(lambda b: b.get("t") == "presence" and b.get("nick") == "pusher")
    # The sender reads each echo, so only the sloth falls behind; its hello
    # spent one of the burst's 30 tokens.
    for i in range(29):
        sender.send({"t": "say", "room": "slow", "text": f"{i:04d}" + "x" * 3900})
        sender.msgs("slow", 1)
    wait_metrics(url, lambda s: value(s, "chat_relay_slow_consumer_cuts_total") >= 1)
    slow.close()

    # Closing connections lowers the gauge.
    for p in peers:
        p.close()
    text.close()
    sender.close()
    wait_metrics(url, lambda s: value(s, "chat_relay_connections", dialect="native") == 0
                 and value(s, "chat_relay_connections", dialect="text") == 0
                 and value(s, "chat_relay_hub_clients") == 0)


def test_dead_worker_is_retired_and_counted(relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=2, args=["--metrics", "127.0.0.1:0", "--rate-limit", "0"])
    url = metrics_url(relay)
    a = NativePeer.joined(relay.port, "before")
    a.send({"t": "say", "room": "lobby", "text": "counted"})
    a.msgs("lobby", 1)
    wait_metrics(url, lambda s: value(s, "chat_relay_messages_in_total") == 1)
    victim = relay.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    s = wait_metrics(url, lambda s: value(s, "chat_relay_restarts_total", role="worker") == 1
                     and value(s, "chat_relay_workers") == 2
                     and len([k for k in s if k[0] == "chat_relay_worker_queue_depth"]) == 2)
    # The dead worker's counters still count; its gauges are gone.
    assert value(s, "chat_relay_messages_in_total") == 1
    a.close()
