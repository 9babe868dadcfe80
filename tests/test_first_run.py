"""The first run works as printed (issue 22 item 4): `--help`, `make run ARGS=`,
the banner's commands, and Ctrl-C in chat-client. Waits are deadlines."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from relay.banner import client_command, join_lines
from relay.cli import build_parser
from tests.relayproc import ROOT, UNIT, RelayProcess

HOST = "127.0.0.1"
ENV = {**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm-256color",
       "PYTHONPATH": str(ROOT)}


# --help ---------------------------------------------------------------------


def _help(*argv: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "relay", *argv, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=20 * UNIT,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_help_lists_only_public_subcommands() -> None:
    out = _help()
    assert "_hub" not in out and "_worker" not in out and "SUPPRESS" not in out
    for name in ("start", "hub", "keys"):
        assert re.search(rf"(?m)^\s+{name}\s+\S", out), name


def test_start_help_says_each_default_once() -> None:
    out = _help("start")
    assert "[default: '']" not in out and "==SUPPRESS==" not in out
    flags = re.split(r"(?m)^  (?=--)", out.split("options:", 1)[1])
    for text in flags:
        assert text.count("default") <= 1, text
    port = next(f for f in flags if f.startswith("--port"))
    assert "8081" in port and port.count("8081") == 1
    level = next(f for f in flags if f.startswith("--log-level"))
    assert "[default: INFO]" in level
    # A flag whose default is empty (the feature is off) names no default.
    db = next(f for f in flags if f.startswith("--history-db"))
    assert "default" not in db


def test_hidden_children_still_parse() -> None:
    args = build_parser().parse_args(["_hub", "--bind", "ipc:///x", "--settings-fd", "3"])
    assert args.command == "_hub" and args.settings_fd == 3


# make run ARGS=... --------------------------------------------------------------


def test_make_run_passes_args_through() -> None:
    proc = subprocess.run(["make", "-n", "run", 'ARGS=--rate-limit 0 --port 9000'],
                          cwd=ROOT, capture_output=True, text=True, timeout=20 * UNIT)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last == ".venv/bin/chat-relay start --rate-limit 0 --port 9000"
    plain = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True,
                           timeout=20 * UNIT)
    assert plain.stdout.strip().splitlines()[-1].rstrip() == ".venv/bin/chat-relay start"


def test_bench_advice_names_a_command_that_works() -> None:
    from benchmarks.runner import rate_limit_warning

    advice = rate_limit_warning({"sender: rate_limited": 2}) or ""
    assert "`chat-relay start --rate-limit 0`" in advice
    make = re.search(r"`(make run ARGS=[^`]+)`", advice)
    assert make is not None
    proc = subprocess.run(["make", "-n", *shlex.split(make.group(1))[1:]], cwd=ROOT,
                          capture_output=True, text=True, timeout=20 * UNIT)
    assert proc.stdout.strip().splitlines()[-1].endswith("chat-relay start --rate-limit 0")


# The banner -------------------------------------------------------------------


def _fake_install(root: Path) -> Path:
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "chat-client"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir


def test_banner_names_the_client_as_it_runs_from_here(tmp_path: Path) -> None:
    bin_dir = _fake_install(tmp_path)
    python = str(bin_dir / "python")
    # From the checkout, with .venv/bin not on PATH: a path that runs from here.
    assert client_command(python, str(tmp_path), "/usr/bin:/bin") == ".venv/bin/chat-client"
    # From elsewhere: the absolute path.
    assert client_command(python, "/", "/usr/bin") == str(bin_dir / "chat-client")
    # Installed on PATH (the same file): the plain name.
    assert client_command(python, str(tmp_path), f"/usr/bin:{bin_dir}") == "chat-client"
    # A different chat-client first on PATH is not ours: still the path.
    other = _fake_install(tmp_path / "other")
    assert client_command(python, str(tmp_path), f"{other}:{bin_dir}") == ".venv/bin/chat-client"


def test_banner_names_the_web_page_and_irc() -> None:
    text = "\n".join(join_lines(HOST, 8081, False, "chat-client"))
    assert "chat-client 127.0.0.1 8081" in text and "nc 127.0.0.1 8081" in text
    assert "http://127.0.0.1:8081/" in text and "irssi -c 127.0.0.1 -p 8081" in text
    tls = "\n".join(join_lines("::1", 8443, True, "chat-client"))
    assert "chat-client --tls ::1 8443" in tls and "https://[::1]:8443/" in tls


def test_the_banners_join_command_runs_verbatim() -> None:
    """Copied from the banner, pasted into a shell in the same directory: a welcome."""
    with RelayProcess(workers=1) as relay:
        banner = "".join(relay.output)
        line = re.search(r"join with:\s+(.+)", banner)
        assert line is not None, banner
        command = line.group(1).strip()
        assert command.endswith(f"{HOST} {relay.port}")
        web = re.search(r"web page:\s+(\S+)", banner)
        assert web is not None and web.group(1) == f"http://{HOST}:{relay.port}/"
        proc = subprocess.run(command, shell=True, cwd=ROOT, input="/quit\n",
                              capture_output=True, text=True, timeout=30 * UNIT, env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert "you joined lobby" in proc.stdout


# Ctrl-C in chat-client ----------------------------------------------------------

# stdin a pipe that never ends (pipe mode), the terminal still the pty.
PIPE_LAUNCHER = ("import os, sys; r, w = os.pipe(); os.dup2(r, 0); os.set_inheritable(w, True); "
                 "os.execv(sys.executable, [sys.executable, '-m', 'clients.cli', *sys.argv[1:]])")


def _ctrl_c(child: pexpect.spawn) -> None:
    child.sendintr()
    child.expect(pexpect.EOF, timeout=20 * UNIT)
    child.close()
    assert child.signalstatus is None and child.exitstatus == 0, child.before
    assert "Traceback" not in child.before and "KeyboardInterrupt" not in child.before


@pytest.mark.parametrize("mode", ["terminal", "pipe"])
def test_ctrl_c_leaves_quietly_with_status_0(mode: str) -> None:
    with RelayProcess(workers=1) as relay:
        args = [HOST, str(relay.port), "--nick", "leaver"]
        argv = (["-m", "clients.cli", *args] if mode == "terminal"
                else ["-c", PIPE_LAUNCHER, *args])
        child = pexpect.spawn(sys.executable, argv, env=ENV, cwd=str(ROOT), encoding="utf-8",
                              timeout=20 * UNIT)
        child.expect("you joined lobby")
        _ctrl_c(child)


def test_ctrl_c_while_reconnecting_leaves_quietly() -> None:
    relay = RelayProcess(workers=1).start()
    try:
        child = pexpect.spawn(sys.executable, ["-m", "clients.cli", HOST, str(relay.port)],
                              env=ENV, cwd=str(ROOT), encoding="utf-8", timeout=20 * UNIT)
        child.expect("you joined lobby")
    finally:
        relay.stop()
    child.expect("reconnecting")
    time.sleep(0.2 * UNIT)  # let the backoff start; not a wait for a condition
    _ctrl_c(child)
