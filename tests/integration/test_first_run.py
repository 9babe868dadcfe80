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
from typing import Any

import pexpect
import pytest

from relay.banner import client_command, join_lines
from relay.cli import build_parser
from tests.colour import rgb, worst_pair
from tests.relayproc import ROOT, UNIT, RelayProcess
from transports.events import Error, Msg

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


# What make would run; a make that runs this test (make test) would otherwise
# make the nested one print "Entering directory" lines.
MAKE_N = ("make", "--no-print-directory", "-n")


def test_make_run_passes_args_through() -> None:
    proc = subprocess.run([*MAKE_N, "run", "ARGS=--rate-limit 0 --port 9000"],
                          cwd=ROOT, capture_output=True, text=True, timeout=20 * UNIT)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last == ".venv/bin/chat-relay start --rate-limit 0 --port 9000"
    plain = subprocess.run([*MAKE_N, "run"], cwd=ROOT, capture_output=True, text=True,
                           timeout=20 * UNIT)
    assert plain.stdout.strip().splitlines()[-1].rstrip() == ".venv/bin/chat-relay start"


def test_bench_advice_names_a_command_that_works() -> None:
    from benchmarks.runner import rate_limit_warning

    advice = rate_limit_warning({"sender: rate_limited": 2}) or ""
    assert "`chat-relay start --rate-limit 0`" in advice
    make = re.search(r"`(make run ARGS=[^`]+)`", advice)
    assert make is not None
    proc = subprocess.run([*MAKE_N, *shlex.split(make.group(1))[1:]], cwd=ROOT,
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


# Nick colours and the shutdown notice (chat-client) -----------------------------


def test_palette_has_no_near_duplicates() -> None:
    from clients.render import NICK_COLOURS

    assert len(NICK_COLOURS) >= 8
    worst = worst_pair([rgb(c) for c in NICK_COLOURS])
    assert worst >= 25, worst


@pytest.mark.parametrize("nicks", [
    ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"],
    [f"user{i}" for i in range(8)],
    [f"guest-{i}" for i in range(1, 9)],
])
def test_first_eight_nicks_of_a_room_get_distinct_colours(nicks: list[str]) -> None:
    from clients.render import View, render
    from transports.events import Msg

    view = View("me", "lobby", {"lobby": None})
    colours = []
    for seq, nick in enumerate(nicks, 1):
        line = render(Msg("lobby", seq, 0, nick, "hi"), view)[0]
        colours.append(next(style for style, text in line if text == nick).split()[0])
    assert worst_pair([rgb(c) for c in colours]) >= 25
    # A nick keeps its colour, whatever its case.
    again = render(Msg("lobby", 99, 0, nicks[0].upper(), "x"), view)[0]
    assert any(style.startswith(colours[0]) for style, _ in again)


def test_planned_shutdown_is_a_grey_notice() -> None:
    from clients.render import ERROR_STYLE, SERVER_STYLE, View, plain, render
    from clients.state import ConnectionLost
    from transports.events import Error

    view = View("me", "lobby", {"lobby": None})
    lines = render(Error("shutting_down", "the relay is shutting down"), view)
    lines += render(ConnectionLost("closed"), view)
    assert all(style == SERVER_STYLE for line in lines for style, _ in line)
    assert "error" not in " ".join(plain(line) for line in lines)
    # An unplanned loss is still red.
    assert render(ConnectionLost("reset"), View("me"))[0][0][0] == ERROR_STYLE


def test_chat_client_shows_a_relay_shutdown_as_a_notice() -> None:
    relay = RelayProcess(workers=1).start()
    try:
        child = pexpect.spawn(sys.executable, ["-c", PIPE_LAUNCHER, HOST, str(relay.port)],
                              env=ENV, cwd=str(ROOT), encoding="utf-8", timeout=20 * UNIT)
        child.expect("you joined lobby")
    finally:
        relay.stop()
    child.expect(r"\* the relay is shutting down; reconnecting when it is back")
    child.expect(r"connection closed by the relay, reconnecting")
    assert "error" not in child.before
    _ctrl_c(child)


# After a relay restart ------------------------------------------------------------


def _events_across_a_restart(args: list[str]) -> tuple[list[object], Msg]:
    """alice (reconnecting) sees 3 messages, the relay restarts on the same port,
    bob says "after": what alice was shown from the loss to that message."""
    from clients.state import ConnectionLost, Reconnected
    from clients.sync import connect

    first = RelayProcess(workers=1, args=args).start()
    port = first.port
    second = None
    try:
        with connect(HOST, port, "alice", reconnect=True) as alice:
            with connect(HOST, port, "bob") as bob:
                for i in range(3):
                    bob.say("lobby", f"m{i}")
                assert bob.flush(5 * UNIT)
            got = [_next(alice, Msg).text for _ in range(3)]
            assert got == ["m0", "m1", "m2"]
            first.stop()
            _next(alice, ConnectionLost, timeout=20)
            second = RelayProcess(workers=1, args=args, port=port).start()
            seen: list[object] = []
            _next(alice, Reconnected, timeout=30, seen=seen)
            with connect(HOST, port, "bob") as bob:
                bob.say("lobby", "after")
                assert bob.flush(5 * UNIT)
            after = _next(alice, Msg, pred=lambda m: m.text == "after", seen=seen)
            return seen, after
    finally:
        first.stop()
        if second is not None:
            second.stop()


def _next(client: object, kind: type, pred: object = None, timeout: float = 10,
          seen: list[object] | None = None) -> Any:
    deadline = time.monotonic() + timeout * UNIT
    while (left := deadline - time.monotonic()) > 0:
        ev = client.recv(left)  # type: ignore[attr-defined]
        if ev is None:
            continue
        if seen is not None:
            seen.append(ev)
        if isinstance(ev, kind) and (pred is None or pred(ev)):  # type: ignore[operator]
            return ev
    raise AssertionError(f"no {kind.__name__} in time; saw {(seen or [])[-10:]!r}")


def test_restart_without_history_db_says_the_history_is_gone() -> None:
    from clients.render import View, plain, render
    from clients.state import Missed, Restarted

    seen, after = _events_across_a_restart(["--rate-limit", "0"])
    assert Restarted("lobby") in seen
    assert not [e for e in seen if isinstance(e, (Missed, Error))], seen
    assert after.seq == 1  # the new relay's numbering, shown, not dropped as old
    line = plain(render(Restarted("lobby"), View("alice"))[0])
    assert line.endswith("lobby: the relay restarted; messages before it are gone")


def test_restart_with_history_db_is_a_plain_resume(tmp_path: Path) -> None:
    from clients.state import Missed, Restarted

    seen, after = _events_across_a_restart(
        ["--rate-limit", "0", "--history-db", str(tmp_path / "history.db")])
    assert not [e for e in seen if isinstance(e, (Restarted, Missed, Error))], seen
    assert after.seq == 4


def test_new_epoch_with_seq_going_on_is_one_notice_and_no_count() -> None:
    """The hub alone restarted (seq continues): history is gone, not 'missed N'."""
    from clients.state import ClientState, Missed, Restarted
    from transports.events import Joined, Welcome

    state = ClientState("alice")
    state.receive(Welcome("alice", "s", 1, epoch=1))
    state.receive(Joined("lobby", ("alice",), 10))
    state.connection_lost()
    state.receive(Welcome("alice", "s", 1, epoch=2))
    assert state.receive(Joined("lobby", ("alice",), 14)) == [
        Restarted("lobby"), Joined("lobby", ("alice",), 14)]
    gap = Error("history_gap", "gone", "hello", room="lobby")
    assert state.receive(gap) == []
    out = state.receive(Msg("lobby", 13, 0, "bob", "x"))
    assert [type(e) for e in out] == [Msg] and not any(isinstance(e, Missed) for e in out)
    # The same epoch: a resume gap is counted.
    same = ClientState("carol")
    same.receive(Welcome("carol", "s", 1, epoch=5))
    same.receive(Joined("lobby", ("carol",), 2))
    same.connection_lost()
    same.receive(Welcome("carol", "s", 1, epoch=5))
    assert same.receive(Joined("lobby", ("carol",), 9)) == [Joined("lobby", ("carol",), 9)]
    assert same.receive(gap) == []
    assert same.receive(Msg("lobby", 6, 0, "bob", "y"))[0] == Missed("lobby", 3, 3, 5)


# One slash-command grammar --------------------------------------------------------


def test_history_n_means_the_same_in_nc_and_chat_client() -> None:
    """The web page's side: tests/clients/test_web_page.py::test_page_speaks_the_shared_..."""
    from clients.commands import parse
    from transports.events import HistoryQuery
    from transports.text import TextServerCodec

    want = HistoryQuery("lobby", None, 5)
    assert parse("/history 5", "lobby").send == want
    assert TextServerCodec().receive_data(b"/history 5\n") == [want]


def test_every_front_end_handles_every_command_of_the_table() -> None:
    from clients.commands import parse
    from transports.commands import CLIENT, COMMANDS, TEXT, WEB
    from transports.text import TextServerCodec

    codec = TextServerCodec()
    app = (ROOT / "transports" / "webpage" / "app.js").read_text()
    for c in COMMANDS:
        if TEXT in c.where:
            assert codec._handler(c.name) is not None, c.name
        if CLIENT in c.where:
            for name in (c.name, *c.aliases):
                action = parse(f"/{name} x", "lobby")
                assert "unknown command" not in (action.local or ""), name
        if WEB in c.where:
            assert f'case "{c.name}"' in app, c.name
