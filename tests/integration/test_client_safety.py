"""chat-client against hostile input and wrong settings: no peer can draw on
the user's terminal (the sanitiser, then the program in a pipe and on a pty);
--tls against a plain relay says so; the password comes from the environment
or a prompt, not only argv."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator

import pexpect
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.errors import NotTls
from clients.render import View, clean, clean_line, plain, render
from clients.sync import connect
from tests.conftest import RelayFactory
from tests.integration.test_chat_client import ANSI, CLIENT, ENV, HOST, next_msg
from tests.relayproc import ROOT, UNIT, RelayProcess
from transports.events import Error, Msg, Notice, Presence, WhisperMsg

# Every code point the sanitiser must neutralise, by class.
C0 = {c for c in range(0x20) if c != 0x09}  # tab passes: it can only move right
DEL = {0x7F}
C1 = set(range(0x80, 0xA0))
BIDI = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A))
SEPARATORS = {0x2028, 0x2029}
SURROGATES = set(range(0xD800, 0xE000))
UNSAFE = C0 | DEL | C1 | BIDI | SEPARATORS | SURROGATES


# The sanitiser -----------------------------------------------------------------


def test_exactly_the_unsafe_code_points_are_neutralised() -> None:
    changed = {c for c in range(0x110000) if clean(chr(c)) != chr(c)}
    assert changed == UNSAFE


@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1b[2J", "^[[2J"), ("\x1b]0;pwned\x07", "^[]0;pwned^G"), ("a\rb", "a^Mb"),
    ("a\bb", "a^Hb"), ("a\nb", "a^Jb"), ("\x00", "^@"), ("\x1f", "^_"), ("\x7f", "^?"),
    ("\x9b2J", "<U+009B>2J"), ("\x85", "<U+0085>"), ("\x80\x9f", "<U+0080><U+009F>"),
    ("\u202e", "<U+202E>"), ("\u202a", "<U+202A>"), ("\u2066x\u2069", "<U+2066>x<U+2069>"),
    ("\u2028", "<U+2028>"), ("\u2029", "<U+2029>"), ("\ud800", "<U+D800>"),
])
def test_each_class_is_shown_visibly(raw: str, shown: str) -> None:
    assert clean(raw) == shown


@pytest.mark.parametrize("kept", [
    "a\tb", "plain ascii ~!@#", "caf\u00e9 \u00a0nbsp", "\u4e2d\u6587", "emoji \U0001f600",
    "\u05e9\u05dc\u05d5\u05dd \u200f!", "\u200e\u061c marks", "^[ typed by hand",
])
def test_ordinary_text_tab_and_bidi_marks_pass_unchanged(kept: str) -> None:
    assert clean(kept) == kept


@given(st.text(alphabet=st.characters(codec=None)))
def test_clean_leaves_nothing_unsafe_drops_nothing_and_is_idempotent(text: str) -> None:
    out = clean(text)
    assert not any(ord(ch) in UNSAFE for ch in out)
    assert clean(out) == out
    assert len(out) >= len(text)
    assert out.replace("^", "").count("<U+") <= len(text)


def test_clean_line_marks_stand_ins_in_reverse_video() -> None:
    line = clean_line([("bold", "x\x1by"), ("", "ok")])
    assert line == [("bold", "x"), ("bold reverse", "^["), ("bold", "y"), ("", "ok")]
    assert clean_line([("", "\r")]) == [("reverse", "^M")]


def test_every_render_path_is_clean_after_clean_line() -> None:
    evil = "x\x1b[2J\r\x9b\u202e\u2028y"
    view = View("alice", "lobby", {"lobby": None})
    events = [Msg("lobby", 1, 0, "bob", evil), WhisperMsg("bob", "alice", evil, 0),
              Notice(evil), Error("bad_field", evil), Presence(evil, "bob", "join")]
    for ev in events:
        for line in render(ev, view):
            text = plain(clean_line(line))
            assert not any(ord(ch) in UNSAFE for ch in text), (ev, text)
            assert "x^[[2J^M<U+009B><U+202E><U+2028>y" in text


# The program: what a peer sends cannot reach the terminal ----------------------

EVIL = [
    "A\x1b[2JB", "C\rD", "E\x9bF", "G\u202eH", "I\u2066J\u2069", "K\u2028L",
    "M\x07N\x08O\x7fP", "Q\n12:00:00 <root> fake line",
]
SHOWN = [
    "A^[[2JB", "C^MD", "E<U+009B>F", "G<U+202E>H", "I<U+2066>J<U+2069>", "K<U+2028>L",
    "M^GN^HO^?P", "Q^J12:00:00 <root> fake line",
]


def test_pipe_mode_prints_no_control_a_peer_sent(relay: RelayProcess) -> None:
    with connect(HOST, relay.port, "bob") as bob:
        alice = subprocess.Popen([*CLIENT, HOST, str(relay.port), "--nick", "alice"], cwd=ROOT,
                                 env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        try:
            def alice_joined() -> bool:
                ev = bob.recv(0.1)
                return isinstance(ev, Presence) and ev.nick == "alice" and ev.event == "join"

            relay.wait_for(alice_joined, timeout=15)
            for text in EVIL:
                bob.say("lobby", text)
                bob.whisper("alice", text)
            next_msg(bob, EVIL[-1])
            out, err = alice.communicate(b"done\n", timeout=20 * UNIT)
        finally:
            if alice.poll() is None:
                alice.kill()
                alice.wait()
    assert alice.returncode == 0, err
    for raw in (b"\x1b", b"\r", b"\x07", b"\x08", b"\x7f", "\x9b".encode(), "\u202e".encode(),
                "\u2066".encode(), "\u2028".encode()):
        assert raw not in out, raw
    text = out.decode("utf-8")
    for shown in SHOWN:
        assert f"<bob> {shown}\n" in text, shown
        assert f"*bob* {shown}\n" in text, shown
    assert not any(line.startswith("12:00:00 <root>") for line in text.split("\n"))
    assert "<alice> done" in text


def test_terminal_mode_shows_controls_instead_of_obeying_them(relay: RelayProcess) -> None:
    child = pexpect.spawn(
        CLIENT[0], [*CLIENT[1:], HOST, str(relay.port), "--nick", "alice"], cwd=str(ROOT),
        env=ENV, encoding="utf-8", timeout=10 * UNIT, dimensions=(30, 200),
    )
    try:
        child.expect(r"\[lobby\] alice>")
        with connect(HOST, relay.port, "bob") as bob:
            for text in EVIL:
                bob.say("lobby", text)
            bob.say("lobby", "the end")
            child.expect("the end")
        screen = ANSI.sub("", child.before or "")
        for raw in ("\x1b[2JB", "C\rD", "\x9b", "\u202e", "\u2066", "\u2028", "\x07", "\x7f"):
            assert raw not in screen, raw
        for shown in SHOWN:
            assert shown in screen, shown
        child.send("/quit\r")
        child.expect(pexpect.EOF, timeout=10 * UNIT)
    finally:
        child.close(force=True)


# --tls against a relay without TLS ------------------------------------------------


def run_client(*args: str, env: dict[str, str] | None = None,
               new_session: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLIENT, *args], input="", capture_output=True, text=True, cwd=ROOT,
                          env=env or ENV, timeout=30 * UNIT, start_new_session=new_session)


def test_tls_against_a_plain_relay_says_drop_tls(relay: RelayProcess) -> None:
    proc = run_client(HOST, str(relay.port), "--tls")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "this relay does not use TLS" in proc.stderr and proc.stderr.endswith("drop --tls\n")
    assert proc.stdout == ""


def test_the_library_raises_not_tls_too(relay: RelayProcess) -> None:
    with pytest.raises(NotTls, match="closed the connection at our TLS hello"):
        connect(HOST, relay.port, "alice", tls=ssl.create_default_context(), timeout=5 * UNIT)


@pytest.fixture
def closes_at_once() -> Iterator[int]:
    """A port whose server closes each connection as soon as its first bytes come:
    what a relay without TLS does with a ClientHello once it refuses TLS outright."""
    server = socket.create_server((HOST, 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(1)  # the rest stays unread: the close becomes a reset

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        try:  # wakes the thread blocked in accept(), which close() alone does not
            server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        server.close()
        thread.join(5)
        assert not thread.is_alive()


def test_tls_against_a_relay_that_closes_at_the_client_hello(closes_at_once: int) -> None:
    proc = run_client(HOST, str(closes_at_once), "--tls")
    assert proc.returncode == 1
    assert proc.stderr == (f"cannot connect to {HOST}:{closes_at_once}: this relay does not "
                           "use TLS (it closed the connection at our TLS hello); drop --tls\n")


# The password: environment, prompt, or a clear line -----------------------------

PASSWORD = "pw-Jr5kQ2"


@pytest.fixture
def locked(relay_factory: RelayFactory, monkeypatch: pytest.MonkeyPatch) -> RelayProcess:
    """A relay with a password (from its environment, so none is on its argv)."""
    monkeypatch.setenv("CHAT_RELAY_PASSWORD", PASSWORD)
    relay = relay_factory(workers=1)
    monkeypatch.delenv("CHAT_RELAY_PASSWORD")
    return relay


def test_password_from_the_environment(locked: RelayProcess) -> None:
    env = {**ENV, "CHAT_RELAY_PASSWORD": PASSWORD}
    with connect(HOST, locked.port, "bob", password=PASSWORD) as bob:
        proc = subprocess.run([*CLIENT, HOST, str(locked.port), "--nick", "alice"],
                              input="hello with env\n", capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=30 * UNIT)
        assert proc.returncode == 0, proc.stderr
        assert next_msg(bob, "hello with env").sender == "alice"


def test_no_password_and_no_terminal_is_one_clear_line(locked: RelayProcess) -> None:
    # A new session has no controlling terminal, so there is nobody to ask.
    proc = run_client(HOST, str(locked.port), new_session=True)
    assert proc.returncode == 1
    assert proc.stderr == (f"{HOST}:{locked.port} needs a password: set $CHAT_RELAY_PASSWORD "
                           "(or give --password, which other local users can see)\n")


def test_a_wrong_password_given_is_not_asked_again(locked: RelayProcess) -> None:
    proc = run_client(HOST, str(locked.port), "--password", "wrong")
    assert proc.returncode == 1
    assert "auth_failed" in proc.stderr and proc.stderr.count("\n") == 1


def test_terminal_asks_for_the_password_until_it_is_right(locked: RelayProcess) -> None:
    child = pexpect.spawn(
        CLIENT[0], [*CLIENT[1:], HOST, str(locked.port), "--nick", "alice"], cwd=str(ROOT),
        env=ENV, encoding="utf-8", timeout=10 * UNIT, dimensions=(30, 120),
    )
    try:
        child.expect(f"password for {HOST}:{locked.port}: ")
        child.sendline("not it")
        child.expect("wrong password")
        child.expect(f"password for {HOST}:{locked.port}: ")
        child.sendline(PASSWORD)
        child.expect(r"\[lobby\] alice>")
        assert PASSWORD not in (child.before or "")  # getpass does not echo
        child.send("/quit\r")
        child.expect(pexpect.EOF, timeout=10 * UNIT)
    finally:
        child.close(force=True)
