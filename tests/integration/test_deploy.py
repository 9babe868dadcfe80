"""deploy/: the systemd units and Redis config of the three-host recipe hold together.

No systemd runs here, so the units are checked the ways that can fail: every
flag of every `chat-relay` ExecStart exists in `chat-relay start --help` and
parses into Settings, the password never sits in argv, and, where
systemd-analyze is installed, `systemd-analyze verify` accepts each unit
(with ExecStart pointed at this checkout's interpreter, since
/opt/chat-relay does not exist on a test machine).
"""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relay.cli import _settings, build_parser

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def _relay_args(path: Path) -> list[str]:
    argv = shlex.split(_unit(path)["Service"]["ExecStart"])
    assert argv[0].endswith("/chat-relay") and argv[1] == "start", argv
    return argv[2:]


RELAY_UNITS = [u for u in UNITS if "bin/chat-relay start" in u.read_text()]


def test_units_exist() -> None:
    names = {u.name for u in UNITS}
    assert {"chat-relay.service", "chat-relay-redis.service", "chat-relay-cluster.service",
            "chat-relay-redis-node@.service"} <= names
    assert {u.name for u in RELAY_UNITS} == {"chat-relay.service", "chat-relay-cluster.service"}


@pytest.mark.parametrize("unit", RELAY_UNITS, ids=lambda u: u.name)
def test_relay_unit_flags_exist_and_parse(unit: Path) -> None:
    args = _relay_args(unit)
    help_text = _start_help()
    for flag in (a for a in args if a.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), flag
    settings = _settings(build_parser().parse_args(["start", *args]))
    assert settings.engine.startswith(("redis://", "redis+cluster://")) and not settings.mdns
    joined = " ".join(args)
    assert "--engine redis" in joined and "@" not in joined  # no password in argv
    assert "CHAT_RELAY_ENGINE_PASSWORD" in (ROOT / "deploy" / "engine.env.example").read_text()


def _start_help() -> str:
    done = subprocess.run([sys.executable, "-m", "relay", "start", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _conf(name: str) -> dict[str, str]:
    return {k: v.strip() for k, v in (
        line.split(None, 1) for line in (ROOT / "deploy" / "redis" / name).read_text().splitlines()
        if line.strip() and not line.startswith("#"))}


@pytest.mark.parametrize("name", ["chat-relay.conf", "cluster-node.conf"])
def test_redis_conf_never_evicts_and_persists(name: str) -> None:
    conf = _conf(name)
    assert conf["maxmemory-policy"] == "noeviction"  # an evicted seq = a new epoch
    assert conf["appendonly"] == "yes"


def test_cluster_node_conf_makes_a_cluster_whose_replicas_can_sync() -> None:
    conf = _conf("cluster-node.conf")
    assert conf["cluster-enabled"] == "yes"
    assert conf["masterauth"] == conf["requirepass"]  # a replica authenticates to its primary
    assert "port" not in conf  # each node's port comes from its unit instance
    from relay.hub.redis_hosts import LEASE_MS

    # A failover (node timeout, then an election) ends well before a relay host
    # that waits on it loses its lease and is taken for dead.
    assert int(conf["cluster-node-timeout"]) * 2 < LEASE_MS


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    text = unit.read_text()
    text = text.replace("/opt/chat-relay/.venv/bin/chat-relay", shutil.which("true") or "/bin/true")
    text = text.replace("/usr/bin/redis-server", shutil.which("true") or "/bin/true")
    copy = tmp_path / unit.name
    copy.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if unit.name in line and "Documentation" not in line]
    assert not problems, problems


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server missing")
def test_cluster_node_conf_starts_a_cluster_node(tmp_path: Path) -> None:
    """redis-server takes the config with the unit's arguments (on loopback here)."""
    import redis

    from tests.redisproc import cluster_port

    conf = _conf("cluster-node.conf")
    port = cluster_port()
    proc = subprocess.Popen(
        ["redis-server", str(ROOT / "deploy" / "redis" / "cluster-node.conf"), "--port", str(port),
         "--dir", str(tmp_path), "--cluster-config-file", str(tmp_path / "nodes.conf"),
         "--bind", "127.0.0.1", "--daemonize", "no"], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=conf["requirepass"], socket_timeout=1)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                info = client.execute_command("CLUSTER INFO")
                break
            except redis.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "node did not start"
                time.sleep(0.05)
        assert "cluster_state" in info  # a cluster node (no slots yet: state fail)
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
