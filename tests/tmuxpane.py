"""A terminal client in a tmux pane, for tests that drive real IRC clients.

The test types with `tmux send-keys` and reads the screen with
`tmux capture-pane`. tmux runs on a private socket per pane, so a test only
ever stops its own server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.relayproc import UNIT

TMUX = shutil.which("tmux")
IRSSI = shutil.which("irssi")
VENV = Path(__file__).resolve().parents[1] / ".venv"
# No servers, networks or scripts of the user's: only the relay. irssi's flood
# control (a command per 2.2 s after a burst) would pace the test.
IRSSI_CONFIG = (
    'settings = { core = { real_name = "test"; };\n'
    '  "irc/core" = { cmd_queue_speed = "0msec"; cmds_max_at_once = "100"; }; };\n'
)


def why_missing(name: str, path: str | None) -> str:
    """The skip reason: what is missing, and why tests/ensure_apt.sh could not install it."""
    marker = VENV / f"{name}-unavailable"
    missing = [n for n, p in ((name, path), ("tmux", TMUX)) if p is None]
    note = f"; {marker.read_text().strip()}" if marker.exists() else ""
    return f"needs {name} and tmux (missing: {', '.join(missing)}{note})"


class Pane:
    """One terminal program in a detached tmux session on a private server socket."""

    def __init__(self, home: Path, command: str, name: str = "the client") -> None:
        assert TMUX is not None
        self.name = name
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
        """The visible screen, wrapped lines joined (-J) so a long line matches whole."""
        return self.tmux("capture-pane", "-p", "-J", "-t", "chat")

    def wait_for(self, pred: Callable[[str], bool], what: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout * UNIT
        while True:
            text = self.screen()
            if pred(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} never showed {what}; screen:\n{text}")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self.tmux("kill-server")  # our private server only (-L)
        except (AssertionError, subprocess.TimeoutExpired):
            pass


def irssi_pane(home: Path, port: int, nick: str) -> Pane:
    """irssi connected to the relay on `port`, with a config of its own in `home`."""
    assert IRSSI is not None
    home.mkdir(parents=True, exist_ok=True)
    (home / "config").write_text(IRSSI_CONFIG)
    return Pane(home, f"{IRSSI} --home={home} --connect=127.0.0.1 --port={port} "
                      f"--nick={nick}", name="irssi")
