"""chat-client: its command parser and renderer, then the program itself in a pipe
and on a pty (pexpect) against a real relay. Waits are deadlines, never sleeps."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pexpect
import psutil
import pytest
from pexpect.popen_spawn import PopenSpawn

from clients.commands import parse
from clients.render import View, nick_colour, plain, render
from clients.state import ConnectionLost, Missed, Reconnected
from clients.sync import Client, connect
from tests.relayproc import ROOT, UNIT, RelayProcess
from tests.wire import worker_of
from transports.events import (
    Error,
    HistoryQuery,
    Join,
    Joined,
    ListRooms,
    Msg,
    NickChange,
    Part,
    Presence,
    Say,
    Whisper,
    WhisperMsg,
    Who,
)

HOST = "127.0.0.1"
CLIENT = [sys.executable, "-m", "clients.cli"]
TIME = r"\d\d:\d\d:\d\d"
ENV = {**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm-256color"}


# Commands and rendering (no relay) ------------------------------------------


def test_parse_commands() -> None:
    assert parse("hello", "lobby").send == Say("lobby", "hello")
    assert parse("//slash", "lobby").send == Say("lobby", "/slash")
    assert parse("   ", "lobby").send is None
    assert parse("/nick bob_2", "lobby").send == NickChange("bob_2")
    join = parse("/join dev", "lobby")
    assert join.send == Join("dev") and join.switch_to == "dev"
    assert parse("/part", "dev").send == Part("dev")
    assert parse("/part lobby", "dev").send == Part("lobby")
    assert parse("/msg bob hi there", "lobby").send == Whisper("bob", "hi there")
    assert parse("/who", "lobby").send == Who("lobby")
    assert parse("/rooms", None).send == ListRooms()
    assert parse("/history 5", "lobby").send == HistoryQuery("lobby", None, 5)
    assert parse("/quit", "lobby").quit
    assert "/join ROOM" in (parse("/help", "lobby").local or "")
    for bad in ("/nick bad nick", "/join", "/join no/slash", "/msg bob", "/frobnicate"):
        action = parse(bad, "lobby")
        assert action.send is None and (action.local or "").startswith("error:"), bad
    assert (parse("hello", None).local or "").startswith("error:")


def test_nick_colours_are_stable_and_case_blind() -> None:
    assert nick_colour("alice") == nick_colour("ALICE") == nick_colour("alice")
    assert len({nick_colour(f"user{i}") for i in range(50)}) > 4


def test_render_lines() -> None:
    view = View("alice", "lobby", {"lobby": None})
    line = plain(render(Msg("lobby", 1, 0, "bob", "hi"), view)[0])
    assert re.fullmatch(rf"{TIME} <bob> hi", line)
    view.rooms["dev"] = None
    assert plain(render(Msg("dev", 1, 0, "bob", "hi"), view)[0]).endswith("[dev] <bob> hi")
    # Our own join/rename presence is already said by joined/renamed.
    assert render(Presence("lobby", "alice", "join"), view) == []
    assert plain(render(Presence("lobby", "bob", "part"), view)[0]).endswith("* bob left lobby")
    sent = plain(render(WhisperMsg("alice", "bob", "psst", 0), view)[0])
    assert sent.endswith("-> *bob* psst")
    assert plain(render(WhisperMsg("bob", "alice", "yo", 0), view)[0]).endswith("*bob* yo")
    texts = [
        plain(render(ev, view)[0])
        for ev in (
            ConnectionLost("reset"),
            Reconnected("alice"),
            Missed("lobby", 7, 3, 9),
            Error("not_in_room", "you are not in x"),
            Joined("x", ("alice", "bob"), 3),
        )
    ]
    assert texts[0].endswith("* connection lost, reconnecting...")
    assert texts[1].endswith("* reconnected")
    assert texts[2].endswith("* missed 7 messages in lobby")
    assert texts[3].endswith("* error: not_in_room: you are not in x")
    assert texts[4].endswith("* you joined x (2 members: alice, bob)")
    # Styles carry the nick colour; plain text never has escape codes.
    frags = render(Msg("lobby", 1, 0, "bob", "hi"), view)[0]
    assert any(nick_colour("bob") in style for style, _ in frags)


# The program in a pipe -------------------------------------------------------


_SPAWNED: list[PopenSpawn] = []


@pytest.fixture(autouse=True)
def _stop_spawned() -> Iterator[None]:
    """A chat-client a failed test left running is stopped by its PID (it would
    otherwise go on reconnecting to a relay that is gone)."""
    yield
    while _SPAWNED:
        child = _SPAWNED.pop()
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait(10)


def spawn_pipe(relay: RelayProcess, *args: str) -> PopenSpawn:
    child = PopenSpawn(
        [*CLIENT, HOST, str(relay.port), *args],
        cwd=str(ROOT),
        env=ENV,
        encoding="utf-8",
        timeout=10 * UNIT,
    )
    _SPAWNED.append(child)
    return child


def wait_exit(child: PopenSpawn, timeout: float = 15) -> int:
    child.expect(pexpect.EOF, timeout=timeout * UNIT)
    code = child.wait()
    assert isinstance(code, int)
    return code


def next_msg(client: Client, text: str, timeout: float = 5) -> Msg:
    deadline = time.monotonic() + timeout * UNIT
    while (left := deadline - time.monotonic()) > 0:
        ev = client.recv(left)
        if isinstance(ev, Msg) and ev.text == text:
            return ev
    raise AssertionError(f"no msg {text!r} in time")


def test_pipe_mode_sends_lines_runs_commands_and_exits_after_acks(relay: RelayProcess) -> None:
    with connect(HOST, relay.port, "bob") as bob:
        lines = [
            "hello from a pipe",
            "/who",
            "/ping",
            "/msg bob psst",
            "/join dev",
            "said in dev",
            "/nick alice2",
            "/quit",
            "never sent",
        ]
        proc = subprocess.run(
            [*CLIENT, HOST, str(relay.port), "--nick", "alice"],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=ENV,
            timeout=30 * UNIT,
        )
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        assert "\x1b[" not in out
        # Our own message shows exactly once (from the relay's echo).
        assert len(re.findall(rf"(?m)^{TIME} <alice> hello from a pipe$", out)) == 1
        assert re.search(rf"(?m)^{TIME} \* lobby: 2 members: bob, alice$", out)
        assert re.search(rf"(?m)^{TIME} -> \*bob\* psst$", out)
        assert re.search(rf"(?m)^{TIME} \* pong: \d+\.\d ms round trip$", out)
        assert re.search(rf"(?m)^{TIME} \[dev\] <alice> said in dev$", out)
        assert re.search(rf"(?m)^{TIME} \* you are now known as alice2$", out)
        assert "never sent" not in out
        assert next_msg(bob, "hello from a pipe").sender == "alice"
    with connect(HOST, relay.port, "carol", rooms=("dev",)) as carol:
        page = carol.history("dev")
        assert [m.text for m in page.messages] == ["said in dev"]


def test_pipe_mode_prints_what_arrives_while_stdin_stays_open(relay: RelayProcess) -> None:
    child = spawn_pipe(relay, "--nick", "alice")
    child.expect(r"you joined lobby")
    with connect(HOST, relay.port, "bob") as bob:
        child.expect(r"\* bob joined lobby")
        bob.say("lobby", "one")
        bob.say("lobby", "two")
        child.expect(rf"{TIME} <bob> one\r?\n")
        child.expect(rf"{TIME} <bob> two\r?\n")
        child.sendline("answer")
        assert next_msg(bob, "answer").sender == "alice"
    child.sendeof()
    assert wait_exit(child) == 0


def test_me_goes_out_as_an_action_and_shows_as_one(relay: RelayProcess) -> None:
    """`/me waves` reaches others as an action, and chat-client shows its own
    copy as `* alice waves`, not as `<alice> waves`."""
    child = spawn_pipe(relay, "--nick", "alice")
    child.expect(r"you joined lobby")
    with connect(HOST, relay.port, "bob") as bob:
        child.expect(r"\* bob joined lobby")
        child.sendline("/me waves")
        got = next_msg(bob, "waves")
        assert (got.sender, got.action) == ("alice", True)
        child.expect(rf"{TIME} \* alice waves\r?\n")
        bob.say("lobby", "hello", action=True)
        child.expect(rf"{TIME} \* bob hello\r?\n")
    child.sendeof()  # it would otherwise outlive the test, reconnecting to a stopped relay
    assert wait_exit(child) == 0


def test_connection_refused_is_one_clear_line() -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [*CLIENT, HOST, str(port)], input="", capture_output=True, text=True, cwd=ROOT,
        timeout=20 * UNIT,
    )
    assert proc.returncode == 1
    assert proc.stderr == f"cannot connect to {HOST}:{port}: connection refused\n"
    assert proc.stdout == ""


def test_taken_nick_is_one_clear_line(relay: RelayProcess) -> None:
    with connect(HOST, relay.port, "alice"):
        proc = subprocess.run(
            [*CLIENT, HOST, str(relay.port), "--nick", "Alice"], input="", capture_output=True,
            text=True, cwd=ROOT, timeout=20 * UNIT,
        )
    assert proc.returncode == 1
    assert "nick_taken" in proc.stderr and proc.stderr.count("\n") == 1


def test_pipe_mode_reconnects_and_resumes(relay: RelayProcess) -> None:
    child = spawn_pipe(relay, "--nick", "alice")
    child.expect(r"you joined lobby")
    with connect(HOST, relay.port, "bob", reconnect=True) as bob:
        child.expect(r"\* bob joined lobby")
        bob.say("lobby", "before")
        child.expect(r"<bob> before")
        alice_port = next(
            c.laddr.port
            for c in psutil.Process(child.proc.pid).net_connections("tcp")
            if c.raddr and c.raddr.port == relay.port
        )
        os.kill(worker_of(relay.pid, alice_port), signal.SIGKILL)
        child.expect(r"\* connection lost, reconnecting\.\.\.")
        # bob keeps talking while alice is away (bob may be reconnecting too).
        for i in range(5):
            bob.say("lobby", f"during {i}")
        child.expect(r"\* reconnected")
        for i in range(5):
            child.expect(rf"<bob> during {i}\r?\n")
        bob.say("lobby", "after")
        child.expect(r"<bob> after")
    child.sendline("still here")
    child.sendeof()
    assert wait_exit(child) == 0
    assert "during" not in (child.before or "")  # nothing shown twice


# The program on a terminal ---------------------------------------------------


@contextmanager
def pty_client(relay: RelayProcess, nick: str) -> Iterator[pexpect.spawn]:
    child = pexpect.spawn(
        CLIENT[0], [*CLIENT[1:], HOST, str(relay.port), "--nick", nick],
        cwd=str(ROOT), env=ENV, encoding="utf-8", timeout=10 * UNIT, dimensions=(30, 120),
    )
    try:
        child.expect(rf"\[lobby\] {nick}>")
        yield child
    finally:
        if child.isalive():
            # Cleanup, not a test of how to quit: /quit, then Ctrl-D if needed.
            child.send("\x15/quit\r")  # Ctrl-U clears a half-typed line first
            try:
                if child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=5 * UNIT) == 1:
                    child.sendcontrol("d")
                    child.expect(pexpect.EOF, timeout=10 * UNIT)
            finally:
                child.close(force=True)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_terminal_keeps_the_typed_line_while_messages_arrive(relay: RelayProcess) -> None:
    with connect(HOST, relay.port, "bob") as bob, pty_client(relay, "alice") as child:
        child.send("half typed")
        child.expect("half typed")
        bob.say("lobby", "incoming while typing")
        child.expect("incoming while typing")
        # The prompt is drawn again below the message, with the input intact.
        child.expect(r"alice>")
        child.expect("half typed")
        child.send(" and finished\r")
        assert next_msg(bob, "half typed and finished").sender == "alice"
        child.expect("and finished")
        # Colour: the nick is wrapped in an SGR colour sequence; time is HH:MM:SS.
        child.send("/who\r")
        child.expect(r"lobby: 2 members")
        screen = child.before or ""
        assert re.search(TIME, ANSI.sub("", screen))
        assert "\x1b[" in screen


def test_terminal_shows_own_message_once(relay: RelayProcess) -> None:
    with connect(HOST, relay.port, "bob") as bob, pty_client(relay, "alice") as child:
        child.send("only once please\r")
        next_msg(bob, "only once please")
        # The relay's echo: "<alice> text", the nick wrapped in colour codes.
        child.expect(r"<(\x1b\[[0-9;]*m)*alice(\x1b\[[0-9;]*m)*> only once please")
        bob.say("lobby", "marker")
        child.expect("marker")
        # Between our echo and bob's marker, our text did not appear again.
        assert "only once please" not in ANSI.sub("", child.before or "")
        child.send("/quit\r")
        child.expect(pexpect.EOF)
