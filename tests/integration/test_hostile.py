"""Hostile input against real relays: it costs its sender, never a process.

One relay per module serves every hypothesis example. Each example is a fresh
connection in one dialect that sends a value out of range, oversized, of the
wrong type or nested 1,000+ deep in one field of one frame type, then a
sentinel ping. The sender must get an answer (an error or the frame's usual
reply) before the sentinel's pong, or be closed; two bystanders must still
chat; and no relay process may have died (the supervisor's restart count,
read from --metrics, stays 0, and the pids stay the same).

Until parse-time validation catches these values, many of them reach the
containment path (a request that raises is dropped with an error): this
suite holds either way. `make fuzz` runs it with $CHAT_RELAY_HOSTILE_EXAMPLES.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import RelayFactory
from tests.integration.test_metrics import metrics_url, scrape, value
from tests.relayproc import RelayProcess
from tests.wire import NativePeer, TextPeer
from transports.native import frame

EXAMPLES = int(os.environ.get("CHAT_RELAY_HOSTILE_EXAMPLES", "30"))
HOSTILE = settings(max_examples=EXAMPLES, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow, HealthCheck.data_too_large])
_nicks = itertools.count(1)


# A relay shared by the module, and what must hold after every example ----------

@dataclass
class Scene:
    relay: RelayProcess
    url: str
    pids: tuple[list[int], int]
    alice: NativePeer
    bob: NativePeer
    said: int = 0

    def check(self) -> None:
        """No process died or restarted, and the bystanders still chat."""
        assert (self.relay.worker_pids(), self.relay.hub_pid()) == self.pids
        self.said += 1
        text = f"still here {self.said}"
        self.alice.send({"t": "say", "room": "calm", "text": text})
        assert self.bob.expect(lambda b: b.get("t") == "msg" and b["text"] == text)
        self.alice.expect(lambda b: b.get("t") == "msg" and b["text"] == text)
        self.alice.inbox.clear()
        self.bob.inbox.clear()

    def restarts(self) -> float:
        samples = scrape(self.url)
        return value(samples, "chat_relay_restarts_total", role="worker") + value(
            samples, "chat_relay_restarts_total", role="hub")


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    relay = RelayProcess(workers=2, args=["--metrics", "127.0.0.1:0", "--rate-limit", "0"])
    relay.start()
    try:
        alice = NativePeer.joined(relay.port, "alice", ["calm"])
        bob = NativePeer.joined(relay.port, "bob", ["calm"])
        yield Scene(relay, metrics_url(relay), (relay.worker_pids(), relay.hub_pid()),
                    alice, bob)
    finally:
        relay.stop()


@pytest.fixture
def calm(scene: Scene) -> Iterator[Scene]:
    """The scene, with restarts checked once the test's examples are done."""
    yield scene
    assert scene.restarts() == 0, "".join(scene.relay.output[-40:])


# Hostile values -----------------------------------------------------------------

@dataclass(frozen=True)
class Raw:
    """A value no library will encode for us: its msgpack and JSON bytes by hand."""

    packed: bytes | None  # None: msgpack cannot carry it at all (an int past 64 bits)
    json: str
    label: str


def nested(depth: int, as_map: bool) -> Raw:
    if as_map:
        return Raw(b"\x81\xa1k" * depth + b"\x01", '{"k":' * depth + "1" + "}" * depth,
                   f"map nested {depth}")
    return Raw(b"\x91" * depth + b"\x01", "[" * depth + "1" + "]" * depth,
               f"list nested {depth}")


def huge(n: int) -> Raw:
    return Raw(None, str(n), f"int {n}")


EDGE_INTS = [2**64 - 1, 2**63, 2**63 - 1, -(2**63), 2**32, -1, 0, -(2**31)]
EDGE_TEXT = ["", " ", "\x00", "a\x00b", "\r\n", "\u202e", "\ufeff", "\U0001f600" * 1100,
             "é" * 2100, "x" * 5000, "#" * 65, "lobby\x00", "a b", "\ud800", "日本語"]
scalars = (st.none() | st.booleans() | st.floats() | st.integers(-(2**63), 2**64 - 1)
           | st.sampled_from(EDGE_INTS) | st.sampled_from(EDGE_TEXT) | st.text(max_size=40)
           | st.binary(max_size=40))
any_value = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                         max_leaves=10)
deep = st.builds(nested, st.integers(1000, 1100), st.booleans())
beyond_64 = st.builds(huge, st.sampled_from([2**64, 2**64 + 1, -(2**63) - 1, 10**23,
                                             -(10**23), 99999999999999999999999]))
hostile = any_value | deep | beyond_64

FIELDS = {
    "hello": ("v", "nick", "rooms", "password", "resume"),
    "join": ("room",), "part": ("room",), "say": ("room", "text", "id"),
    "whisper": ("to", "text", "id"), "nick": ("nick",), "who": ("room",),
    "history": ("room", "after", "limit"), "ping": ("id",), "t": ("t",),
}
BASE: dict[str, dict[str, Any]] = {
    "hello": {"t": "hello", "v": 1, "rooms": ["lobby"]},
    "join": {"t": "join", "room": "lobby"}, "part": {"t": "part", "room": "lobby"},
    "say": {"t": "say", "room": "lobby", "text": "hi"},
    "whisper": {"t": "whisper", "to": "alice", "text": "psst"},
    "nick": {"t": "nick", "nick": "renamed"}, "who": {"t": "who", "room": "lobby"},
    "history": {"t": "history", "room": "lobby"}, "ping": {"t": "ping"},
    "t": {"t": "ping"},
}
# The reply each frame type gets when the hostile value happens to be valid.
USUAL = {"hello": "welcome", "join": "joined", "part": "parted", "say": "msg",
         "whisper": "whisper", "nick": "renamed", "who": "members", "history": "history",
         "ping": "pong", "t": "pong"}


@st.composite
def hostile_frames(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(sorted(FIELDS)))
    body = dict(BASE[kind])
    for name in draw(st.lists(st.sampled_from(FIELDS[kind]), min_size=1, max_size=2,
                              unique=True)):
        body[name] = draw(hostile)
    if draw(st.booleans()):
        body[draw(st.text(max_size=6))] = draw(hostile)  # unknown keys are ignored
    if kind == "hello" and isinstance(body.get("nick"), str) and draw(st.booleans()):
        body["nick"] = f"h{next(_nicks)}"
    return kind, body


_packer = msgpack.Packer(unicode_errors="surrogatepass")  # lone surrogates go as they are


def encode_msgpack(body: dict[str, Any]) -> bytes | None:
    """The body as msgpack; None when it holds a value msgpack cannot carry."""
    if any(isinstance(v, Raw) and v.packed is None for v in body.values()):
        return None
    out = [_packer.pack_map_header(len(body))]
    for k, v in body.items():
        out.append(_packer.pack(k) + (v.packed if isinstance(v, Raw) else _packer.pack(v)))
    return b"".join(out)


def encode_json(body: dict[str, Any]) -> str | None:
    parts = []
    for k, v in body.items():
        if not isinstance(k, str):
            return None
        if isinstance(v, Raw):
            text = v.json
        else:
            try:
                text = json.dumps(v, default=lambda b: b.decode("latin-1"))
            except (ValueError, TypeError):
                return None  # NaN is JSON's own problem; bytes are made text above
        parts.append(json.dumps(k) + ":" + text)
    return "{" + ",".join(parts) + "}"


# Senders, one per dialect ----------------------------------------------------------

def answered(got: list[dict[str, Any]], kind: str) -> bool:
    return any(b.get("t") in ("error", USUAL[kind]) for b in got if isinstance(b, dict))


def native_exchange(port: int, kind: str, data: bytes) -> tuple[list[Any], bool]:
    """Send one hostile body (after a hello, unless it is the hello); collect
    what comes back up to the sentinel's pong. Returns (bodies, closed)."""
    p = NativePeer.joined(port, f"n{next(_nicks)}") if kind != "hello" else NativePeer(port)
    try:
        p.send_raw(struct.pack(">I", len(data)) + data)
        return _until_pong(p, kind)
    finally:
        p.close()


def _until_pong(p: NativePeer, kind: str) -> tuple[list[Any], bool]:
    if kind == "hello":  # nothing to ping before a welcome: its answer is the end
        try:
            p.expect(lambda b: b.get("t") in ("welcome", "error"))
        except AssertionError:
            assert p.closed, "no answer to a hostile hello"
            return [], True
        return [{"t": "error"}], False
    p.send({"t": "ping", "id": "sentinel"})
    try:
        p.expect(lambda b: b.get("t") == "pong" and b.get("id") == "sentinel")
    except AssertionError:
        assert p.closed, f"no pong and no close; got {p.inbox[-5:]!r}"
        return p.inbox, True
    return p.inbox, False


@given(hostile_frames())
@example(("ping", {"t": "ping", "id": nested(1000, False)}))
@example(("history", {"t": "history", "room": "lobby", "after": 2**63}))
@example(("say", {"t": "say", "room": "lobby", "text": "x", "id": nested(1020, True)}))
@HOSTILE
def test_native_frames_with_hostile_fields(calm: Scene,
                                           frame_: tuple[str, dict[str, Any]]) -> None:
    kind, body = frame_
    data = encode_msgpack({k: 2**64 - 1 if isinstance(v, Raw) and v.packed is None else v
                           for k, v in body.items()})  # msgpack's largest int instead
    assert data is not None
    got, closed = native_exchange(calm.relay.port, kind, data)
    assert closed or answered(got, kind), (body, got)
    calm.check()


def ws_exchange(port: int, kind: str, payload: str | bytes, binary: bool) -> tuple[list[Any],
                                                                                bool]:
    from tests.dialect_adapters import WsAdapter, WsMsgpackAdapter

    ws = (WsMsgpackAdapter if binary else WsAdapter)(port)
    try:
        if kind != "hello":
            ws.send({"t": "hello", "v": 1, "nick": f"w{next(_nicks)}"})
            ws.expect(lambda b: b.get("t") == "welcome")
        try:
            ws.ws.send(payload)
        except Exception:
            return [], True
        if kind == "hello":
            try:
                ws.expect(lambda b: b.get("t") in ("welcome", "error"))
            except AssertionError:
                assert ws.closed, "no answer to a hostile hello"
                return [], True
            return [{"t": "error"}], False
        try:
            ws.send({"t": "ping", "id": "sentinel"})
            ws.expect(lambda b: b.get("t") == "pong" and b.get("id") == "sentinel")
        except Exception:
            assert ws.closed, f"no pong and no close; got {ws.inbox[-5:]!r}"
            return ws.inbox, True
        return ws.inbox, False
    finally:
        ws.close()


@given(hostile_frames(), st.booleans())
@example(("history", {"t": "history", "room": "lobby", "limit": huge(10**23)}), False)
@example(("ping", {"t": "ping", "id": nested(1100, False)}), False)
@HOSTILE
def test_websocket_messages_with_hostile_fields(calm: Scene, frame_: tuple[str, dict[str, Any]],
                                               binary: bool) -> None:
    kind, body = frame_
    payload: str | bytes | None = encode_msgpack(body) if binary else encode_json(body)
    if payload is None:
        payload = encode_json(body) or json.dumps({"t": kind})
        binary = False
    got, closed = ws_exchange(calm.relay.port, kind, payload, binary)
    assert closed or answered(got, kind), (body, got)
    calm.check()


# Line dialects -------------------------------------------------------------------

line_values = (st.sampled_from(EDGE_TEXT).map(lambda s: s.replace("\n", " ").replace("\r", " "))
               | st.sampled_from([str(n) for n in EDGE_INTS])
               | st.sampled_from(["18446744073709551616", "99999999999999999999999", "-1",
                                  "1" * 5000, "9" * 400])
               | st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=30))
TEXT_COMMANDS = ["/history lobby {}", "/history {} {}", "/join {}", "/part {}", "/nick {}",
                 "/who {}", "/msg {} {}", "/history {}", "/rooms {}", "/help {}", "{}"]
IRC_COMMANDS = ["JOIN {}", "PART {}", "PRIVMSG {} :{}", "NAMES {}", "WHO {}", "TOPIC {}",
                "MODE {} {}", "NICK {}", "LIST {}", "NOTICE {} :{}", "WHOIS {}", "{} {}"]


@st.composite
def lines(draw: st.DrawFn, commands: list[str]) -> str:
    template = draw(st.sampled_from(commands))
    return template.format(*[draw(line_values) for _ in range(template.count("{}"))])


@given(lines(TEXT_COMMANDS), st.binary(max_size=8))
@HOSTILE
def test_text_lines_with_hostile_arguments(calm: Scene, line: str, junk: bytes) -> None:
    t = TextPeer(calm.relay.port)
    try:
        t.expect_text("welcome")
        t.sock.sendall(line.encode("utf-8", "surrogatepass") + junk.replace(b"\n", b"") + b"\n")
        t.send_line("/ping")
        try:
            t.expect_text("* pong")
            closed = False
        except AssertionError:
            assert t.closed, f"no pong and no close; got {t.lines[-5:]!r}"
            closed = True
        if line.startswith("/") and not closed:
            assert any(x.startswith("* ") for x in t.lines), (line, t.lines)
    finally:
        t.close()
    calm.check()


@given(lines(IRC_COMMANDS))
@HOSTILE
def test_irc_lines_with_hostile_parameters(calm: Scene, line: str) -> None:
    from tests.dialect_adapters import IrcAdapter

    irc = IrcAdapter(calm.relay.port)
    try:
        irc.connect(f"i{next(_nicks)}")
        irc.line(line.encode("utf-8", "surrogatepass").decode("utf-8", "replace") + "\r")
        irc.line("PING sentinel\r")
        try:
            irc.expect_line(r"PONG .*sentinel")
        except AssertionError:
            assert irc.peer.closed, "no PONG and no close"
    finally:
        irc.close()
    calm.check()


# The two crashes issue 19 reproduced, and the error budget ------------------------

def test_history_past_64_bits_costs_only_the_sender(calm: Scene) -> None:
    t = TextPeer(calm.relay.port)
    t.expect_text("welcome")
    t.send_line("/history lobby 99999999999999999999999")
    t.expect(lambda line: line.startswith("* error:"))
    t.send_line("/ping")
    t.expect_text("* pong")
    calm.check()


@pytest.mark.parametrize("depth", [1000, 1022])
def test_ping_id_nested_1000_deep_costs_only_the_sender(calm: Scene, depth: int) -> None:
    data = encode_msgpack({"t": "ping", "id": nested(depth, False)})
    assert data is not None
    got, closed = native_exchange(calm.relay.port, "ping", data)
    assert closed or any(b.get("t") == "error" for b in got), got
    calm.check()


def _count_replies(p: NativePeer) -> tuple[int, list[Any]]:
    p.wait_closed(20)
    return len(p.inbox), p.inbox


def test_5000_malformed_frames_get_100_replies_then_a_close(relay_factory: RelayFactory
                                                            ) -> None:
    relay = relay_factory(workers=1, args=["--rate-limit", "0"])
    p = NativePeer.joined(relay.port, "garbage")
    p.drain(0.2)
    bad = struct.pack(">I", 3) + b"\xc1\xc1\xc1"  # never-used msgpack bytes: bad_frame
    p.send_raw(bad * 5000)
    count, got = _count_replies(p)
    print(f"5,000 malformed frames: {count} replies, then a close")
    codes = [b.get("code") for b in got]
    assert codes == ["bad_frame"] * 100 + ["too_many_errors"], codes[-5:]


def test_5000_unknown_types_through_the_hub_are_budgeted_too(relay_factory: RelayFactory
                                                              ) -> None:
    relay = relay_factory(workers=1, args=["--rate-limit", "0"])
    p = NativePeer.joined(relay.port, "unknown")
    p.drain(0.2)
    p.send_raw(frame({"t": "frobnicate"}) * 5000)
    count, got = _count_replies(p)
    print(f"5,000 unknown-type frames: {count} replies, then a close")
    codes = [b.get("code") for b in got]
    assert codes == ["unknown_type"] * 100 + ["too_many_errors"], codes[-5:]


def test_5000_unknown_irc_commands_are_budgeted_like_frames(relay_factory: RelayFactory
                                                             ) -> None:
    """The IRC gateway answers 421 itself, without the relay: still charged."""
    relay = relay_factory(workers=1, args=["--rate-limit", "0"])
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    sock.sendall(b"NICK ircfrob\r\nUSER ircfrob 0 * :x\r\n")
    got = b""
    while b" 001 " not in got:
        got += sock.recv(65536)
    sock.sendall(b"FROB\r\n" * 5000)
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    sock.close()
    print(f"5,000 unknown IRC commands: {got.count(b' 421 ')} 421 replies, then a close")
    assert got.count(b" 421 ") <= 101 and b"too_many_errors" in got


def test_error_budget_at_its_bound(relay_factory: RelayFactory) -> None:
    relay = relay_factory(workers=1, args=["--rate-limit", "0", "--max-errors", "3"])
    p = NativePeer.joined(relay.port, "edge")
    for _ in range(3):
        p.send({"t": "say", "room": "nowhere", "text": "x"})  # not_in_room, from the hub
    for _ in range(3):
        p.expect_error("not_in_room")
    p.send({"t": "ping", "id": 1})
    p.expect(lambda b: b.get("t") == "pong")  # three errors: still open
    p.send({"t": "dance"})  # the fourth within 10 s
    p.expect_error("too_many_errors")
    p.wait_closed()
    bystander = NativePeer.joined(relay.port, "fine")
    bystander.send({"t": "ping"})
    bystander.expect(lambda b: b.get("t") == "pong")
