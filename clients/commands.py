"""chat-client's input line: the text dialect's commands, parsed without I/O.

`parse(line, room)` says what a line means; cli.py carries it out. Keeping
this pure lets the command set be tested without a terminal or a relay.
"""

from __future__ import annotations

from dataclasses import dataclass

from transports.commands import CLIENT, help_lines, lookup, parse_history
from transports.errors import ProtocolError
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
from transports.validate import is_valid_nick, is_valid_room

HELP = "commands:\n" + "\n".join(f"  {line}" for line in help_lines(CLIENT, 17))


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
    typed, _, rest = line[1:].partition(" ")
    known = lookup(typed)
    if known is None or CLIENT not in known.where:
        return Action(local=f"error: unknown command /{typed.lower()} (try /help)")
    command = known.name
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
    if command == "part":
        target = _room_arg(arg, room, "/part")
        return target if isinstance(target, Action) else Action(send=Part(target))
    if command == "who":
        target = _room_arg(arg, room, "/who")
        return target if isinstance(target, Action) else Action(send=Who(target))
    if command == "msg":
        to, _, text = arg.partition(" ")
        if not to or not text.strip():
            return Action(local="error: usage /msg NICK TEXT")
        return Action(send=Whisper(to, text))
    if command == "history":
        try:
            target, limit = parse_history(arg, room)
        except ProtocolError as exc:
            return Action(local=f"error: {exc.text}")
        return Action(send=HistoryQuery(target, None, limit))
    return Action(local=f"error: /{command} is not handled here (try /help)")
