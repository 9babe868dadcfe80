"""The text dialect the way nc speaks it, and text + native in one room."""

from __future__ import annotations

import re
import signal

import pytest

from tests.conftest import RelayFactory
from tests.relayproc import RelayProcess
from tests.wire import NativePeer, TextPeer


def test_nc_style_session(relay: RelayProcess) -> None:
    t = TextPeer(relay.port)
    greet = t.expect_text("welcome")
    nick = re.search(r"you are (\S+);", greet)
    assert nick and "/help" in greet
    guest = nick.group(1)
    t.expect_text("you joined lobby")
    t.send_line("/help")
    t.expect_text("/join")
    native = NativePeer.joined(relay.port, "nat")
    t.expect_text("nat joined lobby")
    t.send_line("hello from nc")
    m = native.msgs("lobby", 1)[0]
    assert (m["from"], m["text"]) == (guest, "hello from nc")
    native.send({"t": "say", "room": "lobby", "text": "hello text"})
    assert t.expect(lambda line: line.startswith("<nat>")) == "<nat> hello text"
    t.send_line("/nick textuser")
    t.expect_text("you are now known as textuser")
    native.expect(lambda b: b.get("t") == "presence" and b.get("new") == "textuser")
    t.send_line("/msg nat secret")
    w = native.expect(lambda b: b.get("t") == "whisper")
    assert (w["from"], w["text"]) == ("textuser", "secret")
    t.expect_text("-> *nat* secret")
    t.send_line("/join dev")
    t.expect_text("you joined dev")
    t.send_line("in dev now")
    native.send({"t": "join", "room": "dev"})
    native.expect(lambda b: b.get("t") == "joined" and b["room"] == "dev")
    native.send({"t": "say", "room": "lobby", "text": "back in lobby"})
    t.expect(lambda line: line == "[lobby] <nat> back in lobby")
    t.send_line("/rooms")
    t.expect(lambda line: line.startswith("* rooms:") and "dev" in line)
    t.lines.clear()
    t.send_line(b"/who\n/quit")  # the answer comes first, the goodbye last, then EOF
    native.expect(lambda b: b.get("t") == "presence" and b["event"] == "part"
                  and b["nick"] == "textuser")
    with pytest.raises(AssertionError):  # reads every line until the relay closes
        t.expect(lambda line: False)
    assert t.closed
    assert t.lines[-1] == "* bye, textuser: the relay closed your connection"
    assert any(line.startswith("* ") and " member" in line for line in t.lines[:-1])  # /who


def test_own_lines_not_echoed_to_text_clients(relay: RelayProcess) -> None:
    t = TextPeer(relay.port)
    t.expect_text("you joined lobby")
    t.send_line("one")
    t.send_line("/ping")
    t.expect_text("pong")
    assert not any("one" in line for line in t.lines)



def test_pasted_lines_get_their_answers_in_order_errors_included(relay: RelayProcess) -> None:
    """A reader rejects a bad line itself, but its error must not overtake the
    answers to the lines pasted before it, which come back through the hub."""
    t = TextPeer(relay.port)
    t.expect_text("you joined lobby")
    t.lines.clear()
    t.send_line(b"/nick paster\n/who\n/join #bad room\n/ping")
    t.expect_text("pong")
    answers = [line for line in t.lines if line.startswith("* ")]
    assert [a.split()[1] for a in answers[:3]] == ["you", "members", "error:"], answers
    assert "room must be" in answers[2]


def test_sigterm_tells_every_dialect_shutting_down(relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=2)
    natives = [NativePeer.joined(relay.port, f"n{i}") for i in range(4)]
    texts = [TextPeer(relay.port) for _ in range(4)]
    for t in texts:
        t.expect_text("you joined lobby")
    children = relay.children()
    assert relay.stop(signal.SIGTERM) == 0
    relay.wait_for(lambda: "chat-relay: stopped\n" in relay.output)
    assert ("chat-relay: stopping on SIGTERM; telling clients the relay is shutting down\n"
            in relay.output)
    for n in natives:
        n.expect_error("shutting_down")
        n.wait_closed()
    for t in texts:
        t.expect(lambda line: line.startswith("* error:") and "shutting down" in line)
    assert not [c for c in children if c.is_running() and c.status() != "zombie"]


def test_seed_tutorial_client_without_newlines(relay: RelayProcess) -> None:
    """The tutorial's client send()s each message with no newline, then waits."""
    import socket

    native = NativePeer.joined(relay.port, "listener")
    seed = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
    greeting = b""
    while b"you joined lobby" not in greeting:
        greeting += seed.recv(4096)
    seed.sendall(b"seedling: hello from the tutorial")
    m = native.msgs("lobby", 1)[0]
    assert m["text"] == "seedling: hello from the tutorial"
    seed.sendall(b"second message")
    assert native.msgs("lobby", 1)[0]["text"] == "second message"
    # A line that arrives in pieces, quickly, is still one line.
    seed.sendall(b"split ")
    seed.sendall(b"line\n")
    assert native.msgs("lobby", 1)[0]["text"] == "split line"


def test_sigint_like_ctrl_c_stops_everything(relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=2)
    n = NativePeer.joined(relay.port, "ctrlc")
    children = relay.children()
    assert relay.stop(signal.SIGINT) == 0
    n.expect_error("shutting_down")
    relay.wait_for(lambda: "chat-relay: stopped\n" in relay.output)
    stopping = [line for line in relay.output if line.startswith("chat-relay: stopping")]
    assert stopping == ["chat-relay: stopping on Ctrl-C; "
                        "telling clients the relay is shutting down\n"]
    assert not [c for c in children if c.is_running() and c.status() != "zombie"]
