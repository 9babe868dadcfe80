"""IRCv3 with real IRC clients: WeeChat and irssi in tmux panes against a real
relay, next to a native client; assertions read the captured screens.

`make unit` installs both with tests/ensure_apt.sh; where it cannot, the tests
skip and say why. tmux runs on a private socket per pane, so a test only ever
stops its own server.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
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
from tests.relayproc import RelayProcess
from tests.tmuxpane import IRSSI, TMUX, Pane, irssi_pane, why_missing
from tests.wire import NativePeer

WEECHAT = shutil.which("weechat") or shutil.which("weechat-curses")


def _weechat_version() -> tuple[int, int]:
    assert WEECHAT is not None
    out = subprocess.run([WEECHAT, "--version"], capture_output=True, text=True,
                         timeout=10).stdout
    m = re.match(r"(\d+)\.(\d+)", out.strip())
    return (int(m[1]), int(m[2])) if m else (0, 0)


@pytest.fixture
def weechat(relay: RelayProcess, tmp_path: Path) -> Iterator[Pane]:
    if WEECHAT is None or TMUX is None:
        pytest.skip(why_missing("weechat", WEECHAT))
    home = tmp_path / "weechat"
    home.mkdir()
    commands = f"/server add relay 127.0.0.1/{relay.port} -notls -nicks=wee_user;/connect relay"
    pane = Pane(home, f"{WEECHAT} --dir {home} -r '{commands}'", name="WeeChat")
    yield pane
    pane.close()


@pytest.fixture
def irssi(relay: RelayProcess, tmp_path: Path) -> Iterator[Pane]:
    if IRSSI is None or TMUX is None:
        pytest.skip(why_missing("irssi", IRSSI))
    pane = irssi_pane(tmp_path / "irssi", relay.port, "irssi_user")
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
