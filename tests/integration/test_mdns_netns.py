"""LAN discovery between two "hosts" in network namespaces, never on a real LAN.

    ns a (10.231.0.1): the relays      ns b (10.231.0.2): chat-client, chat-bench
    ns s: a bridge joining both eth0s (multicast floods across it like a switch)

A relay on 0.0.0.0 in a is found by `chat-client --discover` in b; one
started with --no-mdns and one on loopback are not; when the advertised relay
stops, a browser in b hears its goodbye at once (not when the records expire,
minutes later). Needs root and `ip netns`; skipped, loudly, elsewhere.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
import trustme
from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

from tests.hubproc import Proc
from tests.netlab import Lab, ip, lab_of, stopped_after
from tests.relayproc import ROOT, UNIT
from transports.dnssd import SERVICE_TYPE, host_label

pytestmark = pytest.mark.timeout(180)

RELAY = ["--port", "0", "--workers", "1", "--log-level", "WARNING"]
PASSWORD = "lan-secret"


@pytest.fixture
def lab() -> Iterator[Lab]:
    with lab_of(["a", "b"]) as lab:
        yield lab


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    with stopped_after() as started:
        yield started


def relay(lab: Lab, procs: list[Proc], *args: str) -> tuple[Proc, int]:
    proc = Proc(["start", *args, *RELAY], prefix=lab.exec_prefix("a"))
    procs.append(proc)
    port = proc.port(30)
    proc.wait_line(r"stop with Ctrl-C")
    return proc, port


def discover(lab: Lab, module: str = "clients.cli", host: str = "b"
             ) -> subprocess.CompletedProcess[str]:
    """`chat-client --discover` (or chat-bench's) run on `host`."""
    return subprocess.run([*lab.exec_prefix(host), sys.executable, "-m", module, "--discover"],
                          cwd=ROOT, text=True, capture_output=True, stdin=subprocess.DEVNULL,
                          timeout=30 * UNIT)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout * UNIT
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


class Watch(ServiceListener):
    """A browser on host b that notes every relay added and removed."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        with self.lock:
            self.events.append(("add", name))

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        pass

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        with self.lock:
            self.events.append(("remove", name))

    def saw(self, event: str, name: str) -> bool:
        with self.lock:
            return (event, name) in self.events


def test_found_from_another_host_only_when_advertised(lab: Lab, procs: list[Proc]) -> None:
    where = lab.addr(1)
    # Two relays that must stay unseen: loopback-only, and a LAN one told --no-mdns.
    loopback, _ = relay(lab, procs, "--host", "127.0.0.1")
    silent, _ = relay(lab, procs, "--host", "0.0.0.0", "--no-mdns")
    for quiet in (loopback, silent):
        assert "advertising" not in quiet.text()
    shown, port = relay(lab, procs, "--host", "0.0.0.0", "--password", PASSWORD)
    name = f"chat-relay on {host_label(os.uname().nodename)} ({port})"
    shown.wait_line(re.escape(f"advertising on the LAN (mDNS) as '{name}' at {where}"))

    # Registration probes for ~1.7 s after the banner: ask until it answers.
    expected = [f"1) {name}  {where}:{port}  [password]"]
    wait_until(lambda: f"  {where}:{port}  " in discover(lab).stdout, 30,
               "the relay was never found from host b")
    # Every relay has had its time to announce by now: still only the advertised one.
    done = discover(lab)
    assert (done.returncode, done.stdout.splitlines()) == (0, expected), done.stderr
    bench = discover(lab, "benchmarks.cli")
    assert (bench.returncode, bench.stdout.splitlines()) == (0, expected), bench.stderr
    # On the relays' own host, with multicast on loopback, a loopback relay that
    # announced itself would be heard: it is not there either.
    ip("-n", lab.ns("a"), "link", "set", "lo", "multicast", "on")
    same_host = discover(lab, host="a")
    assert (same_host.returncode, same_host.stdout.splitlines()) == (0, expected)

    # On a terminal with no HOST, chat-client joins the only relay it found.
    child = pexpect.spawn(
        "ip", ["netns", "exec", lab.ns("b"), sys.executable, "-m", "clients.cli", "--nick",
               "zed"], cwd=str(ROOT), encoding="utf-8", timeout=15 * UNIT,
        env={**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm-256color",
             "CHAT_RELAY_PASSWORD": PASSWORD}, dimensions=(30, 120))
    try:
        child.expect(re.escape(f"found {name}  {where}:{port}  [password]: joining it"))
        child.expect(re.escape(f"connected to {where}:{port} as zed"))
        child.expect(r"\[lobby\] zed>")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)

    # Stopping says goodbye: a browser on b forgets the relay at once.
    watch = Watch()
    zc: Any = lab.inside("b", Zeroconf)  # its sockets live in b
    try:
        ServiceBrowser(zc, SERVICE_TYPE, watch)
        full = f"{name}.{SERVICE_TYPE}"
        wait_until(lambda: watch.saw("add", full), 10, "the watching browser never saw it")
        stopped_at = time.monotonic()
        assert shown.stop() == 0
        wait_until(lambda: watch.saw("remove", full), 5,
                   "no goodbye: the relay was still listed after it stopped")
        assert time.monotonic() - stopped_at < 5 * UNIT
    finally:
        zc.close()
    # And with the other two still running, nothing is found.
    done = discover(lab)
    assert done.returncode == 1 and done.stdout == ""
    assert "no chat-relay found on the LAN" in done.stderr
    assert "advertising" not in loopback.text() + silent.text()


def test_a_relay_with_no_lan_address_starts_and_serves(lab: Lab, procs: list[Proc]) -> None:
    """0.0.0.0 on a host with nothing but loopback: nothing to announce, nothing fails."""
    lab._add("lonely")
    proc = Proc(["start", "--host", "0.0.0.0", *RELAY], prefix=lab.exec_prefix("lonely"))
    procs.append(proc)
    proc.port(30)
    proc.wait_line(r"stop with Ctrl-C")
    assert "advertising" not in proc.text()
    assert proc.stop() == 0
    assert "Traceback" not in proc.text()


def test_a_zeroconf_failure_is_one_log_line(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    """An address zeroconf cannot use (not on this host): logged once, start() not held up."""
    from relay.discovery import Advertiser, plan

    advert = plan("10.231.0.99", 8081, "0.1.0", tls=False, password=False, dialects=["native"])
    assert advert is not None

    def advertise() -> Advertiser:
        began = time.monotonic()
        ad = Advertiser(advert).start()
        assert time.monotonic() - began < 0.1
        return ad

    with caplog.at_level("WARNING", logger="chat_relay.mdns"):
        ad = lab.inside("b", advertise)
        ad.close()
    assert ad.failed and ad.registered_as is None
    lines = [r.getMessage() for r in caplog.records if r.name == "chat_relay.mdns"]
    assert len(lines) == 1 and "cannot advertise the relay on the LAN" in lines[0], lines


def test_pick_one_of_several_by_number(lab: Lab, procs: list[Proc], tmp_path: Path) -> None:
    """Two relays, one with TLS: the client lists both, asks, and joins the one picked
    (over TLS, because its TXT record says so)."""
    where = lab.addr(1)
    ca = trustme.CA()
    cert = ca.issue_cert(where)
    cert_file, key_file, ca_file = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    _, plain_port = relay(lab, procs, "--host", "0.0.0.0")
    _, tls_port = relay(lab, procs, "--host", "0.0.0.0", "--tls-cert", str(cert_file),
                        "--tls-key", str(key_file))
    label = host_label(os.uname().nodename)
    lines = sorted([f"chat-relay on {label} ({plain_port})  {where}:{plain_port}",
                    f"chat-relay on {label} ({tls_port})  {where}:{tls_port}  [tls]"])
    wait_until(lambda: len(discover(lab).stdout.splitlines()) == 2, 30,
               "the two relays were never both found from host b")
    pick = next(i for i, line in enumerate(lines, start=1) if "[tls]" in line)

    child = pexpect.spawn(
        "ip", ["netns", "exec", lab.ns("b"), sys.executable, "-m", "clients.cli", "--nick",
               "zed"], cwd=str(ROOT), encoding="utf-8", timeout=15 * UNIT,
        # The CA is trusted the system's way, so no --ca (which implies --tls) is given.
        env={**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm-256color",
             "SSL_CERT_FILE": str(ca_file)}, dimensions=(30, 120))
    try:
        for i, line in enumerate(lines, start=1):
            child.expect(re.escape(f"{i}) {line}"))
        child.expect(re.escape("join which relay (1-2)? "))
        child.sendline("9")
        child.expect(re.escape("type a number from 1 to 2"))
        child.expect(re.escape("join which relay (1-2)? "))
        child.sendline(str(pick))
        child.expect(re.escape(f"connected to {where}:{tls_port} as zed"))
        child.expect(r"\[lobby\] zed>")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
