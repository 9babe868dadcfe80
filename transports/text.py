"""Text dialect: UTF-8 lines for nc, telnet and the seed's client (sans-I/O).

PROTOCOL.md "Text dialect" is the contract; this module fills in what it
leaves open.

Input (client -> relay), one line at a time:

- A line ends in "\\n"; one "\\r" right before it is dropped. Blank and
  whitespace-only lines are ignored. At EOF an unterminated last line counts
  as a line (``printf 'hi' | nc`` says "hi").
- A line holds at most `max_text` bytes (4,096), not counting its ending. A
  longer line is dropped with `text_too_long` and the connection stays. The
  codec never buffers more than `max_text + 1` bytes of a line: past that it
  discards up to the next "\\n", counting, so the error names the real size.
- A line that is not UTF-8 is dropped with `bad_frame`.
- A line not starting with "/" is said to the current room. "//" escapes a
  leading slash: "//shrug" says "/shrug".
- Commands (names case-insensitive, aliases as in transports/commands.py,
  the table shared with chat-client and the web page): /nick NAME, /join ROOM (also becomes
  the current room at once), /part [ROOM], /msg NICK TEXT, /who [ROOM],
  /rooms, /history [N] (or ROOM [N]), /ping, /help (answered by the codec
  itself, through `data_to_send`), /quit; and for operators (extension)
  /oper PASSWORD, /kick NICK [REASON], /ban NICK|IP [MINUTES] [REASON],
  /unban NICK|IP, /mute NICK [MINUTES] [REASON], /unmute NICK. Errors refer
  to the command as typed ("/msg"); a plain line's errors refer to "say".

Output (relay -> client): one line per item, each ending in "\\n". Chat
messages are "<nick> text" in the current room and "[room] <nick> text" in
others; every other line starts with "* ". Any "\\r" or "\\n" inside a name
or text becomes a space, so no peer can forge a line; so do the other control
characters (C0 but tab, DEL, C1), so no peer can drive a reader's terminal. The exact formats are
in `_lines` below.

State, taken from the relay bodies this connection is sent (`encode` sees all
of them, in order): `nick` from welcome/renamed; `rooms` (oldest join first)
from joined/parted; `current_room` is the room plain lines go to: the first
room joined, then each /join, and after leaving it the most recently joined
room still held (or None). It starts as "lobby", where the relay's hello
puts a text client, so `printf 'hi\\n' | nc` works however fast the line
arrives.

Threads (transports/codec.py has the rule): the reader thread moves the
current room on /join, the encoder on joined/parted, so it lives in two
slots, one per side, each an immutable pair replaced by one assignment:
the reader's `(joins typed, room)` and the encoder's `(joins typed when it
decided, room)`. The current room is the encoder's choice if it had seen
every /join typed so far, else the last typed one: the same answer one
shared variable gives, without a lock. `rooms` and `nick` are the
encoder's, read by /help as published values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Final

from transports.codec import Decoded, ServerCodec
from transports.commands import TEXT, help_lines, lookup, parse_history
from transports.errors import ProtocolError
from transports.events import (
    Ban,
    Bye,
    ClientEvent,
    Hello,
    HistoryQuery,
    Join,
    Kick,
    ListRooms,
    Mute,
    NickChange,
    Oper,
    Part,
    Ping,
    Say,
    Unban,
    Unmute,
    Whisper,
    Who,
    hhmm,
)
from transports.validate import (
    DEFAULT_MAX_TEXT,
    MAX_MINUTES,
    MAX_REASON,
    check_nick,
    check_room,
    check_text,
    ip_key,
    is_number,
    nick_key,
    parse_number,
)

# A joined line names at most this many members, then "and N more".
MAX_LISTED_MEMBERS: Final = 20
# A presence_batch line names this many nicks, then "and N others".
MAX_LISTED_PRESENCE: Final = 3
# Unknown command names are echoed back cut to this many characters.
_MAX_ECHO: Final = 40
_CR: Final = 0x0D
_COMMAND: Final = re.compile(r"/(\S*)\s*(.*)", re.DOTALL)

# /help: the shared table's lines (transports/commands.py), as server lines.
HELP_LINES: Final[tuple[str, ...]] = (
    "* commands:", *(f"*   {line}" for line in help_lines(TEXT)),
)


# Control characters a peer could use to forge a line ("\r", "\n") or to drive
# the reader's terminal (ESC sequences through nc): each becomes a space. Tab
# stays.
_CONTROLS: Final = {
    c: " " for c in (*range(0x00, 0x20), *range(0x7F, 0xA0)) if c != 0x09
}


def _clean(line: str) -> str:
    """One output line with nothing in it that breaks the line or the terminal."""
    return line.translate(_CONTROLS)


def _render(lines: Iterable[str]) -> bytes:
    # "replace": a WebSocket client's JSON can carry lone surrogates, which
    # UTF-8 cannot encode; they must not crash every text client in the room.
    return "".join(_clean(line) + "\n" for line in lines).encode("utf-8", "replace")


def _s(body: dict[str, Any], key: str) -> str:
    """A body field as text; a missing one is empty rather than a crash."""
    value = body.get(key)
    return "" if value is None else str(value)


def _names(value: Any) -> list[str]:
    return [str(name) for name in value] if isinstance(value, list | tuple) else []


def _listed(nicks: list[str]) -> str:
    """"a", "a and b", "a, b and c", "a, b, c and 37 others"."""
    if len(nicks) == 1:
        return nicks[0]
    if len(nicks) <= MAX_LISTED_PRESENCE + 1:
        return f"{', '.join(nicks[:-1])} and {nicks[-1]}"
    rest = len(nicks) - MAX_LISTED_PRESENCE
    return f"{', '.join(nicks[:MAX_LISTED_PRESENCE])} and {rest} others"


def _too_long(size: int, limit: int) -> ProtocolError:
    return ProtocolError(
        "text_too_long", f"line of {size} bytes dropped: the limit is {limit}", "say"
    )


class TextServerCodec(ServerCodec):
    """The relay side of the text dialect: lines in, events out, lines back."""

    name = "text"
    auto_hello = True

    def __init__(self, max_frame: int = 65536, max_text: int = DEFAULT_MAX_TEXT) -> None:
        super().__init__(max_frame, max_text)
        # The relay's hello for us joins lobby (PROTOCOL.md: "The client is in
        # lobby"). Lines typed before its `joined` is encoded go there too:
        # the relay hands them to the hub after the hello, so they are valid.
        self._typed: tuple[int, str | None] = (0, None)  # reader: (/joins, last)
        self._chosen: tuple[int, str | None] = (0, "lobby")  # encoder: (/joins seen, room)
        self.rooms: tuple[str, ...] = ()  # encoder: oldest join first
        self._buf = bytearray()
        # While a line is too long to keep: how many of its bytes were
        # discarded so far (None: not discarding), and whether the last was
        # "\r" (a line ending, not part of the line's size).
        self._skipped: int | None = None
        self._skipped_cr = False
        self._pending = bytearray()

    @property
    def current_room(self) -> str | None:
        """The room plain lines go to (see the module docstring)."""
        typed, chosen = self._typed, self._chosen
        return chosen[1] if chosen[0] >= typed[0] else typed[1]

    def _choose(self, room: str | None) -> None:
        """The encoder moves the current room (after a parted, or a first joined)."""
        self._chosen = (self._typed[0], room)

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held (never more than max_text + 1)."""
        return len(self._buf)

    # Input -------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Decoded]:
        out: list[Decoded] = []
        if self.closed:
            return out
        if not data:
            self.closed = True
            if self._skipped is not None:
                out.append(_too_long(self._skipped - self._skipped_cr, self.max_text))
            elif self._buf:
                self._line(bytes(self._buf), out)
            self._skipped = None
            self._buf.clear()
            return out
        pos, end = 0, len(data)
        while pos < end and not self.closed:
            nl = data.find(b"\n", pos)
            stop = end if nl < 0 else nl
            size = stop - pos
            if self._skipped is None and len(self._buf) + size > self.max_text + 1:
                # Too long even if its last byte is "\r": stop keeping it.
                self._skipped = len(self._buf)
                self._skipped_cr = bool(self._buf) and self._buf[-1] == _CR
                self._buf.clear()
            if self._skipped is None:
                self._buf += data[pos:stop]
            elif size:
                self._skipped += size
                self._skipped_cr = data[stop - 1] == _CR
            if nl < 0:
                break
            pos = nl + 1
            if self._skipped is not None:
                out.append(_too_long(self._skipped - self._skipped_cr, self.max_text))
                self._skipped = None
            else:
                line = bytes(self._buf)
                self._buf.clear()
                self._line(line, out)
        return out

    @property
    def partial(self) -> bool:
        return bool(self._buf) and self._skipped is None and not self.closed

    def flush_partial(self) -> list[Decoded]:
        """A line the peer sent without "\n" and then went quiet: take it as a line."""
        out: list[Decoded] = []
        if self.partial:
            line = bytes(self._buf)
            self._buf.clear()
            self._line(line, out)
        return out

    def data_to_send(self) -> bytes:
        data = bytes(self._pending)
        self._pending.clear()
        return data

    def _line(self, raw: bytes, out: list[Decoded]) -> None:
        """Decode one complete line (its "\\n" already gone) into `out`."""
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > self.max_text:
            out.append(_too_long(len(raw), self.max_text))
            return
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.append(
                ProtocolError(
                    "bad_frame",
                    f"line is not valid UTF-8 (byte {raw[exc.start]:#04x} at offset "
                    f"{exc.start} of {len(raw)}); it was dropped",
                    "say",
                )
            )
            return
        if not line.strip():
            return
        try:
            event = self._parse(line)
        except ProtocolError as err:
            out.append(err)
            return
        if event is not None:
            out.append(event)

    def _parse(self, line: str) -> ClientEvent | None:
        if not line.startswith("/"):
            return self._say(line)
        if line.startswith("//"):
            return self._say(line[1:])
        match = _COMMAND.fullmatch(line)
        assert match is not None  # the pattern matches every string starting with "/"
        name, arg = match[1], match[2]
        ref = "/" + name[:_MAX_ECHO]
        handler = self._handler(name)
        if handler is None:
            raise ProtocolError(
                "unknown_type", f"unknown command {ref}; /help lists the commands", ref
            )
        return handler(ref, arg)

    def _say(self, text: str) -> Say:
        room = self._room_or_current("", "say")
        return Say(room=room, text=check_text(text, self.max_text, "say"))

    def _room_or_current(self, arg: str, ref: str) -> str:
        room = arg.strip()
        if room:
            return check_room(room, ref)
        if self.current_room is None:
            raise ProtocolError("not_in_room", "you are in no room: /join ROOM first", ref)
        return self.current_room

    # Commands: `_cmd_NAME` for each command of the shared table
    # (transports/commands.py) this dialect has; each takes the command as
    # typed (for errors) and its argument.

    def _handler(self, typed: str) -> Callable[[str, str], ClientEvent | None] | None:
        """The handler of the command `typed` names (an alias too), None if none."""
        command = lookup(typed)
        if command is None or TEXT not in command.where:
            return None
        handler: Callable[[str, str], ClientEvent | None] | None = getattr(
            self, f"_cmd_{command.name}", None)  # tests/integration/test_first_run.py: never None
        return handler

    def _cmd_rooms(self, ref: str, arg: str) -> ClientEvent:
        return ListRooms()

    def _cmd_ping(self, ref: str, arg: str) -> ClientEvent:
        return Ping()

    def _cmd_nick(self, ref: str, arg: str) -> ClientEvent:
        if not arg.strip():
            raise ProtocolError("bad_field", "usage: /nick NAME", ref)
        return NickChange(check_nick(arg.strip(), ref))

    def _cmd_pass(self, ref: str, arg: str) -> ClientEvent:
        """On a relay with a password, the guest's hello waits for this line."""
        if not arg.strip():
            raise ProtocolError("bad_field", "usage: /pass PASSWORD", ref)
        return Hello(nick=None, rooms=("lobby",), password=arg.strip())

    def _cmd_join(self, ref: str, arg: str) -> ClientEvent:
        if not arg.strip():
            raise ProtocolError("bad_field", "usage: /join ROOM", ref)
        room = check_room(arg.strip(), ref)
        self._typed = (self._typed[0] + 1, room)
        return Join(room)

    def _cmd_part(self, ref: str, arg: str) -> ClientEvent:
        return Part(self._room_or_current(arg, ref))

    def _cmd_who(self, ref: str, arg: str) -> ClientEvent:
        return Who(self._room_or_current(arg, ref))

    def _cmd_msg(self, ref: str, arg: str) -> ClientEvent:
        parts = arg.split(None, 1)
        if len(parts) < 2:
            raise ProtocolError("bad_field", "usage: /msg NICK TEXT", ref)
        return Whisper(to=check_nick(parts[0], ref), text=check_text(parts[1], self.max_text, ref))

    def _cmd_history(self, ref: str, arg: str) -> ClientEvent:
        room, limit = parse_history(arg, self.current_room, ref)
        return HistoryQuery(room=room, after=None, limit=limit)

    def _cmd_help(self, ref: str, arg: str) -> None:
        rooms = ", ".join(self.rooms) or "none"
        status = (
            f"* you are {self.nick or '(not named yet)'}; current room: "
            f"{self.current_room or 'none'}; your rooms: {rooms}"
        )
        if not self._pending:  # one read of "/help" lines: one page
            self._pending += _render((status, *HELP_LINES))
        return None

    # Moderation: the relay answers a non-operator with not_operator.

    def _cmd_oper(self, ref: str, arg: str) -> ClientEvent:
        if not arg.strip():
            raise ProtocolError("bad_field", "usage: /oper PASSWORD", ref)
        return Oper(arg.strip())

    def _cmd_kick(self, ref: str, arg: str) -> ClientEvent:
        parts = arg.split(None, 1)
        if not parts:
            raise ProtocolError("bad_field", "usage: /kick NICK [REASON]", ref)
        return Kick(check_nick(parts[0], ref), self._reason(parts[1:], ref))

    def _sanction_args(self, arg: str, usage: str, ref: str) -> tuple[str, int | None, str | None]:
        """NAME [MINUTES] [REASON] -> (name, minutes, reason)."""
        parts = arg.split(None, 1)
        if not parts:
            raise ProtocolError("bad_field", f"usage: {usage}", ref)
        rest = parts[1].split(None, 1) if len(parts) > 1 else []
        minutes = None
        if rest and is_number(rest[0]):
            minutes = parse_number(rest[0], "MINUTES", 1, MAX_MINUTES, ref)
            rest = rest[1:]
        return parts[0], minutes, self._reason(rest, ref)

    @staticmethod
    def _reason(rest: list[str], ref: str) -> str | None:
        return check_text(rest[0].strip(), MAX_REASON, ref) if rest and rest[0].strip() else None

    @staticmethod
    def _target(name: str, ref: str) -> tuple[str | None, str | None]:
        """A ban's target: an IP address if it is one, else a nick."""
        ip = ip_key(name)
        return (None, ip) if ip is not None else (check_nick(name, ref), None)

    def _cmd_ban(self, ref: str, arg: str) -> ClientEvent:
        name, minutes, reason = self._sanction_args(arg, "/ban NICK|IP [MINUTES] [REASON]", ref)
        nick, ip = self._target(name, ref)
        return Ban(nick=nick, ip=ip, minutes=minutes, reason=reason)

    def _cmd_unban(self, ref: str, arg: str) -> ClientEvent:
        if len(arg.split()) != 1:
            raise ProtocolError("bad_field", "usage: /unban NICK|IP", ref)
        nick, ip = self._target(arg.strip(), ref)
        return Unban(nick=nick, ip=ip)

    def _cmd_mute(self, ref: str, arg: str) -> ClientEvent:
        name, minutes, reason = self._sanction_args(arg, "/mute NICK [MINUTES] [REASON]", ref)
        return Mute(check_nick(name, ref), minutes, reason)

    def _cmd_unmute(self, ref: str, arg: str) -> ClientEvent:
        if len(arg.split()) != 1:
            raise ProtocolError("bad_field", "usage: /unmute NICK", ref)
        return Unmute(check_nick(arg.strip(), ref))

    def _cmd_quit(self, ref: str, arg: str) -> ClientEvent:
        reason = arg.strip()
        if reason:
            check_text(reason, MAX_REASON, ref, key="'reason'")
        self.closed = True
        return Bye(reason or None)

    def _cmd_me(self, ref: str, arg: str) -> ClientEvent:
        if not arg.strip():
            raise ProtocolError("bad_field", "usage: /me TEXT", ref)
        room = self._room_or_current("", "say")
        return Say(room=room, text=check_text(arg.strip(), self.max_text, "say"), action=True)

    # Output ------------------------------------------------------------------

    def encode(self, body: dict[str, Any]) -> bytes:
        t = body.get("t")
        room = body.get("room")
        if t in ("welcome", "renamed"):
            self.nick = _s(body, "nick")
        elif t == "joined" and isinstance(room, str):
            self.rooms = (*(r for r in self.rooms if r != room), room)
            if self.current_room is None:
                self._choose(room)
        elif t == "parted" and isinstance(room, str):
            self.rooms = tuple(r for r in self.rooms if r != room)
            if room == self.current_room:
                now = self.rooms[-1] if self.rooms else None
                self._choose(now)
                return _render([
                    f"* you left {room}",
                    f"* your lines now go to {now}" if now
                    else "* you are in no room now: /join ROOM to talk",
                ])
        current = room == self.current_room if isinstance(room, str) else True
        return _render(self._lines(body, current, self.nick))

    def farewell(self) -> bytes:
        """After /quit: a person on nc sees why the relay went quiet (nc itself
        stays open until Ctrl-C or Ctrl-D)."""
        return _render([f"* bye, {self.nick or 'guest'}: the relay closed your connection"])

    def fanout_key(self, room: str) -> Hashable:
        """Whether `room` is current: the only thing that changes a room's lines."""
        return room == self.current_room

    @classmethod
    def encode_fanout(cls, body: dict[str, Any], key: Hashable) -> bytes:
        return _render(cls._lines(body, bool(key), None))

    def encode_own(self, body: dict[str, Any], msg_id: Any) -> bytes:
        # PROTOCOL.md: a text client's own lines are not echoed back. Its own
        # presence is told already by "you joined/left ..." and "you are now
        # known as ...", so it is not repeated either.
        if body.get("t") in ("msg", "presence"):
            return b""
        if body.get("t") == "presence_batch":  # the others' events of it, without ours
            me = nick_key(self.nick) if self.nick else None
            current = _s(body, "room") == self.current_room
            return _render(self._batch_lines(body, current, me))
        return super().encode_own(body, msg_id)

    @classmethod
    def _lines(cls, body: dict[str, Any], current: bool, nick: str | None) -> list[str]:
        """The lines for one relay body.

        Args:
            body: a relay -> client map (PROTOCOL.md).
            current: whether the body's room is the client's current room.
            nick: the client's nick, when known (tells a whisper's echo).
        """
        t = body.get("t")
        room = _s(body, "room")
        if t == "msg":
            return [cls._msg_line(body, current)]
        if t == "presence":
            who, event = _s(body, "nick"), body.get("event")
            if event == "join":
                return [f"* {who} joined {room}"]
            if event == "part" and body.get("by"):
                reason = f": {_s(body, 'reason')}" if body.get("reason") else ""
                return [f"* {who} was removed from {room} by {_s(body, 'by')}{reason}"]
            if event == "part":
                reason = f" ({_s(body, 'reason')})" if body.get("reason") else ""
                return [f"* {who} left {room}{reason}"]
            if event == "nick":
                return [f"* {who} is now known as {_s(body, 'new')}"]
            return []
        if t == "presence_batch":
            return cls._batch_lines(body, current, None)
        if t == "away":
            text = _s(body, "text") if body.get("text") else ""
            return [f"* {_s(body, 'nick')} is away: {text}" if text
                    else f"* {_s(body, 'nick')} is back"]
        if t == "whisper":
            if body.get("action"):
                return [f"* *{_s(body, 'from')}* {_s(body, 'text')}"]
            if nick is not None and _s(body, "from") == nick:
                return [f"-> *{_s(body, 'to')}* {_s(body, 'text')}"]
            return [f"*{_s(body, 'from')}* {_s(body, 'text')}"]
        if t == "welcome":
            return [f"* welcome to chat-relay, you are {_s(body, 'nick')}; type /help for commands"]
        if t == "joined":
            members = _names(body.get("members"))
            given = body.get("count")
            total = given if isinstance(given, int) else len(members)
            count = f"{total} member{'' if total == 1 else 's'}"
            if not members:
                return [f"* you joined {room} ({count})"]
            listed = ", ".join(members[:MAX_LISTED_MEMBERS])
            if total > MAX_LISTED_MEMBERS:
                listed += f" and {total - MAX_LISTED_MEMBERS} more"
            lines = [f"* you joined {room} ({count}: {listed})"]
            if body.get("quiet"):
                lines.append(f"* joins and parts are not shown in {room}, a big room "
                             "(/who lists the members)")
            return lines
        if t == "parted":
            return [f"* you left {room}"]
        if t == "renamed":
            return [f"* you are now known as {_s(body, 'nick')}"]
        if t == "members":
            more = " (more follow)" if body.get("more") else ""
            return [f"* members of {room}: {', '.join(_names(body.get('members'))) or 'none'}"
                    f"{more}"]
        if t == "rooms":
            rooms = body.get("rooms")
            if isinstance(rooms, dict):
                listed = ", ".join(f"{name} ({n})" for name, n in rooms.items())
            else:
                listed = ", ".join(_names(rooms))
            lines = [f"* rooms: {listed or 'none'}"]
            if body.get("truncated"):
                shown = len(rooms) if isinstance(rooms, dict | list) else 0
                lines.append(f"* (the {shown} largest of {body.get('total', '?')} rooms)")
            return lines
        if t == "history" and body.get("replay") is True:
            return cls._replay_lines(body, room)
        if t == "history":
            messages = body.get("messages")
            messages = messages if isinstance(messages, list | tuple) else []
            lines = [f"* history of {room}:"]
            lines += [
                cls._msg_line(m, current and _s(m, "room") == room)
                for m in messages
                if isinstance(m, dict)
            ]
            if not messages:
                lines.append("* (no messages)")
            if body.get("more"):
                lines.append("* (older messages too: /history N shows the N latest)")
            return lines
        if t == "notice":
            return [f"* {_s(body, 'text')}"]
        if t == "error":
            return [f"* error: {_s(body, 'text')}"]
        if t == "pong":
            return ["* pong"]
        # "ping" (a text client is kept alive by any line) and types this
        # dialect does not know: nothing to show.
        return []

    @classmethod
    def _batch_lines(cls, body: dict[str, Any], current: bool, me: str | None) -> list[str]:
        """One line per kind of event in a presence_batch ("* a, b and 37 others
        joined lobby"), one per rename or removal, and one if the room turned
        quiet or loud. `me` (a nick_key) leaves out the reader's own events."""
        room = _s(body, "room")
        events = body.get("events")
        joins: list[str] = []
        parts: list[str] = []
        lines: list[str] = []
        for ev in events if isinstance(events, list | tuple) else []:
            if not isinstance(ev, dict) or me is not None and me in (
                    nick_key(_s(ev, "nick")), nick_key(_s(ev, "new"))):
                continue
            kind = ev.get("event")
            if kind == "join":
                joins.append(_s(ev, "nick"))
            elif kind == "part" and not ev.get("by"):
                parts.append(_s(ev, "nick"))
            else:
                lines += cls._lines({"t": "presence", "room": room, **ev}, current, None)
        if joins:
            lines.insert(0, f"* {_listed(joins)} joined {room}")
        if parts:
            lines.insert(1 if joins else 0, f"* {_listed(parts)} left {room}")
        quiet, count = body.get("quiet"), _s(body, "count") or "many"
        if quiet is True:
            lines.append(f"* {room} has {count} members: joins and parts are no longer "
                         "shown there (/who lists the members)")
        elif quiet is False:
            lines.append(f"* {room} has {count} members: joins and parts are shown again")
        return lines

    @classmethod
    def _replay_lines(cls, body: dict[str, Any], room: str) -> list[str]:
        """A join replay: the room's latest messages, framed so that nobody takes
        them for live ones, each stamped `[HH:MM]` in the relay's local time
        (an action shows as one, as it did live)."""
        messages = body.get("messages")
        messages = messages if isinstance(messages, list | tuple) else []
        lines = [f"* earlier messages in {room}:"]
        lines += [
            f"[{hhmm(m.get('ts'))}] {cls._msg_line(m, True)}"
            for m in messages
            if isinstance(m, dict)
        ]
        more = f"; /history {room} shows more" if body.get("more") else ""
        lines.append(f"* (end of earlier messages{more})")
        return lines

    @staticmethod
    def _msg_line(body: dict[str, Any], current: bool) -> str:
        if body.get("action"):
            line = f"* {_s(body, 'from')} {_s(body, 'text')}"
        else:
            line = f"<{_s(body, 'from')}> {_s(body, 'text')}"
        return line if current else f"[{_s(body, 'room')}] {line}"
