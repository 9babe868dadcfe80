"""`--config FILE`: every field has a key, flags win, typos are errors that name the key."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import _settings, build_parser
from relay.config import Settings
from relay.configfile import ConfigError, field_types, load
from tests.relayproc import ROOT, RelayProcess
from tests.wire import NativePeer


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return path


def settings_for(argv: list[str]) -> Settings:
    return _settings(build_parser().parse_args(argv))


def test_every_field_has_a_key(tmp_path: Path) -> None:
    samples = {int: 7, float: 2.5, str: "x", bool: False}
    lines = []
    for name, kind in field_types().items():
        key = name.replace("_", "-") if len(lines) % 2 else name  # both spellings
        value = samples[kind]
        toml = str(value).lower() if kind is bool else repr(value).replace("'", '"')
        lines.append(f"{key} = {toml}")
    values = load(write(tmp_path, "\n".join(lines)))
    assert set(values) == {f.name for f in dataclasses.fields(Settings)}
    for name, kind in field_types().items():
        assert values[name] == samples[kind] and type(values[name]) is kind


def test_unknown_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown keys 'prot', 'wokers'"):
        load(write(tmp_path, "port = 1\nprot = 2\nwokers = 3\n"))


def test_wrong_type_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"port must be int, not str"):
        load(write(tmp_path, 'port = "8081"\n'))
    with pytest.raises(ConfigError, match=r"workers must be int, not bool"):
        load(write(tmp_path, "workers = true\n"))
    with pytest.raises(ConfigError, match=r"not valid TOML"):
        load(write(tmp_path, "port = \n"))
    with pytest.raises(ConfigError, match=r"set the same setting"):
        load(write(tmp_path, "max_text = 1\nmax-text = 2\n"))
    # An int where a float is expected is fine.
    assert load(write(tmp_path, "rate_limit = 5\n")) == {"rate_limit": 5.0}


def test_precedence_defaults_file_env_flags(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'port = 9000\nworkers = 3\npassword = "file"\nhistory = 50\n')
    monkeypatch.delenv("CHAT_RELAY_PASSWORD", raising=False)
    s = settings_for(["start", "--config", str(path), "--port", "9001"])
    assert (s.port, s.workers, s.password, s.history) == (9001, 3, "file", 50)
    assert s.max_text == Settings().max_text
    monkeypatch.setenv("CHAT_RELAY_PASSWORD", "env")
    assert settings_for(["start", "--config", str(path)]).password == "env"
    assert settings_for(["start", "--config", str(path), "--password", "flag"]).password == "flag"


def test_cli_exits_2_on_a_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, "colour = 1\n")
    for cmd in (["start"], ["hub", "--bind", "ipc:///tmp/x"]):
        done = subprocess.run([sys.executable, "-m", "relay", *cmd, "--config", str(path)],
                              cwd=ROOT, text=True, capture_output=True, timeout=30)
        assert done.returncode == 2
        assert "unknown key 'colour'" in done.stderr


def test_relay_runs_from_a_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'max-text = 10\npassword = "sesame"\nrate_limit = 0\n')
    with RelayProcess(workers=1, args=["--config", str(path)]) as relay:
        peer = NativePeer.joined(relay.port, "cfg", password="sesame")
        peer.send({"t": "say", "room": "lobby", "text": "x" * 11})
        peer.expect_error("text_too_long")
