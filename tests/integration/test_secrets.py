"""Secrets: no password in any argv of the relay's process tree (argv is public
on the host), none in a child's environment, history files 0600, and a warning
for a config file that holds a password where others can read it."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from relay.cli import _settings, build_parser
from relay.config import SECRET_ENV, Settings
from relay.configfile import exposure
from relay.hub.historydb import HistoryStore, _create_private
from tests.relayproc import RelayProcess
from tests.wire import NativePeer

PASSWORD = "pw-Zq8xT1mv"
OPER = "op-Hk3rW9ya"


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tree(relay: RelayProcess) -> list[psutil.Process]:
    return [psutil.Process(relay.pid), *relay.children()]


# Settings through an fd -------------------------------------------------------


def test_settings_cross_an_fd_whole_and_the_hub_copy_has_no_secrets() -> None:
    s = Settings(password=PASSWORD, oper_password=OPER, tls_cert="x" * 200_000)
    fd = s.write_fd()  # larger than a pipe buffer: must not block
    assert Settings.read_fd(fd) == s
    with pytest.raises(OSError):
        os.fstat(fd)  # read_fd closed it
    hub = s.without_secrets()
    assert (hub.password, hub.oper_password) == ("", "")
    assert hub.tls_cert == s.tls_cert
    assert PASSWORD not in repr(s) and OPER not in repr(s)


def test_secret_env_variables_set_both_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_RELAY_PASSWORD", PASSWORD)
    monkeypatch.setenv("CHAT_RELAY_OPER_PASSWORD", OPER)
    s = _settings(build_parser().parse_args(["start"]))
    assert (s.password, s.oper_password) == (PASSWORD, OPER)
    s = _settings(build_parser().parse_args(["start", "--oper-password", "flag"]))
    assert s.oper_password == "flag"  # a flag still wins


# The process tree ----------------------------------------------------------------


def write_config(path: Path, file_mode: int, db: Path) -> Path:
    path.write_text(f'password = "{PASSWORD}"\noper_password = "{OPER}"\n'
                    f'history_db = "{db}"\n')
    path.chmod(file_mode)
    return path


@pytest.mark.parametrize("source", ["env", "config-0600", "config-0644", "flags"])
def test_no_password_in_any_argv_nor_in_a_childs_environment(
        source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "history.db"
    if source == "env":
        monkeypatch.setenv("CHAT_RELAY_PASSWORD", PASSWORD)
        monkeypatch.setenv("CHAT_RELAY_OPER_PASSWORD", OPER)
        args = ["--history-db", str(db)]
    elif source == "flags":  # the user's own choice for the supervisor; never its children's
        args = ["--history-db", str(db), "--password", PASSWORD, "--oper-password", OPER]
    else:
        for env in SECRET_ENV:
            monkeypatch.delenv(env, raising=False)
        file_mode = 0o600 if source == "config-0600" else 0o644
        args = ["--config", str(write_config(tmp_path / "relay.toml", file_mode, db))]
    with umask(0o022), RelayProcess(workers=2, args=args) as relay:
        # The workers got the passwords: a wrong one is refused, the right ones work.
        bad = NativePeer(relay.port)
        bad.send({"t": "hello", "v": 1, "nick": "eve", "password": "guess"})
        assert bad.expect_error("auth_failed")["ref"] == "hello"
        op = NativePeer.joined(relay.port, "op", password=PASSWORD)
        op.send({"t": "oper", "password": OPER})
        op.expect(lambda b: b == {"t": "notice", "text": "you are an operator"})
        op.send({"t": "say", "room": "lobby", "text": "kept on disk"})
        op.expect(lambda b: b.get("t") == "msg")

        procs = tree(relay)
        roles = [" ".join(p.cmdline()[3:4]) for p in procs]
        assert sorted(roles) == ["_hub", "_worker", "_worker", "start"], roles
        for proc in procs if source != "flags" else procs[1:]:
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            assert PASSWORD.encode() not in cmdline and OPER.encode() not in cmdline, cmdline
        for proc in procs[1:]:  # the supervisor's own environment is the user's
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
            assert PASSWORD.encode() not in environ and OPER.encode() not in environ
        files = sorted(tmp_path.glob("history.db*"))
        assert [f.name for f in files] == ["history.db", "history.db-wal"]
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        op.close()
        bad.close()
    warned = "can read it" in "".join(relay.output)
    assert warned == (source == "config-0644"), relay.output


# Config file modes ------------------------------------------------------------------


def test_a_readable_config_file_with_a_password_is_warned_about(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "relay.toml", 0o644, tmp_path / "h.db")
    values = {"password": PASSWORD, "oper_password": OPER}
    warning = exposure(path, values)
    assert "password and oper_password" in warning and "its group and every local user" in warning
    assert "mode 0644" in warning and f"chmod 600 {path}" in warning
    path.chmod(0o640)
    assert "its group can read" in exposure(path, values)
    path.chmod(0o600)
    assert exposure(path, values) == ""
    path.chmod(0o644)
    assert exposure(path, {"password": ""}) == ""  # no secret in it: nothing to warn about
    assert exposure(path, {"max_text": 10}) == ""
    _settings(build_parser().parse_args(["start", "--config", str(path)]))
    assert "chat-relay: warning:" in capsys.readouterr().err


# History files -------------------------------------------------------------------------


def test_history_db_and_its_wal_are_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    with umask(0o022):
        store = HistoryStore.open(str(db))
        store.stage({"t": "msg", "room": "r", "seq": 1, "ts": 1, "from": "a", "text": "x"})
        store.commit()
        files = sorted(tmp_path.iterdir())
        assert [f.name for f in files] == ["h.db", "h.db-wal"]
        assert all(mode(f) == 0o600 for f in files), [oct(mode(f)) for f in files]
        store.close()


def test_sqlite_gives_wal_and_shm_the_mode_of_the_db_we_created(tmp_path: Path) -> None:
    """The hub's exclusive locking makes no -shm; SQLite's rule covers it all the same."""
    db = tmp_path / "plain.db"
    with umask(0o022):
        _create_private(str(db))
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        modes = {f.name: mode(f) for f in tmp_path.iterdir()}
        conn.close()
    assert modes == {"plain.db": 0o600, "plain.db-wal": 0o600, "plain.db-shm": 0o600}


def test_an_existing_history_db_keeps_its_mode(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    HistoryStore.open(str(db)).close()
    db.chmod(0o640)
    HistoryStore.open(str(db)).close()
    assert mode(db) == 0o640
