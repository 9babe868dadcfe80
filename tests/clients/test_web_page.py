"""The web chat page (transports/webpage/) in a real browser against a real relay.

Debian's chromium, headless, driven by Playwright (never a browser Playwright
downloads). `make test` installs chromium with tests/ensure_apt.sh;
where it cannot be installed these tests skip and say why.

Two pages (a desktop-sized one and a phone-sized one) chat with each other
and with a native client in one room. The run saves screenshots of both to
$CHAT_RELAY_SCREENSHOTS (`make screenshots` points it at docs/screenshots/ for
the README), else to pytest's temporary directory, so `make test` leaves the
tree clean.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from tests.colour import contrast, rgb, worst_pair
from tests.relayproc import ROOT, UNIT, RelayProcess
from tests.wire import NativePeer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SKIP_FILE = ROOT / ".venv" / "chromium-unavailable"  # written by tests/ensure_apt.sh
SHOTS_ENV = "CHAT_RELAY_SCREENSHOTS"
# Playwright makes a fresh user-data-dir per launch (it refuses --user-data-dir
# in args) and every context starts with empty storage.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1100, "height": 680}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 5000 * UNIT


def _unavailable() -> str | None:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        why = SKIP_FILE.read_text().strip() if SKIP_FILE.exists() else "not installed"
        return f"BROWSER TEST SKIPPED: no chromium at {CHROMIUM} ({why}); " \
               "run `sh tests/ensure_apt.sh chromium chromium /usr/bin/chromium` as root"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "BROWSER TEST SKIPPED: the playwright package is missing (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM, args=ARGS, headless=True, timeout=30000 * UNIT
        )
        try:
            yield chromium
        finally:
            chromium.close()


class WebUser:
    """One page in its own fresh browser context, logged in as `nick`."""

    def __init__(self, browser: Browser, port: int, nick: str, viewport: dict[str, int],
                 phone: bool = False, rooms: str = "lobby") -> None:
        self.nick = nick
        self.context = browser.new_context(
            viewport=viewport,  # type: ignore[arg-type]
            is_mobile=phone,
            has_touch=phone,
            device_scale_factor=2 if phone else 1,
        )
        self.page: Page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", self._console)
        self.page.goto(f"http://127.0.0.1:{port}/")
        self.page.fill("#nick", nick)
        self.page.fill("#rooms", rooms)
        self.page.click("#login button[type=submit]")
        expect = _expect()
        expect(self.page.locator("#chat")).to_be_visible()
        expect(self.page.locator("#status")).to_have_text("online")
        expect(self.members()).to_contain_text([nick])

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(msg.text)

    def members(self) -> Any:
        return self.page.locator("#member-list li")

    def messages(self) -> Any:
        """The message lines of the room on screen."""
        return self.page.locator(".room-log:not([hidden]) .line.msg")

    def type(self, text: str) -> None:
        self.page.fill("#say", text)
        self.page.press("#say", "Enter")

    def close(self) -> None:
        self.context.close()


def _expect() -> Callable[..., Any]:
    from playwright.sync_api import expect

    return expect


def _msg_texts(user: WebUser) -> list[tuple[str, str, int]]:
    """(from, text, seq) of every message line on screen, top to bottom."""
    out = []
    for row in user.messages().evaluate_all(
        "els => els.map(e => [e.querySelector('.from').textContent, "
        "e.lastChild.textContent, e.title])"
    ):
        out.append((row[0], row[1], int(row[2].lstrip("#"))))
    return out


def _wait(pred: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout * UNIT
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def people(cleanup: list[Any]) -> list[Any]:
    return cleanup


def test_two_pages_and_a_native_client_chat(
    browser: Browser, relay: RelayProcess, people: list[Any], tmp_path: Path
) -> None:
    expect = _expect()
    ann = WebUser(browser, relay.port, "ann", DESKTOP)
    people.append(ann)
    bob = WebUser(browser, relay.port, "bob", PHONE, phone=True)
    people.append(bob)
    # Presence: ann sees bob arrive, in the list and as a line.
    expect(ann.members()).to_have_text(["ann", "bob"])
    expect(ann.page.locator(".line.info", has_text="bob joined")).to_be_visible()

    nat = NativePeer.joined(relay.port, "nat", ["lobby"])
    people.append(nat)
    expect(ann.members()).to_have_text(["ann", "bob", "nat"])
    expect(bob.members()).to_have_text(["ann", "bob", "nat"])

    ann.type("hi all, from a browser")
    got = nat.expect(lambda b: b.get("t") == "msg" and b["from"] == "ann")
    assert got["text"] == "hi all, from a browser"
    expect(bob.messages().last).to_contain_text("hi all, from a browser")
    nat.send({"t": "say", "room": "lobby", "text": "hello from the terminal"})
    bob.type("and one from a phone, ünïcödé ✓")
    assert nat.expect(lambda b: b.get("t") == "msg" and b["from"] == "bob")["text"] == (
        "and one from a phone, ünïcödé ✓"
    )
    nat.send({"t": "say", "room": "lobby", "text": "all three of us, one room"})
    for user in (ann, bob):
        expect(user.messages()).to_have_count(4)
    # Both pages show the same lines in the relay's seq order.
    shown = _msg_texts(ann)
    assert shown == _msg_texts(bob)
    seqs = [seq for _, _, seq in shown]
    assert seqs == list(range(seqs[0], seqs[0] + 4)), shown
    assert [who for who, _, _ in shown] == ["ann", "nat", "bob", "nat"]
    # A page's own messages are marked as such.
    expect(ann.page.locator(".line.msg.mine")).to_have_count(1)

    # Whispers both ways between a page and the native client.
    ann.type("/msg nat psst, only you see this")
    got = nat.expect(lambda b: b.get("t") == "whisper")
    assert (got["from"], got["text"]) == ("ann", "psst, only you see this")
    nat.send({"t": "whisper", "to": "bob", "text": "and a secret for bob"})
    expect(bob.page.locator(".line.whisper")).to_contain_text("nat: and a secret for bob")
    expect(ann.page.locator(".line.whisper")).to_contain_text("nat: psst, only you see this")

    # Bad input from the page: a join with an invalid room name shows the error.
    ann.type("/join bad room!")
    expect(ann.page.locator(".line.err")).to_contain_text("room_invalid")

    # The phone's member pane slides in on demand.
    bob.page.click("#toggle-members")
    expect(bob.page.locator("#members-pane")).to_be_in_viewport()
    bob.page.click("#toggle-members")
    expect(bob.page.locator("#members-pane")).not_to_be_in_viewport()

    shots = Path(os.environ.get(SHOTS_ENV) or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    ann.page.screenshot(path=str(shots / "web-chat.png"))
    bob.page.screenshot(path=str(shots / "web-chat-phone.png"))
    assert (shots / "web-chat.png").stat().st_size > 0

    # /quit leaves cleanly: everyone sees bob go.
    bob.type("/quit")
    got = nat.expect(lambda b: b.get("t") == "presence" and b["nick"] == "bob")
    assert got["event"] == "part"
    expect(ann.members()).to_have_text(["ann", "nat"])
    expect(bob.page.locator("#status")).to_have_text("offline")
    assert ann.errors == [] and bob.errors == [], (ann.errors, bob.errors)


def test_reconnect_resumes_and_marks_a_gap(
    browser: Browser, relay_factory: Callable[..., RelayProcess], people: list[Any]
) -> None:
    """A page that was away longer than the room's history shows "missed N messages"."""
    expect = _expect()
    relay = relay_factory(workers=1, args=["--rate-limit", "0", "--history", "3"])
    ann = WebUser(browser, relay.port, "ann", DESKTOP)
    people.append(ann)
    nat = NativePeer.joined(relay.port, "nat", ["lobby"])
    people.append(nat)
    nat.send({"t": "say", "room": "lobby", "text": "before"})
    expect(ann.messages()).to_have_count(1)

    # Cut the page's socket; it reconnects by itself (after 1 s) and resumes.
    ann.page.evaluate("state.ws.close()")
    expect(ann.page.locator("#status")).to_contain_text("offline")
    nat.expect(lambda b: b.get("t") == "presence" and b["nick"] == "ann"
               and b["event"] == "part")
    for i in range(1, 7):
        nat.send({"t": "say", "room": "lobby", "text": f"while away {i}"})
    nat.msgs("lobby", 7)  # "before" and the six
    expect(ann.page.locator("#status")).to_have_text("online", timeout=10000 * UNIT)
    gap = ann.page.locator(".gap")
    # The relay kept the last three: the marker says what is gone (nothing to
    # load), the three follow it, nothing shows twice.
    expect(gap).to_have_text("missed 3 messages: no longer in the relay's history")
    expect(ann.messages()).to_have_count(4)
    assert [t for _, t, _ in _msg_texts(ann)] == [
        "before", "while away 4", "while away 5", "while away 6"]
    order = ann.page.locator(".room-log:not([hidden]) > div").evaluate_all(
        "els => els.map(e => e.classList.contains('gap') ? 'gap' : e.title)")
    assert [x for x in order if x][-4:] == ["gap", "#5", "#6", "#7"], order
    # Live traffic after the gap continues normally.
    nat.send({"t": "say", "room": "lobby", "text": "welcome back"})
    expect(ann.messages().last).to_contain_text("welcome back")
    assert ann.errors == [], ann.errors



# What the page's CSP and the relay's Origin check hold back, in the browser ----------


class _EvilPage(BaseHTTPRequestHandler):
    """Another site: a blank page on another port of the same host."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = b"<!doctype html><title>another site</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Stopper:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# Resolves with what happened to a WebSocket: "open", "closed <code>", or the
# CSP directive that blocked it.
_TRY_WS = """url => new Promise(resolve => {
  document.addEventListener("securitypolicyviolation",
                            ev => resolve("csp " + ev.effectiveDirective));
  try {
    const ws = new WebSocket(url);
    ws.onopen = () => { resolve("open"); ws.close(); };
    ws.onclose = ev => resolve("closed " + ev.code);
  } catch (err) { resolve("threw " + err.name); }
})"""


def test_the_csp_holds_and_other_sites_cannot_open_the_relay(
    browser: Browser, relay: RelayProcess, people: list[Any]
) -> None:
    ann = WebUser(browser, relay.port, "ann", DESKTOP)
    people.append(ann)
    page = ann.page
    own = f"ws://127.0.0.1:{relay.port}/ws"
    # connect-src 'self' lets the page reach its own relay, and nothing else.
    assert page.evaluate(_TRY_WS, own) == "open"
    assert page.evaluate(_TRY_WS, "ws://127.0.0.2:9/ws") == "csp connect-src"
    # No inline script runs, whatever a message might smuggle in.
    page.evaluate("""() => { const s = document.createElement("script");
                             s.textContent = "window.pwned = 1"; document.body.append(s); }""")
    assert page.evaluate("window.pwned") is None
    ann.errors.clear()  # the violations above were logged on purpose

    # A page from another site (another port is another origin), in the same
    # browser, gets 403 for the upgrade: the browser reports only 1006.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EvilPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    people.append(_Stopper(server))
    evil = browser.new_context()
    people.append(evil)
    other = evil.new_page()
    other.set_default_timeout(WAIT_MS)
    other.goto(f"http://127.0.0.1:{server.server_address[1]}/")
    assert other.evaluate(_TRY_WS, own) == "closed 1006"
    with pytest.raises(InvalidStatus) as refused:  # what the browser was told
        with connect(own, origin=Origin(f"http://127.0.0.1:{server.server_address[1]}")):
            pass
    assert refused.value.response.status_code == 403

    # The relay's own page, served under another name for the same host, still works.
    page.goto(f"http://localhost:{relay.port}/")
    assert page.evaluate(_TRY_WS, f"ws://localhost:{relay.port}/ws") == "open"
    assert ann.errors == [], ann.errors


def test_page_speaks_the_shared_slash_commands_and_the_relays_text_limit(
    browser: Browser, relay_factory: Callable[..., RelayProcess], people: list[Any]
) -> None:
    """Issue 22: /history N and /ping as in chat-client and nc; over-long input is
    refused before sending, with the limit the relay gave in its welcome."""
    expect = _expect()
    # No join replay: the page then shows only what /history brings.
    relay = relay_factory(args=["--max-text", "100", "--rate-limit", "0", "--join-replay", "0"])
    nat = NativePeer.joined(relay.port, "nat", ["lobby"])
    people.append(nat)
    for i in range(8):
        nat.send({"t": "say", "room": "lobby", "text": f"old {i}"})
    nat.expect(lambda b: b.get("t") == "msg" and b["text"] == "old 7")
    ann = WebUser(browser, relay.port, "ann", DESKTOP)
    people.append(ann)
    ann.type("/history 5")
    expect(ann.page.locator(".line.info", has_text="history of #lobby: 5 messages")
           ).to_be_visible()
    expect(ann.messages()).to_have_count(5)
    assert [text for _, text, _ in _msg_texts(ann)] == [f"old {i}" for i in range(3, 8)]
    ann.type("/ping")
    expect(ann.page.locator(".line.info", has_text="pong:")).to_contain_text("ms round trip")
    # At the bound: 100 bytes go; 101 are refused here, with the limit, and kept.
    ann.type("x" * 100)
    assert nat.expect(lambda b: b.get("t") == "msg" and b["from"] == "ann")["text"] == "x" * 100
    ann.type("é" * 50 + "y")  # 101 bytes in UTF-8, 51 characters
    expect(ann.page.locator(".line.err")).to_contain_text(
        "not sent: your message is 101 bytes; this relay takes at most 100")
    assert ann.page.input_value("#say") == "é" * 50 + "y"
    ann.type("/help")
    expect(ann.page.locator(".line.info", has_text="/history [N]")).to_be_visible()
    ann.type("after")
    got = nat.expect(lambda b: b.get("t") == "msg" and b["from"] == "ann")
    assert got["text"] == "after"  # the refused line never reached the relay


def test_join_shows_the_latest_messages_under_a_divider(
    browser: Browser, relay: RelayProcess, people: list[Any]
) -> None:
    """A page joining a room with 30 messages shows the latest 20 as earlier ones."""
    expect = _expect()
    nat = NativePeer.joined(relay.port, "nat", ["lobby"])
    people.append(nat)
    for i in range(1, 31):
        nat.send({"t": "say", "room": "lobby", "text": f"m{i}"})
    nat.msgs("lobby", 30)
    ann = WebUser(browser, relay.port, "ann", DESKTOP)
    people.append(ann)
    log = ann.page.locator(".room-log:not([hidden])")
    expect(log.locator(".divider")).to_have_text(["earlier messages", "end of earlier messages"])
    expect(log.locator(".line.msg.earlier")).to_have_count(20)
    nat.send({"t": "say", "room": "lobby", "text": "live"})
    expect(ann.messages().last).to_contain_text("live")
    shown = _msg_texts(ann)
    assert shown == [("nat", f"m{i}", i) for i in range(11, 31)] + [("nat", "live", 31)]
    # Top to bottom: divider, the 20, end divider, then live traffic; no gap marker.
    order = log.locator("> div").evaluate_all(
        "els => els.map(e => e.classList.contains('divider') ? 'divider' : "
        "e.classList.contains('earlier') ? 'earlier' : e.classList.contains('msg') ? 'live' : "
        "e.classList.contains('gap') ? 'gap' : 'other')")
    kept = [x for x in order if x != "other"]
    assert kept == ["divider"] + ["earlier"] * 20 + ["divider", "live"], order
    # Each earlier line carries the time it was said (from its ts).
    expect(log.locator(".line.msg.earlier time").first).to_have_text(re.compile(r"\d"))
    assert ann.errors == [], ann.errors


# Relay restarts and shutdowns, as chat-client tells them (issue 22) -----------------


SHUTDOWN_NOTICE = "the relay is shutting down; reconnecting when it is back"
RESTART_LINE = "#lobby: the relay restarted; messages before it are gone"


def _faults(user: WebUser) -> list[str]:
    """The page's errors but the browser's own log of each reconnect attempt
    that found the relay down (net::ERR_CONNECTION_REFUSED and the like)."""
    return [e for e in user.errors
            if not re.fullmatch(r"WebSocket connection to '\S+' failed: .*net::ERR_\w+", e)]


def _log_text(user: WebUser, room: str = "lobby") -> str:
    """Everything a room's log says, hidden lines and markers included."""
    return str(user.page.evaluate("name => state.rooms.get(name).el.textContent", room))


def _seen_three(relay: RelayProcess, people: list[Any], browser: Browser) -> WebUser:
    """ann on the page has seen m0..m2 (seq 1..3) from nat in lobby."""
    ann = WebUser(browser, relay.port, "ann", DESKTOP)
    people.append(ann)
    nat = NativePeer.joined(relay.port, "nat", ["lobby"])
    people.append(nat)
    for i in range(3):
        nat.send({"t": "say", "room": "lobby", "text": f"m{i}"})
    _expect()(ann.messages()).to_have_count(3)
    return ann


def _after_restart(ann: WebUser, port: int) -> dict[str, Any]:
    """Once the page is back on the relay at `port`, nat says "after"; its msg."""
    expect = _expect()
    expect(ann.page.locator("#status")).to_have_text("online", timeout=30000 * UNIT)
    expect(ann.members()).to_contain_text(["ann"])  # resumed: `joined` came
    nat = NativePeer.joined(port, "nat", ["lobby"])
    try:
        nat.send({"t": "say", "room": "lobby", "text": "after"})
        got = nat.expect(lambda b: b.get("t") == "msg" and b["text"] == "after")
    finally:
        nat.close()
    expect(ann.messages().last).to_contain_text("after")
    return got


def test_shutdown_is_a_grey_notice_and_the_page_keeps_reconnecting(
    browser: Browser, relay_factory: Callable[..., RelayProcess], people: list[Any]
) -> None:
    """Issue 22: a planned shutdown is news, not a red error."""
    expect = _expect()
    relay = relay_factory(workers=1)
    ann = WebUser(browser, relay.port, "ann", DESKTOP)
    people.append(ann)
    relay.stop()
    notice = ann.page.locator(".line.info", has_text=SHUTDOWN_NOTICE)
    expect(notice).to_have_count(1)
    assert notice.evaluate("e => getComputedStyle(e).color") == "rgb(93, 102, 119)"  # grey
    expect(ann.page.locator(".line.err")).to_have_count(0)
    expect(ann.page.locator("#status")).to_contain_text("offline: reconnecting in")
    assert _faults(ann) == [], ann.errors


def test_restart_without_history_db_says_so_once_and_counts_nothing(
    browser: Browser, relay_factory: Callable[..., RelayProcess], people: list[Any]
) -> None:
    """A new epoch: one restart line, no "missed", and the new relay's seq 1 is shown."""
    expect = _expect()
    relay = relay_factory(workers=1)
    ann = _seen_three(relay, people, browser)
    port = relay.port
    relay.stop()
    expect(ann.page.locator(".line.info", has_text=SHUTDOWN_NOTICE)).to_have_count(1)
    relay_factory(workers=1, port=port)
    assert _after_restart(ann, port)["seq"] == 1
    expect(ann.page.locator(".line.info", has_text=RESTART_LINE)).to_have_count(1)
    assert [t for _, t, _ in _msg_texts(ann)] == ["m0", "m1", "m2", "after"]
    expect(ann.page.locator(".gap")).to_have_count(0)
    assert "missed" not in _log_text(ann)
    expect(ann.page.locator(".line.err")).to_have_count(0)
    assert _faults(ann) == [], ann.errors


def test_restart_with_history_db_is_a_plain_resume(
    browser: Browser, relay_factory: Callable[..., RelayProcess], people: list[Any],
    tmp_path: Path
) -> None:
    expect = _expect()
    args = ["--rate-limit", "0", "--history-db", str(tmp_path / "history.db")]
    relay = relay_factory(workers=1, args=args)
    ann = _seen_three(relay, people, browser)
    port = relay.port
    relay.stop()
    relay_factory(workers=1, args=args, port=port)
    assert _after_restart(ann, port)["seq"] == 4
    assert [t for _, t, _ in _msg_texts(ann)] == ["m0", "m1", "m2", "after"]
    log = _log_text(ann)
    assert "restarted" not in log and "missed" not in log, log
    expect(ann.page.locator(".gap")).to_have_count(0)
    assert _faults(ann) == [], ann.errors


@pytest.mark.parametrize("history", [500, 1])
def test_restart_shows_what_was_said_before_the_page_came_back(
    browser: Browser, relay_factory: Callable[..., RelayProcess], people: list[Any],
    history: int
) -> None:
    """The new relay's room has seq 2 when the page resumes from 3: its two
    messages are fetched and shown under the restart line, not counted. With
    room for one in history, the other is counted where it is missing."""
    expect = _expect()
    args = ["--rate-limit", "0", "--history", str(history)]
    relay = relay_factory(workers=1, args=args)
    ann = _seen_three(relay, people, browser)
    port = relay.port
    relay.stop()
    # Hold the page's reconnect (a /quit'ing page does not retry) while the
    # new relay gets two messages.
    ann.page.evaluate("state.quitting = true")
    expect(ann.page.locator("#status")).to_have_text("offline", timeout=20000 * UNIT)
    relay_factory(workers=1, args=args, port=port)
    nat = NativePeer.joined(port, "nat", ["lobby"])
    people.append(nat)
    for text in ("r1", "r2"):
        nat.send({"t": "say", "room": "lobby", "text": text})
    nat.msgs("lobby", 2)
    ann.page.evaluate("state.quitting = false; connect()")
    kept = [("r1", 1), ("r2", 2)][-history:]
    expect(ann.messages()).to_have_count(3 + len(kept))
    nat.send({"t": "say", "room": "lobby", "text": "live"})
    expect(ann.messages()).to_have_count(4 + len(kept))
    assert [(t, s) for _, t, s in _msg_texts(ann)] == [
        ("m0", 1), ("m1", 2), ("m2", 3), *kept, ("live", 3)]
    order = ann.page.locator(".room-log:not([hidden]) > div").evaluate_all(
        "els => els.map(e => e.classList.contains('gap') ? 'gap' : "
        "e.textContent.includes('the relay restarted') ? 'restart' : e.title)")
    after = ["#1", "#2", "#3"] if history > 1 else ["gap", "#2", "#3"]
    assert [x for x in order if x] == ["#1", "#2", "#3", "restart", *after], order
    expect(ann.page.locator(".line.info", has_text=RESTART_LINE)).to_have_count(1)
    if history > 1:
        assert "missed" not in _log_text(ann)
    else:
        expect(ann.page.locator(".gap")).to_have_text(
            "missed 1 message: no longer in the relay's history")
    assert _faults(ann) == [], ann.errors


# Frames as a relay whose hub alone restarted sends them (its seq goes on): fed to
# the page's handler, since a real hub restart keeps the page's connection.
_RESUME_ACROSS_A_HUB_RESTART = """epochStep => {
  const epoch = state.epoch;
  const msg = (seq, text) => ({t: "msg", room: "side", seq: seq, ts: Date.now(),
                                from: "bob", text: text});
  handle({t: "joined", room: "side", members: ["ann", "bob"], seq: 10});
  handle(msg(11, "before"));
  handle({t: "welcome", nick: "ann", server: "x", epoch: epoch + epochStep});
  handle({t: "joined", room: "side", members: ["ann", "bob"], seq: 14});
  handle({t: "error", code: "history_gap", room: "side", ref: "hello", text: "gone"});
  handle(msg(13, "after"));
  handle(msg(14, "live"));
  return state.rooms.get("side").el.textContent;
}"""


def test_new_epoch_with_the_seq_going_on_is_one_line_and_no_count(
    browser: Browser, relay: RelayProcess, people: list[Any]
) -> None:
    """As chat-client (tests/integration/test_first_run.py::test_new_epoch_with_seq_going_on_...):
    a new epoch absorbs the jump; the same epoch counts it."""
    ann = WebUser(browser, relay.port, "ann", DESKTOP)
    people.append(ann)
    text = ann.page.evaluate(_RESUME_ACROSS_A_HUB_RESTART, 1)
    assert text.count("the relay restarted; messages before it are gone") == 1, text
    assert "missed" not in text and "after" in text and "live" in text, text
    ann.page.evaluate("() => { state.rooms.get('side').el.remove(); state.rooms.delete('side'); }")
    text = ann.page.evaluate(_RESUME_ACROSS_A_HUB_RESTART, 0)
    assert "restarted" not in text, text
    assert "missed 1 message: no longer in the relay's history" in text, text
    assert ann.errors == [], ann.errors


# Nick colours ----------------------------------------------------------------------


NICKS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]


def test_the_first_eight_nicks_of_a_room_get_eight_distinct_readable_colours(
    browser: Browser, relay: RelayProcess, people: list[Any]
) -> None:
    """Issue 22: no two of the first 8 nicks share a colour or nearly do, and
    every colour reads on the message pane; the page picks chat-client's slot."""
    from clients.render import NICK_COLOURS, nick_colour

    expect = _expect()
    ann = WebUser(browser, relay.port, "ann", DESKTOP)
    people.append(ann)
    for nick in NICKS:
        peer = NativePeer.joined(relay.port, nick, ["lobby"])
        people.append(peer)
        peer.send({"t": "say", "room": "lobby", "text": f"hi from {nick}"})
        peer.expect(lambda b, nick=nick: b.get("t") == "msg" and b["from"] == nick)
    expect(ann.messages()).to_have_count(8)
    shown = ann.messages().evaluate_all(
        "els => els.map(e => [e.querySelector('.from').textContent, "
        "getComputedStyle(e.querySelector('.from')).color])")
    assert [nick for nick, _ in shown] == NICKS
    colours = [rgb(css) for _, css in shown]
    assert len(set(colours)) == 8, shown
    assert worst_pair(colours) >= 35, shown
    pane = rgb(ann.page.locator("#messages").evaluate(
        "e => getComputedStyle(e).backgroundColor"))
    assert min(contrast(c, pane) for c in colours) >= 4.5, (shown, pane)
    # The whole palette holds the same bounds, slot for slot with chat-client's.
    palette = [rgb(c) for c in ann.page.evaluate("NICK_COLOURS")]
    assert len(palette) == len(NICK_COLOURS)
    assert worst_pair(palette) >= 35
    assert min(contrast(c, pane) for c in palette) >= 4.5
    for nick in [*NICKS, "Alice", "user7", "x"]:
        assert ann.page.evaluate("nickSlot", nick) == NICK_COLOURS.index(nick_colour(nick))
    # Colours are per room and kept: a message later in the room keeps alice's.
    people[1].send({"t": "say", "room": "lobby", "text": "again"})
    expect(ann.messages()).to_have_count(9)
    assert ann.messages().last.locator(".from").evaluate(
        "e => getComputedStyle(e).color") == shown[0][1]
    assert ann.errors == [], ann.errors  # no CSP violation from setting the colours


def test_me_is_an_action_both_ways_and_quit_takes_a_reason(
    browser: Browser, relay: RelayProcess, people: list[Any]
) -> None:
    """`/me waves` reads "* ann waves" everywhere; `/quit REASON` reaches others."""
    expect = _expect()
    ann = WebUser(browser, relay.port, "ann", DESKTOP)
    people.append(ann)
    nat = NativePeer.joined(relay.port, "nat", ["lobby"])
    people.append(nat)
    ann.type("/me waves")
    got = nat.expect(lambda b: b.get("t") == "msg" and b["from"] == "ann")
    assert (got["text"], got.get("action")) == ("waves", True)
    nat.send({"t": "say", "room": "lobby", "text": "grins", "action": True})
    actions = ann.page.locator(".line.msg.action")
    expect(actions).to_have_count(2)
    assert [re.sub(r"^.*?(?=\* )", "", t) for t in actions.all_text_contents()] == [
        "* ann waves", "* nat grins"]
    ann.type("/quit gone home")
    got = nat.expect(lambda b: b.get("t") == "presence" and b["nick"] == "ann")
    assert (got["event"], got.get("reason")) == ("part", "gone home")
    expect(ann.page.locator("#status")).to_have_text("offline")
    assert ann.errors == [], ann.errors
