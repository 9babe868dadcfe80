"""The slash commands people type: one table for nc, chat-client and the web page.

Each front end parses a line itself (the text dialect in the relay, chat-client
in clients/commands.py, the web page in app.js, which fetches this table as
`/commands.json`), but the names, aliases, arguments, defaults and help text
live here, so `/history 5` means the same everywhere: the 5 latest messages of
the current room. tests/integration/test_first_run.py checks every front end against the
table, and tests/unit/test_layout.py that no other module lists command names.

Arguments shared by all: ROOM defaults to the current room; N is a count of
messages, 1 to HISTORY_MAX_LIMIT.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Final

from transports.errors import ProtocolError
from transports.validate import HISTORY_MAX_LIMIT, check_room, is_number, parse_number

HISTORY_DEFAULT: Final = 20  # messages /history shows without N

# Where a command is typed. "oper": only after /oper (any front end that has it).
TEXT, CLIENT, WEB = "text", "client", "web"
EVERYWHERE: Final = (TEXT, CLIENT, WEB)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    args: str  # usage after the name, "" for none
    help: str
    aliases: tuple[str, ...] = ()
    where: tuple[str, ...] = EVERYWHERE

    @property
    def usage(self) -> str:
        return f"/{self.name} {self.args}".rstrip()


COMMANDS: Final[tuple[Command, ...]] = (
    Command("join", "ROOM", "join ROOM and make it the current room", ("j",)),
    Command("part", "[ROOM]", "leave ROOM (default: the current room)", ("leave",)),
    Command("msg", "NICK TEXT", "whisper TEXT to NICK", ("whisper", "w")),
    Command("me", "TEXT", 'say TEXT as an action ("* you TEXT")'),
    Command("nick", "NAME", "change your nick"),
    Command("who", "[ROOM]", "list the members of ROOM (default: the current room)"),
    Command("rooms", "", "list the rooms and their sizes", ("list",)),
    Command("history", "[N]", f"the N latest messages of the current room (default "
            f"{HISTORY_DEFAULT}, at most {HISTORY_MAX_LIMIT}; /history ROOM [N] for another)"),
    Command("ping", "", "check that the relay answers (and how fast)"),
    Command("pass", "PASSWORD", "log in to a relay that needs a password", where=(TEXT,)),
    Command("oper", "PASSWORD", "become an operator, who may then use:", where=(TEXT,)),
    Command("kick", "NICK [REASON]", "disconnect NICK", where=(TEXT,)),
    Command("ban", "NICK|IP [MINUTES] [REASON]", "disconnect and refuse (/unban NICK|IP)",
            where=(TEXT,)),
    Command("unban", "NICK|IP", "lift a ban", where=(TEXT,)),
    Command("mute", "NICK [MINUTES] [REASON]", "refuse NICK's messages (/unmute NICK)",
            where=(TEXT,)),
    Command("unmute", "NICK", "lift a mute", where=(TEXT,)),
    Command("help", "", "this help"),
    Command("quit", "[REASON]", "leave (others see the reason)"),
)

BY_NAME: Final[dict[str, Command]] = {
    alias: c for c in COMMANDS for alias in (c.name, *c.aliases)
}
PLAIN_LINE: Final = "a plain line is said to the current room; start it with // to say a /"
# Shown as its own block after the others in the text dialect's /help.
_OPER_ONLY: Final = ("kick", "ban", "mute")
_FOLDED: Final = ("unban", "unmute")  # told in the help of ban and mute


def lookup(name: str) -> Command | None:
    """The command a typed name (case-insensitive, alias or not) stands for."""
    return BY_NAME.get(name.lower())


def help_lines(front: str, width: int = 24) -> list[str]:
    """One line per command this front end has, `usage  help`, in table order."""
    lines = []
    for c in COMMANDS:
        if front not in c.where or c.name in _FOLDED:
            continue
        indent = "  " if c.name in _OPER_ONLY else ""
        lines.append(f"{indent}{c.usage:<{width - len(indent)}} {c.help}")
    lines.append(PLAIN_LINE)
    return lines


def as_json() -> str:
    """The table for the web page (served as /commands.json)."""
    table = [asdict(c) | {"usage": c.usage} for c in COMMANDS if WEB in c.where]
    return json.dumps({"commands": table, "history_default": HISTORY_DEFAULT,
                       "history_max": HISTORY_MAX_LIMIT, "plain_line": PLAIN_LINE})


def parse_history(arg: str, current: str | None, ref: str = "/history") -> tuple[str, int]:
    """`/history [N]` or `/history ROOM [N]` -> (room, limit).

    One argument that is a number is N (so `/history 5` is never room "5";
    that room is `/history 5 20`). Raises ProtocolError (`bad_field`,
    `not_in_room`, `room_invalid`) with the usage.
    """
    parts = arg.split()
    usage = f"usage: {BY_NAME['history'].usage} or /history ROOM [N]"
    if len(parts) > 2:
        raise ProtocolError("bad_field", usage, ref)
    room: str | None = current
    count: str | None = None
    if len(parts) == 2:
        room, count = check_room(parts[0], ref), parts[1]
    elif parts and is_number(parts[0]):
        count = parts[0]
    elif parts:
        room = check_room(parts[0], ref)
    if count is not None and not is_number(count):
        raise ProtocolError("bad_field", f"N must be a number: {usage}", ref)
    limit = HISTORY_DEFAULT if count is None else parse_number(
        count, "N", 1, HISTORY_MAX_LIMIT, ref)
    if room is None:
        raise ProtocolError("not_in_room", "you are in no room: /join ROOM first", ref)
    return room, limit
