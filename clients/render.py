"""How chat-client shows events: one line each, as styled fragments or plain text.

Pure functions over a small `View` (who we are, which room is current), so
the terminal and pipe modes show the same words and tests need no terminal.
A fragment is a prompt_toolkit (style, text) pair; `plain()` drops styles.

Everything a relay or a peer wrote passes `clean()` (or `clean_line()`)
before it reaches the terminal, in both modes: a control character could
otherwise move the cursor, clear the screen, retitle the window or draw a
fake `<nick>` line, and a bidi override could show a line reversed.
"""

from __future__ import annotations

import re
import time
import zlib
from dataclasses import dataclass, field

from clients.state import ConnectionLost, Incoming, Missed, Reconnected, Restarted
from transports.events import (
    AwayNotice,
    Error,
    HistoryPage,
    Joined,
    Members,
    Msg,
    Notice,
    Parted,
    PongReply,
    Presence,
    Renamed,
    RoomList,
    Welcome,
    WhisperMsg,
)
from transports.validate import nick_key

Fragment = tuple[str, str]
Line = list[Fragment]

# Nick colours: distinct at a glance (every pair at least 25 apart in CIELAB,
# tests/integration/test_first_run.py measures it) and readable on dark and light
# terminals. prompt_toolkit maps them to the terminal's depth (256 colours on
# most). The 16 ANSI colours were not enough: their bright variants are
# near-duplicates of the plain ones, and blue or black vanish on one background.
NICK_COLOURS = (
    "#e6194b",  # red
    "#3cb44b",  # green
    "#4363d8",  # blue
    "#f58231",  # orange
    "#911eb4",  # purple
    "#42d4f4",  # cyan
    "#f032e6",  # magenta
    "#9a6324",  # brown
    "#808000",  # olive
    "#469990",  # teal
)
# Nicks whose colour a view remembers per room; past it, the plain hash.
MAX_COLOURED = 1000
SERVER_STYLE = "ansibrightblack"
DIVIDER_STYLE = "ansibrightblack italic"
DIVIDER = "\u2500" * 4  # a rule around "earlier messages" (a join's replay)
MAX_LISTED = 20  # members a cut `joined` line names
ERROR_STYLE = "ansired bold"


# What a peer must not send to our terminal: C0 controls but tab (tab only
# moves the cursor right; it cannot erase or overwrite), DEL, C1 controls
# (U+009B is CSI to a UTF-8 xterm), the bidi embeddings, overrides and
# isolates (U+202A-202E, U+2066-2069: the "Trojan Source" set), the line and
# paragraph separators, and lone surrogates (unprintable; a JSON peer can
# send them). The marks U+200E/U+200F/U+061C stay: they set no direction
# for what follows, and right-to-left text needs them.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
                     "\u2028\u2029\ud800-\udfff]")
NEUTRALISED_STYLE = "reverse"


def shown_as(ch: str) -> str:
    """How one neutralised character is shown: caret notation for ASCII
    controls (ESC is ^[, CR ^M, DEL ^?), <U+XXXX> for the others."""
    code = ord(ch)
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    return f"<U+{code:04X}>"


def clean(text: str) -> str:
    """`text` made safe to print: every unsafe character shown visibly, none dropped."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(lambda m: shown_as(m.group()), text)


def clean_line(line: Line) -> Line:
    """`clean()` over every fragment; on a terminal the stand-ins show in reverse
    video, so a neutralised ESC is told apart from a typed "^[" ."""
    out: Line = []
    for style, text in line:
        if _UNSAFE.search(text) is None:
            out.append((style, text))
            continue
        pos = 0
        for m in _UNSAFE.finditer(text):
            if m.start() > pos:
                out.append((style, text[pos:m.start()]))
            out.append((f"{style} {NEUTRALISED_STYLE}".strip(), shown_as(m.group())))
            pos = m.end()
        if pos < len(text):
            out.append((style, text[pos:]))
    return out


def nick_colour(nick: str) -> str:
    """A nick's preferred colour, the same in every session (a hash)."""
    return NICK_COLOURS[zlib.crc32(nick_key(nick).encode("utf-8")) % len(NICK_COLOURS)]


def allot_colour(nick: str, taken: set[str]) -> str:
    """`nick`'s preferred colour unless another nick of the room has it; then the
    next free one in the palette (a hash alone gives 8 nicks a shared colour
    more often than not)."""
    preferred = NICK_COLOURS.index(nick_colour(nick))
    for step in range(len(NICK_COLOURS)):
        colour = NICK_COLOURS[(preferred + step) % len(NICK_COLOURS)]
        if colour not in taken:
            return colour
    return NICK_COLOURS[preferred]


def clock(ts_ms: int | None = None) -> str:
    """HH:MM:SS local time of a relay timestamp (ms), or of now."""
    seconds = time.time() if ts_ms is None else ts_ms / 1000
    return time.strftime("%H:%M:%S", time.localtime(seconds))


@dataclass(slots=True)
class View:
    """What rendering needs to know about us."""

    nick: str
    room: str | None = None
    # The rooms we are in, as far as the events shown so far tell; with more
    # than one, every message names its room.
    rooms: dict[str, None] = field(default_factory=dict)
    # Rooms whose `joined` after a reconnect is routine, not news.
    resuming: set[str] = field(default_factory=set)
    # room ("" for whispers) -> nick key -> colour, in order of appearance, so
    # the first nicks seen in a room all differ; a nick keeps its colour.
    colours: dict[str, dict[str, str]] = field(default_factory=dict)
    # The relay said it is shutting down: losing the connection is expected.
    stopping: bool = False

    def is_me(self, nick: str) -> bool:
        return nick_key(nick) == nick_key(self.nick)

    def colour(self, nick: str, room: str = "") -> str:
        """The colour `nick` shows in, in `room`."""
        seen = self.colours.setdefault(room, {})
        key = nick_key(nick)
        colour = seen.get(key)
        if colour is None:
            colour = allot_colour(nick, set(seen.values()))
            if len(seen) < MAX_COLOURED:
                seen[key] = colour
        return colour


def plain(line: Line) -> str:
    return "".join(text for _style, text in line)


def _server(text: str) -> Line:
    return [(SERVER_STYLE, f"{clock()} * {text}")]


def _nick(nick: str, view: View, room: str = "") -> Fragment:
    return (view.colour(nick, room) + " bold", nick)


def _members(members: tuple[str, ...]) -> str:
    n = len(members)
    return f"{n} member{'s' if n != 1 else ''}: {', '.join(members)}"


def render_msg(m: Msg, view: View) -> Line:
    line: Line = [("", f"{clock(m.ts)} ")]
    if len(view.rooms) > 1 or m.room not in view.rooms:
        line.append(("bold", f"[{m.room}] "))
    if m.action:  # `/me waves`, IRC's CTCP ACTION: "* carol waves"
        line += [("", "* "), _nick(m.sender, view, m.room), ("", f" {m.text}")]
    else:
        line += [("", "<"), _nick(m.sender, view, m.room), ("", f"> {m.text}")]
    return line


def render(ev: Incoming, view: View) -> list[Line]:
    """The lines to show for one event (none for those not worth a line)."""
    if isinstance(ev, Msg):
        return [render_msg(ev, view)]
    if isinstance(ev, WhisperMsg):
        if ev.action:  # a private action: "* *carol* waves"
            return [[("", f"{clock(ev.ts)} * *"), _nick(ev.sender, view), ("", f"* {ev.text}")]]
        if view.is_me(ev.sender) and not view.is_me(ev.to):
            return [[("", f"{clock(ev.ts)} -> *"), _nick(ev.to, view), ("", f"* {ev.text}")]]
        return [[("", f"{clock(ev.ts)} *"), _nick(ev.sender, view), ("", f"* {ev.text}")]]
    if isinstance(ev, Presence):
        return _presence(ev, view)
    if isinstance(ev, Joined):
        if ev.room in view.resuming:
            view.resuming.discard(ev.room)
            return []
        if ev.count is not None:  # a big room: the relay listed only some
            listed = ", ".join(ev.members[:MAX_LISTED])
            return [_server(f"you joined {ev.room} ({ev.count} members, among them "
                            f"{listed}; /who lists them all)")]
        return [_server(f"you joined {ev.room} ({_members(ev.members)})")]
    if isinstance(ev, Parted):
        return [_server(f"you left {ev.room}")]
    if isinstance(ev, Renamed):
        return [_server(f"you are now known as {ev.nick}")]
    if isinstance(ev, Members):
        return [_server(f"{ev.room}: {_members(ev.members)}")]
    if isinstance(ev, RoomList):
        if not ev.rooms:
            return [_server("no rooms")]
        rooms = ", ".join(f"{name} ({count})" for name, count in sorted(ev.rooms.items()))
        more = f" (the {len(ev.rooms)} largest of {ev.total})" if ev.total is not None else ""
        return [_server(f"rooms: {rooms}{more}")]
    if isinstance(ev, HistoryPage) and ev.replay:
        return _replay(ev, view)
    if isinstance(ev, HistoryPage):
        lines = [_server(f"history of {ev.room}: {len(ev.messages)} messages")]
        lines += [render_msg(m, view) for m in ev.messages]
        if ev.more:
            lines.append(_server("(more history before these)"))
        return lines
    if isinstance(ev, Notice):
        return [_server(ev.text)]
    if isinstance(ev, AwayNotice):
        return [_server(f"{ev.nick} is away: {ev.text}" if ev.text else f"{ev.nick} is back")]
    if isinstance(ev, Error):
        if ev.code == "shutting_down":
            # Planned: the operator stopped the relay. News, not a fault.
            view.stopping = True
            return [_server(f"{ev.text}; reconnecting when it is back")]
        return [[(ERROR_STYLE, f"{clock()} * error: {ev.code}: {ev.text}")]]
    if isinstance(ev, PongReply):
        return [_server("pong")]
    if isinstance(ev, Welcome):
        return [_server(f"welcome, {ev.nick} ({ev.server})")]
    if isinstance(ev, ConnectionLost):
        if view.stopping:
            return [_server("connection closed by the relay, reconnecting...")]
        return [[(ERROR_STYLE, f"{clock()} * connection lost, reconnecting...")]]
    if isinstance(ev, Reconnected):
        view.stopping = False
        return [_server("reconnected")]
    if isinstance(ev, Restarted):
        return [_server(f"{ev.room}: the relay restarted; messages before it are gone")]
    if isinstance(ev, Missed):
        if ev.count is None:
            return [_server(f"missed messages in {ev.room} (history no longer reaches)")]
        return [_server(f"missed {ev.count} messages in {ev.room}")]
    return []


def _replay(ev: HistoryPage, view: View) -> list[Line]:
    """A join's replay: the room's latest messages between two dividers, so they
    read as what was said before we came, each with the time it was said."""
    more = "; /history for more" if ev.more else ""
    return [
        [(DIVIDER_STYLE, f"{DIVIDER} earlier messages in {ev.room} {DIVIDER}")],
        *(render_msg(m, view) for m in ev.messages),
        [(DIVIDER_STYLE, f"{DIVIDER} end of earlier messages{more} {DIVIDER}")],
    ]


def _presence(ev: Presence, view: View) -> list[Line]:
    if ev.event == "nick":
        if view.is_me(ev.nick) or (ev.new is not None and view.is_me(ev.new)):
            return []  # our own rename: `renamed` already said it
        return [_server(f"{ev.nick} is now known as {ev.new} (in {ev.room})")]
    if view.is_me(ev.nick):
        return []  # our own join/part: `joined` / `parted` already said it
    verb = "joined" if ev.event == "join" else "left" if ev.event == "part" else ev.event
    reason = f" ({ev.reason})" if ev.reason else ""
    return [_server(f"{ev.nick} {verb} {ev.room}{reason}")]
