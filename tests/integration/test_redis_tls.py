"""The Redis engine over TLS (`rediss://`, `rediss+cluster://`), against redis-servers
we start with a private CA's certificate and TLS-only ports (stopped by PID).

What an operator gets across machines: two relay hosts sharing a room through a
standalone Redis and through a Redis Cluster whose nodes also talk TLS among
themselves, trusting the CA named in the URL; and one clear line at start
when the certificate is not trusted, instead of a wait that cannot help.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.redisproc import RedisCluster, RedisServer, Tls, free_port
from tests.relayproc import UNIT, RelayProcess
from tests.wire import NativePeer

pytest.importorskip("redis", reason="the redis client (pip install redis) is missing")
pytest.importorskip("trustme", reason="trustme (the test extras) is missing")
pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
    reason="redis-server missing: sh tests/ensure_apt.sh redis redis-server redis-server "
    "(make test does it)")


def _share_a_room(url: str) -> None:
    """Two hosts on `url`: what one says, a member on the other gets, in order."""
    args = ["--engine", url, "--no-mdns", "--rate-limit", "0"]
    with RelayProcess(workers=1, args=args).start() as one, \
            RelayProcess(workers=1, args=args).start() as two:
        alice = NativePeer.joined(one.port, "alice")
        bob = NativePeer.joined(two.port, "bob")
        for i in range(5):
            alice.send({"t": "say", "room": "lobby", "text": f"over tls {i}"})
        got = bob.msgs("lobby", 5)
        assert [m["text"] for m in got] == [f"over tls {i}" for i in range(5)]
        assert [m["seq"] for m in got] == list(range(1, 6))
        alice.close()
        bob.close()


def test_two_hosts_share_a_room_through_rediss(tmp_path: Path) -> None:
    with RedisServer(tls=Tls.make(tmp_path)).start() as srv:
        assert srv.url.startswith("rediss://")
        _share_a_room(srv.url)


def test_two_hosts_share_a_room_through_a_tls_cluster(tmp_path: Path) -> None:
    # Three primaries, no replicas: what is tested here is TLS, not failover.
    with RedisCluster(tmp_path, nodes=3, replicas=0, tls=Tls.make(tmp_path)).start() as nodes:
        assert nodes.url.startswith("rediss+cluster://")
        _share_a_room(nodes.url)


def test_an_untrusted_certificate_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    """Without the CA the certificate cannot be verified: start says so at once
    (retrying cannot help) and names the URL option that fixes it."""
    with RedisServer(tls=Tls.make(tmp_path)).start() as srv:
        url = srv.url.partition("?")[0]
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "relay.cli", "start", "--engine", url, "--port",
             str(free_port()), "--host", "127.0.0.1", "--no-mdns"],
            capture_output=True, text=True, timeout=30 * UNIT, env=dict(os.environ))
        assert proc.returncode == 1, proc.stderr
        assert "certificate verify failed" in proc.stderr
        assert "add ?ssl_ca_certs=/path/to/ca.pem to the URL" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert time.monotonic() - t0 < 5 * UNIT  # not the 5 s a Redis still starting gets


@pytest.mark.parametrize(("url", "problem"), [
    ("rediss+cluster://127.0.0.1:7000?ssl_ca_certs=/ca.pem", ""),
    ("redis+cluster://127.0.0.1:7000?ssl_ca_certs=/ca.pem", "ssl_* options need rediss+cluster://"),
    ("rediss+cluster://127.0.0.1:7000?db=2", "unknown option 'db'"),
    ("rediss+cluster://127.0.0.1:7000/3", "a cluster has only database 0"),
])
def test_cluster_urls_take_only_the_tls_options(url: str, problem: str) -> None:
    from relay.hub.redis_link import check_url

    said = check_url(url)
    assert (problem in said) if problem else said == "", said
