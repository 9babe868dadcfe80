"""IRCv3 with real IRC clients: WeeChat and irssi in tmux panes against a real
relay, next to a native client; assertions read the captured screens.

`make unit` installs both with tests/ensure_apt.sh; where it cannot, the tests
skip and say why. tmux runs on a private socket per pane, so a test only ever
stops its own server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clients.test_web_page import (
    DESKTOP,
    WebUser,
    _expect,
    browser,  # noqa: F401  (the module's chromium fixture)
)
from tests.integration.test_ircv3_relay import Irc
from tests.relayproc import UNIT, RelayProcess
from tests.wire import NativePeer

TMUX = shutil.which("tmux")
WEECHAT = shutil.which("weechat") or shutil.which("weechat-curses")
IRSSI = shutil.which("irssi")
VENV = Path(__file__).resolve().parents[2] / ".venv"


def _why_missing(name: str, path: str | None) -> str:
    marker = VENV / f"{name}-unavailable"
    missing = [n for n, p in ((name, path), ("tmux", TMUX)) if p is None]
    note = f"; {marker.read_text().strip()}" if marker.exists() else ""
    return f"needs {name} and tmux (missing: {', '.join(missing)}{note})"


class Pane:
    """One terminal program in a detached tmux session on a private server socket."""

    def __init__(self, home: Path, command: str) -> None:
        assert TMUX is not None
        self.socket = f"chat-relay-test-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "TERM": "xterm-256color", "LANG": "C.UTF-8",
                    "LC_ALL": "C.UTF-8", "HOME": str(home)}
        self.tmux("new-session", "-d", "-s", "chat", "-x", "160", "-y", "50", command)

    def tmux(self, *args: str) -> str:
        assert TMUX is not None
        done = subprocess.run([TMUX, "-L", self.socket, "-f", "/dev/null", *args],
                              env=self.env, capture_output=True, text=True,
                              timeout=10 * UNIT)
        if done.returncode != 0:
            raise AssertionError(f"tmux {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-t", "chat", "-l", line)
        self.tmux("send-keys", "-t", "chat", "Enter")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", "chat")

    def wait_for(self, pred: Callable[[str], bool], what: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout * UNIT
        while True:
            text = self.screen()
            if pred(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"the client never showed {what}; screen:\n{text}")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self.tmux("kill-server")  # our private server only (-L)
        except (AssertionError, subprocess.TimeoutExpired):
            pass


def _weechat_version() -> tuple[int, int]:
    assert WEECHAT is not None
    out = subprocess.run([WEECHAT, "--version"], capture_output=True, text=True,
                         timeout=10).stdout
    m = re.match(r"(\d+)\.(\d+)", out.strip())
    return (int(m[1]), int(m[2])) if m else (0, 0)


@pytest.fixture
def weechat(relay: RelayProcess, tmp_path: Path) -> Iterator[Pane]:
    if WEECHAT is None or TMUX is None:
        pytest.skip(_why_missing("weechat", WEECHAT))
    home = tmp_path / "weechat"
    home.mkdir()
    commands = f"/server add relay 127.0.0.1/{relay.port} -notls -nicks=wee_user;/connect relay"
    pane = Pane(home, f"{WEECHAT} --dir {home} -r '{commands}'")
    yield pane
    pane.close()


@pytest.fixture
def irssi(relay: RelayProcess, tmp_path: Path) -> Iterator[Pane]:
    if IRSSI is None or TMUX is None:
        pytest.skip(_why_missing("irssi", IRSSI))
    home = tmp_path / "irssi"
    home.mkdir()
    (home / "config").write_text(
        'settings = { core = { real_name = "test"; };\n'
        '  "irc/core" = { cmd_queue_speed = "0msec"; cmds_max_at_once = "100"; }; };\n')
    pane = Pane(home, f"{IRSSI} --home={home} --connect=127.0.0.1 --port={relay.port} "
                      "--nick=irssi_user")
    yield pane
    pane.close()


def _presence(nat: NativePeer, nick: str, event: str) -> dict[str, object]:
    return nat.expect(lambda b: b.get("t") == "presence" and b["nick"] == nick
                      and b["event"] == event, timeout=10)


def test_weechat_negotiates_caps_and_speaks_ircv3(relay: RelayProcess, weechat: Pane) -> None:
    nat = NativePeer.joined(relay.port, "nat", ["lobby"])
    try:
        screen = weechat.wait_for(lambda s: "End of /MOTD command" in s, "the MOTD")
        enabled = re.search(r"client capability, enabled: (.*)", screen)
        assert enabled is not None, screen
        wanted = {"server-time", "message-tags", "away-notify", "multi-prefix"}
        if _weechat_version() >= (4, 0):  # WeeChat 4 speaks batch and echo-message too
            wanted |= {"batch", "echo-message"}
        assert wanted <= set(enabled[1].split()), enabled[1]
        assert "CHANLIMIT=#:100" in screen and "CHATHISTORY=500" in screen
        assert "also speaks nc" in screen and "WebSocket" in screen
        weechat.type("/join #lobby")
        _presence(nat, "wee_user", "join")

        nat.send({"t": "say", "room": "lobby", "text": "hello, weechat"})
        weechat.wait_for(lambda s: re.search(r"nat \| hello, weechat", s) is not None,
                         "nat's message")
        weechat.type("/me waves")
        got = nat.expect(lambda b: b.get("t") == "msg" and b["from"] == "wee_user")
        assert (got["text"], got.get("action")) == ("waves", True)
        nat.send({"t": "say", "room": "lobby", "text": "bows", "action": True})
        weechat.wait_for(lambda s: re.search(r"\* \| nat bows", s) is not None,
                         "nat's action as '* nat bows'")

        weechat.type("/whois nat")
        weechat.type("/buffer 1")  # WHOIS answers show in the server's buffer
        weechat.wait_for(lambda s: "[nat] (nat@relay): nat" in s and "[nat] #lobby" in s
                         and "[nat] End of /WHOIS list" in s, "the WHOIS of nat")

        weechat.type("/quit see you later")
        part = _presence(nat, "wee_user", "part")
        assert part.get("reason") == "see you later"
    finally:
        nat.close()


def test_irssi_action_whois_and_motd(relay: RelayProcess, irssi: Pane) -> None:
    nat = NativePeer.joined(relay.port, "nat", ["lobby"])
    try:
        screen = irssi.wait_for(lambda s: "End of /MOTD command" in s
                                or "also speaks nc" in s, "the MOTD")
        assert "MOTD File is missing" not in screen
        irssi.type("/join #lobby")
        _presence(nat, "irssi_user", "join")
        irssi.type("/me waves")
        got = nat.expect(lambda b: b.get("t") == "msg" and b["from"] == "irssi_user")
        assert (got["text"], got.get("action")) == ("waves", True)
        nat.send({"t": "say", "room": "lobby", "text": "bows", "action": True})
        irssi.wait_for(lambda s: re.search(r"\* nat bows", s) is not None,
                       "nat's action as '* nat bows'")
        irssi.type("/whois nat")
        irssi.type("/window 1")  # WHOIS answers show in the status window
        irssi.wait_for(lambda s: "nat@relay" in s and "#lobby" in s
                       and "End of WHOIS" in s, "the WHOIS of nat")
        irssi.type("/quit leaving now")
        assert _presence(nat, "irssi_user", "part").get("reason") == "leaving now"
    finally:
        nat.close()


def test_web_page_me_reaches_irc_as_action_and_shows_actions(
        relay: RelayProcess, browser: Any) -> None:  # noqa: F811 (the imported fixture)
    """The web page's `/me` is an action on IRC; IRC's ACTION and a QUIT reason
    show on the page as `* carol bows` and `carol left (reason)`."""
    irc = Irc(relay.port)
    page = None
    try:
        irc.register("carol", caps="")
        irc.send("JOIN #lobby")
        irc.expect(" 366 ")
        page = WebUser(browser, relay.port, "ann", DESKTOP)
        page.type("/me waves from the web")
        assert irc.expect("waves from the web") == \
            ":ann!ann@relay PRIVMSG #lobby :\x01ACTION waves from the web\x01"
        irc.send("PRIVMSG #lobby :\x01ACTION bows\x01")
        expect = _expect()
        expect(page.page.locator(".line.msg.action").last).to_contain_text("* carol bows")
        irc.send("QUIT :time for tea")
        expect(page.page.locator(".line.info", has_text="carol left")).to_contain_text(
            "(time for tea)")
        assert page.errors == [], page.errors
    finally:
        irc.close()
        if page is not None:
            page.close()
