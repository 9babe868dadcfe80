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


def test_units_exist() -> None:
    names = {u.name for u in UNITS}
    assert {"chat-relay.service", "chat-relay-redis.service"} <= names


@pytest.mark.parametrize("unit", [u for u in UNITS if u.name.startswith("chat-relay.")],
                         ids=lambda u: u.name)
def test_relay_unit_flags_exist_and_parse(unit: Path) -> None:
    args = _relay_args(unit)
    help_text = _start_help()
    for flag in (a for a in args if a.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), flag
    settings = _settings(build_parser().parse_args(["start", *args]))
    assert settings.engine.startswith("redis://") and not settings.mdns
    joined = " ".join(args)
    assert "--engine redis://" in joined and "@" not in joined  # no password in argv
    assert "CHAT_RELAY_ENGINE_PASSWORD" in (ROOT / "deploy" / "engine.env.example").read_text()


def _start_help() -> str:
    done = subprocess.run([sys.executable, "-m", "relay", "start", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_redis_conf_never_evicts_and_persists() -> None:
    conf = dict(line.split(None, 1) for line in
                (ROOT / "deploy" / "redis" / "chat-relay.conf").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    assert conf["maxmemory-policy"].strip() == "noeviction"  # an evicted seq = a new epoch
    assert conf["appendonly"].strip() == "yes"


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
