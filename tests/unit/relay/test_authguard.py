"""Password guessing, counted by the hub (relay/hub/authguard.py), and the sniffer's
TLS and binary checks (transports/sniff.py): pure, no sockets."""

from __future__ import annotations

import logging

import pytest

from relay.bus.wire import ANNOUNCE, worker_topic
from relay.hub.authguard import AuthGuard
from relay.hub.state import HubState, Out
from transports.sniff import looks_like_text, sniff
from transports.validate import auth_key

T0 = 1_000_000


def test_auth_key_ipv4_ipv6_per_64_and_mapped() -> None:
    assert auth_key("10.0.0.7") == "10.0.0.7"
    assert auth_key("::ffff:10.0.0.7") == "10.0.0.7"
    assert auth_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert auth_key("[2001:db8:1:2:ffff:ffff:ffff:ffff]") == "2001:db8:1:2::/64"
    assert auth_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert auth_key("fe80::1%eth0") == "fe80::/64"
    assert auth_key("::1") == "::/64"
    assert auth_key("not an ip") is None


def test_five_failures_within_the_window_block_for_block_ms() -> None:
    g = AuthGuard(failures=5, window_ms=60_000, block_ms=30_000)
    for i in range(4):
        assert g.fail("10.0.0.1", T0 + i) is None
    assert g.blocked_until("10.0.0.1", T0 + 4) == 0
    assert g.fail("10.0.0.1", T0 + 4) == ("10.0.0.1", T0 + 4 + 30_000)
    assert g.blocks(T0 + 5) == {"10.0.0.1": T0 + 30_004}
    assert g.fail("10.0.0.1", T0 + 6) is None  # while blocked: not counted again
    assert g.blocked_until("10.0.0.1", T0 + 30_003) == T0 + 30_004
    assert g.blocked_until("10.0.0.1", T0 + 30_004) == 0  # over at `until`
    assert g.blocks(T0 + 30_004) == {}
    assert g.blocked_until("10.0.0.2", T0) == 0


def test_failures_older_than_the_window_do_not_count() -> None:
    g = AuthGuard(failures=3, window_ms=1000, block_ms=1000)
    assert g.fail("10.0.0.1", T0) is None
    assert g.fail("10.0.0.1", T0 + 500) is None
    assert g.fail("10.0.0.1", T0 + 1000) is None  # the first is out of the window now
    assert g.fail("10.0.0.1", T0 + 1400) == ("10.0.0.1", T0 + 2400)


def test_ipv6_counts_per_64() -> None:
    g = AuthGuard(failures=5)
    for i in range(4):
        assert g.fail(f"2001:db8:1:2::{i + 1:x}", T0) is None
    assert g.fail("2001:db8:1:3::1", T0) is None  # another /64: its own count
    assert g.fail("2001:db8:1:2:ffff::9", T0) == ("2001:db8:1:2::/64", T0 + 60_000)
    assert set(g.blocks(T0)) == {"2001:db8:1:2::/64"}


def test_failure_table_bounded_at_max_entries_least_recent_forgotten() -> None:
    g = AuthGuard(failures=2, max_entries=3)
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        g.fail(ip, T0)
    assert len(g) == 3  # at the bound: all kept
    g.fail("10.0.0.1", T0 + 1)  # second failure of .1: blocked, leaves the failure table
    assert len(g) == 2 and g.blocked_until("10.0.0.1", T0 + 2)
    g.fail("10.0.0.1", T0 + 2)
    g.fail("10.0.0.4", T0 + 2)
    g.fail("10.0.0.5", T0 + 2)  # one over: .2, the least recent, is forgotten
    assert len(g) == 3
    assert g.fail("10.0.0.2", T0 + 3) is None  # counting from one again
    assert g.fail("10.0.0.3", T0 + 3) is None  # .3 was forgotten in its turn
    assert g.fail("10.0.0.5", T0 + 3) == ("10.0.0.5", T0 + 60_003)


def test_block_table_bounded_first_to_end_dropped() -> None:
    g = AuthGuard(failures=1, max_entries=2)
    g.fail("10.0.0.1", T0)
    g.fail("10.0.0.2", T0 + 1)
    assert len(g.blocks(T0 + 2)) == 2
    g.fail("10.0.0.3", T0 + 2)
    assert set(g.blocks(T0 + 3)) == {"10.0.0.2", "10.0.0.3"}


def test_one_warning_per_block_not_per_failure(caplog: pytest.LogCaptureFixture) -> None:
    g = AuthGuard(failures=5)
    with caplog.at_level(logging.INFO, logger="chat_relay.hub"):
        items = [g.on_fail({"op": "auth_fail", "ip": "10.0.0.9"}, T0 + i) for i in range(12)]
    assert [i for i in items if i] == [{"t": "_block", "key": "10.0.0.9", "until": T0 + 60_004}]
    assert len(caplog.records) == 1
    assert caplog.records[0].levelno == logging.WARNING
    assert "blocking 10.0.0.9" in caplog.messages[0]


def test_hub_op_announces_a_block_and_tells_late_workers() -> None:
    state = HubState(epoch=1, clock=lambda: T0, auth=AuthGuard(failures=2))
    out: Out = []
    state.handle("A", {"op": "hb", "hello": True}, out, 0.0)
    state.handle("A", {"op": "auth_fail", "ip": "10.0.0.9"}, out, 0.0)
    assert not [i for t, i in out if t == ANNOUNCE]
    state.handle("A", {"op": "auth_fail", "ip": "::ffff:10.0.0.9"}, out, 0.0)
    assert [i for t, i in out if t == ANNOUNCE] == [
        {"t": "_block", "key": "10.0.0.9", "until": T0 + 60_000}]
    late: Out = []
    state.handle("B", {"op": "hb", "hello": True}, late, 0.0)
    bans = [i[1] for t, i in late if t == worker_topic("B") and i[1]["t"] == "_bans"]
    assert bans == [{"t": "_bans", "ips": {}, "blocks": {"10.0.0.9": T0 + 60_000}}]


# Sniffing: TLS on a plain port, binary first bytes ---------------------------

CLIENT_HELLO = bytes.fromhex("160301020001") + b"\x00" * 8


def test_tls_client_hello_is_named_tls() -> None:
    assert sniff(b"\x16") is None  # one more byte decides
    assert sniff(b"\x16\x03") == "tls"
    assert sniff(CLIENT_HELLO) == "tls"
    assert sniff(b"\x16a") == "text"


@pytest.mark.parametrize("data", [b"hello\n", "\u00e9t\u00e9\n".encode(), b"h\xc3",
                                  b"\tx\r\n", b"\x1b[A", b"\xff\xfb\x01\xff\xfd\x03hi\n", b""])
def test_text_first_bytes(data: bytes) -> None:
    assert looks_like_text(data)


@pytest.mark.parametrize("data", [b"\x01\x02\x03", b"hi\x00there", b"\xc3(", b"\x80abc",
                                  b"ok\xfe\xfe\x00", CLIENT_HELLO, b"\x7fELF\x02\x01\x01\x00"])
def test_binary_first_bytes(data: bytes) -> None:
    assert not looks_like_text(data)
