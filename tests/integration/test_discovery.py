"""LAN discovery without a network: the TXT record, names, addresses, listings, flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clients.discover import NO_HOST_IN_PIPE, Found, choose, listing, pick_address
from relay.cli import _settings, build_parser
from relay.config import Settings
from relay.configfile import load
from relay.discovery import advertised_addresses, is_loopback, plan
from tests.relayproc import ROOT
from transports.dnssd import (
    MAX_DIALECTS,
    MAX_LABEL,
    MAX_VERSION,
    RelayTxt,
    build_txt,
    instance_name,
    parse_txt,
    server_name,
)


def as_wire(txt: dict[str, str]) -> dict[bytes, bytes | None]:
    """A TXT record as zeroconf hands it to a browser."""
    return {k.encode(): v.encode() for k, v in txt.items()}


# The TXT record ----------------------------------------------------------------

def test_txt_round_trip() -> None:
    for tls in (False, True):
        for password in (False, True):
            txt = build_txt("0.1.0", tls, password, ["native", "text", "ws", "irc"])
            assert txt["txtvers"] == "1"
            assert all(len(k) <= 9 for k in txt)  # RFC 6763 6.4: keys of 9 characters or fewer
            assert parse_txt(as_wire(txt)) == RelayTxt("0.1.0", 1, tls, password,
                                                       ("native", "text", "ws", "irc"))
            assert parse_txt(txt) == parse_txt(as_wire(txt))  # zeroconf's decoded form too


def test_txt_from_strangers_never_raises() -> None:
    assert parse_txt({}) == RelayTxt()
    # Keys compare case-insensitively; a key without a value counts as absent; the first wins.
    got = parse_txt({b"TLS": b"YES", b"password": None, b"Proto": b"2", b"tls": b"no"})
    assert (got.tls, got.password, got.proto) == (True, None, 2)
    # Garbage is "unknown", never an exception or a guess.
    got = parse_txt({b"tls": b"maybe", b"password": b"\xff\xfe", b"proto": b"\xd9\xa3",
                     b"version": b"\x1b[31mred", b"\xff": b"x"})
    assert (got.tls, got.password, got.proto) == (None, None, None)
    assert got.version == "\x1b[31mred"  # kept as text; listings print it through clean()
    assert parse_txt({b"proto": b"99999999999999999999"}).proto is None
    # Every string is bounded.
    got = parse_txt({b"version": b"v" * 255, b"dialects": b",".join([b"d" * 20] * 12)})
    assert len(got.version) == MAX_VERSION
    assert len(got.dialects) == MAX_DIALECTS and all(len(d) == 16 for d in got.dialects)
    assert parse_txt({b"dialects": b" native, ,ws,"}).dialects == ("native", "ws")


def test_instance_and_server_names_fit_one_label() -> None:
    assert instance_name("vm", 8081) == "chat-relay on vm (8081)"
    assert instance_name("desk.example.lan", 8081) == "chat-relay on desk (8081)"
    long = instance_name("h" * 300, 65535)
    assert len(long.encode()) == MAX_LABEL and long.endswith(" (65535)")
    odd = instance_name("bäd host_name!", 1)
    assert odd == "chat-relay on b-d-host-name (1)"
    assert server_name("vm", 8081) == "chat-relay-vm-8081.local."
    assert len(server_name("h" * 300, 65535).split(".")[0]) <= MAX_LABEL
    # Two relays with one hostname (two namespaces) never share address records.
    assert server_name("vm", 8081) != server_name("vm", 8082)


# What the relay announces --------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "localhost"])
def test_a_loopback_relay_never_advertises(host: str) -> None:
    assert is_loopback(host)
    assert advertised_addresses(host) == []
    assert plan(host, 8081, "0.1.0", tls=False, password=False, dialects=["native"]) is None


def test_a_relay_on_one_address_advertises_that_address() -> None:
    ad = plan("10.231.0.7", 9000, "0.1.0", tls=True, password=False, dialects=["native", "ws"],
              hostname="box.lan")
    assert ad is not None
    assert (ad.name, ad.server, ad.port, ad.addresses) == (
        "chat-relay on box (9000)", "chat-relay-box-9000.local.", 9000, ("10.231.0.7",))
    assert parse_txt(ad.txt) == RelayTxt("0.1.0", 1, True, False, ("native", "ws"))


def test_wildcard_never_advertises_loopback_or_link_local() -> None:
    for host in ("0.0.0.0", "::"):
        for address in advertised_addresses(host):
            assert not is_loopback(address) and not address.startswith("fe80")


# What the client lists ------------------------------------------------------------

def found(name: str, host: str, port: int = 8081, tls: bool | None = False,
          password: bool | None = False) -> Found:
    return Found(name, host, port, (host,), RelayTxt("0.1.0", 1, tls, password, ("native",)))


def test_listing_numbers_and_tags() -> None:
    lines = listing([found("chat-relay on a (8081)", "10.0.0.2"),
                     found("chat-relay on b (9000)", "10.0.0.3", 9000, tls=True, password=True),
                     found("v6", "fd00::5", 1, tls=None, password=None)])
    assert lines == ["1) chat-relay on a (8081)  10.0.0.2:8081",
                     "2) chat-relay on b (9000)  10.0.0.3:9000  [tls]  [password]",
                     "3) v6  [fd00::5]:1"]


def test_listing_shows_hostile_names_harmlessly() -> None:
    (line,) = listing([found("evil\x1b]0;owned\x07\nname", "10.0.0.2")])
    assert "\x1b" not in line and "\x07" not in line and "\n" not in line
    assert "owned" in line


def test_choose_takes_only_a_listed_number() -> None:
    relays = [found("a", "10.0.0.2"), found("b", "10.0.0.3")]
    assert choose(relays, " 2\n") is relays[1]
    for answer in ("", "0", "3", "-1", "b", "1.0", "١"):
        assert choose(relays, answer) is None


def test_pick_address_prefers_ipv4_and_skips_scoped() -> None:
    assert pick_address(["fd00::5", "10.0.0.2"]) == "10.0.0.2"
    assert pick_address(["fe80::1", "fd00::5"]) == "fd00::5"
    assert pick_address(["fe80::1", "not an address"]) is None


# Flags -----------------------------------------------------------------------------

def test_no_mdns_flag() -> None:
    assert Settings().mdns is True
    assert _settings(build_parser().parse_args(["start"])).mdns is True
    assert _settings(build_parser().parse_args(["start", "--no-mdns"])).mdns is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["start", "--mdns"])  # on is the default: no flag for it


def test_mdns_in_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text("mdns = false\n")
    assert load(str(path)) == {"mdns": False}


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=30)


def test_chat_client_in_a_pipe_needs_a_host() -> None:
    done = run_cli("clients.cli")
    assert done.returncode == 2
    assert NO_HOST_IN_PIPE in done.stderr and "--discover" in done.stderr
    done = run_cli("clients.cli", "10.0.0.2")
    assert done.returncode == 2 and "give PORT after HOST" in done.stderr


def test_chat_bench_needs_a_host_or_discover() -> None:
    done = run_cli("benchmarks.cli")
    assert done.returncode == 2 and "--discover" in done.stderr
