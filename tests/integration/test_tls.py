"""--tls-cert/--tls-key: TLS 1.2+ for every dialect on the one port (certs by trustme)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
import trustme

from tests.conftest import RelayFactory
from tests.relayproc import RelayProcess
from tests.wire import NativePeer, TextPeer


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_relay(relay_factory: RelayFactory, ca: trustme.CA, tmp_path: Path) -> RelayProcess:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    return relay_factory(workers=2, args=["--rate-limit", "0", "--tls-cert", str(cert_file),
                                          "--tls-key", str(key_file)])


def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def test_native_and_text_over_tls_share_a_room(tls_relay: RelayProcess, ca: trustme.CA) -> None:
    ctx = client_ctx(ca)
    a = NativePeer.joined(tls_relay.port, "secure", tls=ctx)
    t = TextPeer(tls_relay.port, tls=ctx)
    t.expect_text("you joined lobby")
    t.send_line("over tls")
    m = a.msgs("lobby", 1)[0]
    assert m["text"] == "over tls"
    big = "y" * 4096
    for _ in range(50):  # many records, both directions, two writer threads
        a.send({"t": "say", "room": "lobby", "text": big})
    assert all(m["text"] == big for m in a.msgs("lobby", 50))
    for _ in range(50):
        t.expect(lambda line: line == f"<secure> {big}")


def test_plaintext_client_on_tls_port_is_told(tls_relay: RelayProcess) -> None:
    t = TextPeer(tls_relay.port)
    t.send_line("hello?")
    t.expect(lambda line: "TLS" in line and line.startswith("* error"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_below_1_2_refused(tls_relay: RelayProcess, ca: trustme.CA) -> None:
    ctx = client_ctx(ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        s = socket.create_connection(("127.0.0.1", tls_relay.port), timeout=5)
        ctx.wrap_socket(s, server_hostname="localhost")


def test_bad_certificate_fails_fast(relay_factory: RelayFactory, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(RuntimeError, match="cannot use TLS certificate"):
        relay_factory(workers=1, args=["--tls-cert", str(bogus)])
