"""chat-client's input line: the text dialect's commands, parsed without I/O.

`parse(line, room)` says what a line means; cli.py carries it out. Keeping
this pure lets the command set be tested without a terminal or a relay.
"""

from __future__ import annotations

from dataclasses import dataclass

from transports.events import (
    ClientEvent,
    HistoryQuery,
    Join,
    ListRooms,
    NickChange,
    Part,
    Ping,
    Say,
    Whisper,
    Who,
)
from transports.validate import HISTORY_MAX_LIMIT, is_valid_nick, is_valid_room

HELP = """\
commands:
  /join ROOM       join ROOM and make it the current room
  /part [ROOM]     leave ROOM (default: the current room)
  /msg NICK TEXT   whisper TEXT to NICK
  /me TEXT         say TEXT as an action ("* you TEXT")
  /nick NAME       change your nick
  /who [ROOM]      list the members of ROOM (default: the current room)
  /rooms           list every room on the relay
  /history [N]     show the last N messages of the current room (default 20)
  /ping            measure the round trip to the relay
  /help            this help
  /quit            leave
  a plain line is said to the current room; start it with // to say a /"""


@dataclass(frozen=True, slots=True)
class Action:
    """What one input line asks for: an event to send, a local line, or quitting."""

    send: ClientEvent | None = None
    local: str | None = None
    quit: bool = False
    # `/join ROOM` makes ROOM current once joined.
    switch_to: str | None = None


def _room_arg(arg: str, room: str | None, command: str) -> str | Action:
    target = arg or room
    if target is None:
        return Action(local=f"error: {command} needs a room (you are in none)")
    if not is_valid_room(target):
        return Action(local=f"error: bad room name {target!r}: 1-64 of A-Z a-z 0-9 _ . # -")
    return target


def parse(line: str, room: str | None) -> Action:
    """Map one input line (without its newline) to an Action."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return Action()
    if not line.startswith("/") or line.startswith("//"):
        text = line[1:] if line.startswith("//") else line
        if room is None:
            return Action(local="error: you are in no room; /join ROOM first")
        return Action(send=Say(room, text))
    command, _, rest = line[1:].partition(" ")
    command = command.lower()
    arg = rest.strip()
    if command == "quit":
        return Action(quit=True)
    if command == "help":
        return Action(local=HELP)
    if command == "me":
        if room is None:
            return Action(local="error: you are in no room; /join ROOM first")
        if not arg:
            return Action(local="error: usage /me TEXT")
        return Action(send=Say(room, arg, action=True))
    if command == "rooms":
        return Action(send=ListRooms())
    if command == "ping":
        return Action(send=Ping())
    if command == "nick":
        if not is_valid_nick(arg):
            return Action(local="error: usage /nick NAME (1-32 of A-Z a-z 0-9 _ -)")
        return Action(send=NickChange(arg))
    if command == "join":
        if not arg:
            return Action(local="error: usage /join ROOM")
        target = _room_arg(arg, room, "/join")
        if isinstance(target, Action):
            return target
        return Action(send=Join(target), switch_to=target)
    if command in ("part", "leave"):
        target = _room_arg(arg, room, "/part")
        return target if isinstance(target, Action) else Action(send=Part(target))
    if command == "who":
        target = _room_arg(arg, room, "/who")
        return target if isinstance(target, Action) else Action(send=Who(target))
    if command in ("msg", "whisper"):
        to, _, text = arg.partition(" ")
        if not to or not text.strip():
            return Action(local="error: usage /msg NICK TEXT")
        return Action(send=Whisper(to, text))
    if command == "history":
        target = _room_arg("", room, "/history")
        if isinstance(target, Action):
            return target
        try:
            limit = int(arg) if arg else 20
        except ValueError:
            return Action(local="error: usage /history [N]")
        return Action(send=HistoryQuery(target, None, max(1, min(limit, HISTORY_MAX_LIMIT))))
    return Action(local=f"error: unknown command /{command} (try /help)")
