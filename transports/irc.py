"""IRC dialect: the RFC 2812 subset that irssi, weechat and HexChat need.

Mapping (PROTOCOL.md "IRC dialect"):

- Registration: `PASS`, `NICK`, `USER`, IRCv3 `CAP LS 302/REQ/LIST/END`
  and SASL PLAIN (transports/ircv3_caps.py; `CAP LS` holds registration
  until `CAP END`). Once NICK and USER are in, the codec emits
  `Hello(nick, rooms=())`: IRC clients join their channels themselves.
  `welcome` becomes 001-005 (with the relay's real limits) and the MOTD.
- Channel `#name` is room `name`. JOIN/PART/PRIVMSG/NOTICE/NAMES/WHO/LIST,
  WHOIS, AWAY and CHATHISTORY become relay events; TOPIC, MODE, PING,
  USERHOST and ISON are answered here, harmlessly. CTCP ACTION (`/me`) is a
  `say`/`whisper` with `action`.
- IRCv3 (transports/ircv3_tags.py): `time` and `msgid` tags, BATCH,
  echo-message and labeled-response, as negotiated. A label travels to the
  relay as the request's `id` (PRIVMSG, WHOIS, CHATHISTORY) and comes back
  with its answer; any other labeled command is answered here at once: its
  own replies labeled, or `ACK`.
- Relay errors become the RFC numerics that clients act on (433 lets a
  client pick another nick during registration) or a server NOTICE.

Several IRC commands map to one relay request (`NAMES` and `WHO` both ask
`who`), so the codec remembers, in order, which command asked, and answers
the relay's `members` in that command's numerics. At most `max_pending`
such requests (and as many LISTs) wait for their answer: past that the
codec answers a NAMES, WHO or LIST itself, with an empty list, and records
nothing, so a client that never reads its answers cannot grow the record.

Threads (transports/codec.py has the rule): the reader thread owns the
decode state (input buffer, replies made here, registration progress), the
encoder owns what the relay told us (`registered`, `nick`, `rooms`, pings
out). What crosses is a value: immutable objects published by one
assignment (the hello answers the encoder counts against the hellos the
reader sent), and one-way deques of what a request's answer needs (the
reader appends, the encoder pops). No lock. The negotiated caps are such a
value: the reader replaces `caps` (and `_fan_key`, the part that changes
room traffic) on CAP REQ; the encoder only reads them. Batch references
never collide: the reader makes `L1, L2...`, the encoder `B1, B2...`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Final, Self

from transports import ircv3_caps, ircv3_history
from transports.codec import CodecSettings, Decoded, ServerCodec
from transports.errors import ERRORS, FATAL_CODES, ProtocolError
from transports.events import (
    Away,
    Ban,
    Bye,
    ClientEvent,
    Hello,
    Join,
    Kick,
    ListRooms,
    NickChange,
    Oper,
    Part,
    Ping,
    Pong,
    Say,
    Unban,
    Whisper,
    Who,
    Whois,
    hhmm,
)
from transports.irc_lines import (
    HOST,
    SERVER_NAME,
    IrcMessage,
    build,
    clean,
    decode_line,
    parse_line,
    text_lines,
    user_prefix,
    word_lines,
)
from transports.ircv3_tags import room_msgid, server_time, tag_prefix, whisper_msgid
from transports.validate import (
    HISTORY_MAX_LIMIT,
    ID_MAX_BYTES,
    MAX_REASON,
    check_text,
    ip_key,
    is_valid_nick,
    is_valid_room,
    nick_key,
)

_log = logging.getLogger("transports.irc")

# Commands a client may send before 001; anything else gets 451.
_PRE_REGISTRATION: Final = frozenset({"PASS", "NICK", "USER", "CAP", "PING", "PONG", "QUIT",
                                      "AUTHENTICATE"})
# How far past the relay's text limit a line may go (command, target, tags).
LINE_OVERHEAD: Final = 512
DEFAULT_MAX_PENDING: Final = 64  # NAMES/WHO (and LIST) requests awaiting an answer
_MAX_PINGS: Final = 16  # the relay's keepalive pings whose PONG we can still match
# Errors the relay's reader thread sends about a request it refused before it
# reached the hub: that request gets no other answer.
_REFUSED: Final = frozenset({"rate_limited", "not_ready"})
# Commands whose label rides to the relay as their request's id.
_LABEL_CARRIED: Final = frozenset({"PRIVMSG", "NOTICE", "WHOIS", "CHATHISTORY"})
_ACTION: Final = "\x01ACTION "
MOTD: Final = (
    "This is a chat-relay: join a channel with /join #lobby (every #name is a room).",
    "The same relay also speaks nc (plain text lines), WebSocket (the web page at "
    "http://HOST:PORT/) and the native msgpack protocol (chat-client), all on this port.",
)


def room_to_channel(room: str) -> str:
    return "#" + room


def _privmsg(sender: str, target: str, text: str, action: bool = False, tags: str = "") -> str:
    """PRIVMSG lines for a chat text (a CTCP ACTION when `action`), each with `tags`."""
    lines = text_lines(user_prefix(sender), "PRIVMSG", target, text, ctcp="ACTION" if action
                       else None)
    if not tags:
        return lines
    return "".join(tags + line + "\r\n" for line in lines.split("\r\n")[:-1])


def _split_action(text: str) -> tuple[str, bool]:
    """`\x01ACTION waves\x01` -> ("waves", True); any other text is itself."""
    if text.startswith(_ACTION):
        return text[len(_ACTION):].removesuffix("\x01"), True
    return text, False


def _msg_tags(body: dict[str, Any], caps: frozenset[str], batch: str | None = None,
              label: str | None = None) -> str:
    """The tag prefix of a msg or whisper under `caps`."""
    ts = body.get("ts")
    msgid: str | None = None
    if "message-tags" in caps:
        if body.get("t") == "whisper":
            msgid = whisper_msgid(str(body.get("from")), str(body.get("to")), int(ts or 0),
                                  str(body.get("text")))
        elif isinstance(body.get("seq"), int):
            msgid = room_msgid(str(body.get("room")), body["seq"])
    return tag_prefix((
        ("time", server_time(ts) if "server-time" in caps and isinstance(ts, int) else None),
        ("msgid", msgid),
        ("batch", batch),
        ("label", label),
    ))


class IrcServerCodec(ServerCodec):
    """The relay side of one IRC connection."""

    name = "irc"

    def __init__(
        self, max_frame: int = 65536, max_text: int = 4096, *,
        max_pending: int = DEFAULT_MAX_PENDING, max_rooms: int = 100,
    ) -> None:
        super().__init__(max_frame, max_text)
        self.max_line = max_text + LINE_OVERHEAD
        self.max_pending = max_pending
        self.max_rooms = max_rooms  # CHANLIMIT in 005: the relay's rooms per client
        # Decode state (reader thread) -------------------------------------
        self._buf = bytearray()  # at most max_line bytes between reads
        self._discarding = False  # inside an overlong line, until its LF
        self._out: list[str] = []  # replies made here, until data_to_send
        self._hold_at: int | None = None  # index in _out where held replies start
        self._password: str | None = None
        self._want_nick: str | None = None
        self._user_seen = False
        self._cap_open = False
        self._hellos_sent = 0
        self._hello_nick: str | None = None  # the nick of the last Hello sent
        self._answers_seen = 0  # hello answers the reader has acted on
        self._quit_reason = "Client quit"
        self._cap_version = 0  # 302 once a client said `CAP LS 302`
        self._sasl: ircv3_caps.SaslPlain | None = None  # a PLAIN exchange under way
        self._label: str | None = None  # the label of the command being dispatched
        self._label_used = False  # ... and whether its request carries it
        self._local_batches = 0  # batch refs made here ("L1", "L2", ...)
        # IRCv3 caps negotiated (the reader replaces the frozenset, the encoder reads)
        self.caps: frozenset[str] = frozenset()
        self._fan_key: frozenset[str] = frozenset()  # the caps that change room traffic
        # Decode -> encode (the reader publishes, the encoder reads or pops)
        self._held: tuple[str, ...] = ()  # replies held while a hello is out
        self._asked: deque[tuple[str, str]] = deque()  # (room, "names" | "who")
        self._list_filters: deque[frozenset[str] | None] = deque()
        self._opers: deque[None] = deque(maxlen=max_pending)  # OPERs awaiting an answer
        # Targets of NICK and private PRIVMSG, oldest first: names for an
        # error that lacks one (the hub's errors carry it). Bounded by
        # dropping the oldest, which costs only that fallback.
        self._whisper_to: deque[str] = deque(maxlen=max_pending)
        self._nick_to: deque[str] = deque(maxlen=max_pending)
        # Encode state (bus thread), read by the reader as published values
        self.registered = False
        self.rooms: tuple[str, ...] = ()
        # Hello answers so far, whether the last refused its nick, how many
        # held replies it carried.
        self._hello_answers: tuple[int, bool, int] = (0, False, 0)
        self._ping_ids: tuple[tuple[str, Any], ...] = ()  # (token, id), newest last
        self._batches = 0  # batch refs made by the encoder ("B1", "B2", ...)

    @classmethod
    def configured(cls, settings: CodecSettings) -> Self:
        return cls(settings.max_frame, settings.max_text, max_pending=settings.max_pending,
                   max_rooms=settings.max_rooms_per_client)

    @property
    def hello_in_flight(self) -> bool:
        """A Hello went out and the relay has not answered it yet."""
        return self._hellos_sent > self._hello_answers[0]

    @property
    def me(self) -> str:
        """The nick numerics are addressed to ("*" before registration)."""
        return self.nick or "*"

    # Output helpers -------------------------------------------------------------

    def _numeric(self, code: str, *params: str, text: str | None = None) -> str:
        return build(SERVER_NAME, code, (self.me, *params), text)

    def _reply(self, code: str, *params: str, text: str | None = None) -> None:
        if code[:1] in ("4", "5"):
            self.own_errors += 1  # an error numeric the relay never saw: still charged
            if self.own_errors > self.error_allowance:
                return  # the reader closes this connection for too many errors
        self._out.append(self._numeric(code, *params, text=text))

    def _server_notice(self, text: str) -> str:
        return text_lines(SERVER_NAME, "NOTICE", self.me, text or "-")

    def data_to_send(self) -> bytes:
        self._take_answers()
        cut = len(self._out) if self._hold_at is None else self._hold_at
        if not cut:
            return b""
        data = "".join(self._out[:cut]).encode("utf-8", "replace")
        del self._out[:cut]
        if self._hold_at is not None:
            self._hold_at = 0
        return data

    def _publish_held(self) -> None:
        """Hand the encoder what is held, as a value, for the hello's answer to carry."""
        if self._hold_at is not None:
            self._held = tuple(self._out[self._hold_at:])

    def _take_answers(self) -> None:
        """Act on hello answers the encoder published since the last look."""
        count, nick_refused, taken = self._hello_answers
        if count == self._answers_seen:
            return
        self._answers_seen = count
        if self._hold_at is not None and count >= self._hellos_sent:
            # The answer carried the first `taken` held replies; the rest go now.
            del self._out[self._hold_at : self._hold_at + taken]
            self._hold_at = None
            self._held = ()
        if nick_refused and self._want_nick == self._hello_nick:
            self._want_nick = None  # registration waits for another NICK

    def _release_held(self, nick_refused: bool) -> str:
        """The encoder's side: answer the hello, carrying what was held behind it."""
        if not self.hello_in_flight:
            return ""
        held = self._held
        self._hello_answers = (self._hello_answers[0] + 1, nick_refused, len(held))
        return "".join(held)

    # Bytes in -----------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Decoded]:
        out: list[Decoded] = []
        if self.closed:
            return out
        if not data:
            self.closed = True
            return out
        try:
            self._take_answers()
            self._receive(data, out)
            self._try_register(out)  # a NICK that followed a refused hello
        except Exception:  # a bug costs this connection only
            _log.exception("irc codec failed; closing the connection")
            self._out.append("ERROR :Closing Link: internal error\r\n")
            self.closed = True
        self._publish_held()
        return out

    def _receive(self, data: bytes, out: list[Decoded]) -> None:
        buf = self._buf
        buf += data
        start = 0
        while not self.closed:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            raw = bytes(buf[start:end])
            start = end + 1
            if self._discarding:
                self._discarding = False
                continue
            if len(raw) > self.max_line:
                self._too_long(len(raw))
                continue
            message = parse_line(decode_line(raw.rstrip(b"\r")))
            if message is not None:
                self._dispatch(message, out)
        del buf[:start]
        if self.closed:
            buf.clear()
        elif len(buf) > self.max_line:
            if not self._discarding:
                self._too_long(len(buf))
            self._discarding = True
            buf.clear()

    def _too_long(self, size: int) -> None:
        self._reply(
            "417",
            text=f"Input line was too long ({size} bytes, the limit is {self.max_line})",
        )

    def _dispatch(self, m: IrcMessage, out: list[Decoded]) -> None:
        handler = _HANDLERS.get(m.command)
        # Once a Hello is out, later commands follow it in order: the relay
        # acts on them after the hello's outcome (a bot may send NICK, USER
        # and JOIN in one go).
        if not (self.registered or self.hello_in_flight) and m.command not in _PRE_REGISTRATION:
            self._reply("451", text="You have not registered")
            return
        if handler is None:
            self._reply("421", clean(m.command)[:32], text="Unknown command")
            return
        label = m.tags.get("label") if "labeled-response" in self.caps else None
        if label is not None and (not label or len(label.encode()) > ID_MAX_BYTES):
            label = None  # too long to travel as an id: answered unlabeled
        self._label, self._label_used = label, False
        start = len(self._out)
        try:
            handler(self, m.params, out)
        finally:
            self._label = None
        if label is not None and not self._label_used:
            self._label_local(label, start)
        if m.command in ("NICK", "USER", "CAP"):
            self._try_register(out)

    def _label_local(self, label: str, start: int) -> None:
        """Label what this command got from the codec: one line tagged, several
        in a labeled-response batch, none as `ACK`."""
        lines = [ln + "\r\n" for ln in "".join(self._out[start:]).split("\r\n")[:-1]]
        del self._out[start:]
        self._local_batches += 1
        self._out.append(labeled(lines, label, self.caps, f"L{self._local_batches}"))

    def _carry_label(self) -> str | None:
        """The label for the request this command makes (it comes back as its id)."""
        if self._label is not None:
            self._label_used = True
        return self._label

    def _need(self, command: str, params: tuple[str, ...], count: int) -> bool:
        if len(params) >= count and all(params[:count]):
            return True
        self._reply("461", command, text="Not enough parameters")
        return False

    def _channel_room(self, channel: str) -> str | None:
        """The room for `#name`, or None after replying 403/479."""
        if not channel.startswith("#"):
            self._reply("403", channel[:64], text="No such channel (channels start with #)")
            return None
        room = channel[1:]
        if not is_valid_room(room):
            self._reply(
                "479",
                channel[:64],
                text="Illegal channel name: 1-64 characters of A-Z a-z 0-9 _ . # - after the #",
            )
            return None
        return room

    # Registration -------------------------------------------------------------

    def _try_register(self, out: list[Decoded]) -> None:
        if (
            not self.registered
            and not self.closed
            and self._want_nick is not None
            and self._user_seen
            and not self._cap_open
            and not self.hello_in_flight
        ):
            self._hello_nick = self._want_nick
            self._hellos_sent += 1
            out.append(Hello(nick=self._want_nick, rooms=(), password=self._password))
            # Replies we make ourselves to commands after this one must not
            # overtake the relay's answer to the hello (001 comes first).
            self._hold_at = len(self._out)

    def _cmd_pass(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        if self.registered:
            self._reply("462", text="You may not reregister")
        elif self._need("PASS", params, 1):
            self._password = params[0]

    def _cmd_nick(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        if not params or not params[0]:
            self._reply("431", text="No nickname given")
            return
        nick = params[0]
        if not is_valid_nick(nick):
            self._reply(
                "432", clean(nick)[:40], text="Erroneous nickname: 1-32 of A-Z a-z 0-9 _ -"
            )
            return
        if not self.registered and not self.hello_in_flight:
            self._want_nick = nick
            return
        if nick == (self.nick or self._hello_nick):
            return
        self._nick_to.append(nick)
        out.append(NickChange(nick))

    def _cmd_user(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        if self.registered or self.hello_in_flight:
            self._reply("462", text="You may not reregister")
        elif self._need("USER", params, 4):
            self._user_seen = True

    def _cmd_cap(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        sub = params[0].upper() if params else ""
        if sub == "LS":
            self._cap_open = not self.registered
            version = params[1] if len(params) > 1 else ""
            if version.isdigit() and len(version) < 6:
                self._cap_version = max(self._cap_version, int(version))
            value = ircv3_caps.ls_value(self._cap_version)
            self._out.append(build(SERVER_NAME, "CAP", [self.me, "LS"], value))
        elif sub == "LIST":
            self._out.append(build(SERVER_NAME, "CAP", [self.me, "LIST"], " ".join(
                sorted(self.caps))))
        elif sub == "REQ":
            self._cap_open = not self.registered
            asked = params[1] if len(params) > 1 else ""
            caps = ircv3_caps.request(asked, self.caps)
            if caps is None:
                self._out.append(build(SERVER_NAME, "CAP", [self.me, "NAK"], asked[:400]))
            else:
                self.caps = caps
                self._fan_key = caps & ircv3_caps.FANOUT_CAPS
                self._out.append(build(SERVER_NAME, "CAP", [self.me, "ACK"], asked[:400]))
        elif sub == "END":
            self._cap_open = False
        else:
            self._reply("410", clean(sub)[:20] or "*", text="Invalid CAP command")

    def _cmd_authenticate(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        """SASL PLAIN: the password becomes the hello's, checked by the relay at
        registration like PASS (a wrong one gets 464 there); the account is the nick."""
        if not self._need("AUTHENTICATE", params, 1):
            return
        if self.registered or self.hello_in_flight:
            self._reply("907", text="You have already authenticated using SASL")
            return
        if "sasl" not in self.caps:
            self._reply("904", text="SASL authentication failed: CAP REQ sasl first")
            return
        arg = params[0]
        if arg == "*":
            self._sasl = None
            self._reply("906", text="SASL authentication aborted")
            return
        if self._sasl is None:
            if arg.upper() != "PLAIN":
                self._reply("908", "PLAIN", text="are available SASL mechanisms")
                self._reply("904", text="SASL authentication failed")
                return
            self._sasl = ircv3_caps.SaslPlain()
            self._out.append("AUTHENTICATE +\r\n")
            return
        outcome = self._sasl.feed(arg)
        if outcome is None:
            return
        self._sasl = None
        if isinstance(outcome, str):
            self._reply("904", text=f"SASL authentication failed: {outcome}")
            return
        self._password = outcome[1]
        account = self._want_nick or outcome[0]
        me = self._want_nick or "*"  # the nick this client asked for, as the spec shows
        self._out.append(build(SERVER_NAME, "900", [me, user_prefix(account), account],
                               f"You are now logged in as {account}"))
        self._out.append(build(SERVER_NAME, "903", [me], "SASL authentication successful"))

    def _cmd_ping(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        if not params:
            self._reply("409", text="No origin specified")
            return
        token = params[-1][:200]
        # The token travels as the ping's `id`, which is a string of at most
        # ID_MAX_BYTES; a longer one is answered here, in its full length
        # (clients match their token exactly), just without the ordering.
        if self.registered and len(token.encode("utf-8", "replace")) <= ID_MAX_BYTES:
            # Through the relay like any command, so the PONG comes after the
            # replies to what was sent before it, as an IRC server orders them.
            out.append(Ping(token))
            return
        self._out.append(_pong(token))

    def _cmd_pong(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        if not params:
            return
        for token, msg_id in self._ping_ids:
            if token == params[-1]:
                out.append(Pong(msg_id))
                return

    def _cmd_quit(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        reason = clean(params[0])[:MAX_REASON].strip() if params else ""
        self._quit_reason = reason or "Client quit"
        out.append(Bye(reason or None))
        self.closed = True

    def farewell(self) -> bytes:
        return f"ERROR :Closing Link: {self.me} (Quit: {clean(self._quit_reason)})\r\n".encode()

    # Channels and messages ----------------------------------------------------

    def _cmd_join(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        if not self._need("JOIN", params, 1):
            return
        if params[0] == "0":  # RFC 2812: JOIN 0 leaves every channel
            out.extend(Part(room) for room in self.rooms)
            return
        for channel in params[0].split(","):
            room = self._channel_room(channel)
            if room is not None:
                out.append(Join(room))

    def _cmd_part(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        if not self._need("PART", params, 1):
            return
        for channel in params[0].split(","):
            room = self._channel_room(channel)
            if room is not None:
                out.append(Part(room))

    def _cmd_privmsg(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        self._message("PRIVMSG", params, out)

    def _cmd_notice(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        self._message("NOTICE", params, out)

    def _message(self, command: str, params: tuple[str, ...], out: list[Decoded]) -> None:
        # RFC 2812 3.3.2: a NOTICE never gets an automatic reply.
        quiet = command == "NOTICE"
        if not params or not params[0]:
            if not quiet:
                self._reply("411", text=f"No recipient given ({command})")
            return
        if len(params) < 2 or not params[1]:
            if not quiet:
                self._reply("412", text="No text to send")
            return
        text, action = _split_action(params[1])
        if not text:
            return  # a CTCP ACTION with nothing to do
        label = self._carry_label()
        for target in params[0].split(",")[:8]:
            label, first_label = None, label  # one labeled answer per command
            if target.startswith("#"):
                room = target[1:]
                if not is_valid_room(room):
                    if not quiet:
                        self._reply("403", clean(target)[:64], text="No such channel")
                    continue
                ref = "say"
            elif is_valid_nick(target):
                room = None
                ref = "whisper"
            else:
                if not quiet:
                    self._reply("401", clean(target)[:64] or "*", text="No such nick/channel")
                continue
            try:
                check_text(text, self.max_text, ref)
            except ProtocolError as err:
                if not quiet:
                    out.append(err)
                continue
            if room is not None:
                out.append(Say(room, text, first_label, action or None))
            else:
                self._whisper_to.append(target)
                out.append(Whisper(target, text, first_label, action or None))

    def _ask_members(self, room: str, kind: str, out: list[Decoded]) -> None:
        """Ask the relay for `room`'s members, remembering which command asked.

        Past `max_pending` unanswered ones, the end of an empty list answers
        at once and nothing is recorded (clients wait for that end numeric).
        """
        if len(self._asked) >= self.max_pending:
            code, end = ("315", "End of WHO list") if kind == "who" else ("366",
                                                                           "End of /NAMES list")
            self._reply(code, room_to_channel(room),
                        text=f"{end} (over {self.max_pending} requests unanswered)")
            return
        self._asked.append((room, kind))
        out.append(Who(room))

    def _cmd_names(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        if not params:
            self._reply("366", "*", text="End of /NAMES list")
            return
        for channel in params[0].split(",")[:8]:
            room = channel[1:] if channel.startswith("#") else ""
            if is_valid_room(room):
                self._ask_members(room, "names", out)
            else:
                self._reply("366", clean(channel)[:64] or "*", text="End of /NAMES list")

    def _cmd_who(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        mask = params[0] if params else "*"
        room = mask[1:] if mask.startswith("#") else ""
        if is_valid_room(room):
            self._ask_members(room, "who", out)
        else:
            self._reply("315", clean(mask)[:64] or "*", text="End of WHO list")

    def _cmd_list(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        if len(self._list_filters) >= self.max_pending:
            self._reply("323", text=f"End of /LIST (over {self.max_pending} requests unanswered)")
            return
        wanted: frozenset[str] | None = None
        if params and params[0].startswith("#"):
            # At most 8 channels, like NAMES: the filter waits for the answer.
            wanted = frozenset(c[1:] for c in params[0].split(",")[:8] if c.startswith("#"))
        self._list_filters.append(wanted)
        out.append(ListRooms())

    def _cmd_topic(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        if not self._need("TOPIC", params, 1):
            return
        room = self._channel_room(params[0])
        if room is None:
            return
        channel = room_to_channel(room)
        if room not in self.rooms:
            self._reply("442", channel, text="You're not on that channel")
        elif len(params) > 1:
            self._reply("482", channel, text="Topics are not kept by this relay")
        else:
            self._reply("331", channel, text="No topic is set")

    # Moderation (extension): OPER, KICK and MODE +b/-b map to the relay's
    # oper, kick, ban and unban, which act relay-wide: a KICK disconnects.

    def _cmd_oper(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        if not self._need("OPER", params, 1):
            return
        self._opers.append(None)
        out.append(Oper(params[-1]))  # OPER <name> <password>: the name is not used

    def _cmd_kick(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        if not self._need("KICK", params, 2):
            return
        reason = params[2][:MAX_REASON] if len(params) > 2 and params[2] else None
        for nick in params[1].split(",")[:8]:
            if is_valid_nick(nick):
                out.append(Kick(nick, reason))
            else:
                self._reply("401", clean(nick)[:64] or "*", text="No such nick/channel")

    def _ban_mask(self, mask: str) -> ClientEvent | None:
        """`nick`, `nick!*@*` or `*!*@IP` -> the target of a ban; None after a 461."""
        nick, _, rest = mask.partition("!")
        host = rest.rpartition("@")[2] if rest else ""
        ip = ip_key(host) if host not in ("", "*") else None
        if ip is not None:
            return Ban(ip=ip)
        if is_valid_nick(nick):
            return Ban(nick=nick)
        self._reply("461", "MODE", text="Ban masks are NICK, NICK!*@* or *!*@IP")
        return None

    def _cmd_mode(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        if not self._need("MODE", params, 1):
            return
        target = params[0]
        if target.startswith("#") and len(params) > 2 and params[1] in ("+b", "-b", "b"):
            ban = self._ban_mask(params[2])
            if isinstance(ban, Ban):
                out.append(ban if params[1] != "-b" else Unban(ban.nick, ban.ip))
            return
        if target.startswith("#"):
            room = self._channel_room(target)
            if room is None:
                return
            channel = room_to_channel(room)
            flags = params[1].lstrip("+") if len(params) > 1 else ""
            if not flags:
                self._out.append(self._numeric("324", channel, "+"))
            elif flags == "b":
                self._reply("368", channel, text="End of channel ban list")
            elif flags == "e":
                self._reply("349", channel, text="End of channel exception list")
            elif flags == "I":
                self._reply("347", channel, text="End of channel invite list")
            else:
                self._reply("482", channel, text="Channel modes are not kept by this relay")
        elif self.nick is not None and nick_key(target) == nick_key(self.nick):
            self._out.append(self._numeric("221", "+"))
        else:
            self._reply("502", text="Can't change mode for other users")

    def _cmd_whois(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        """WHOIS [server] nick: the relay answers with the nick's rooms (311/312/319/318)."""
        if not self._need("WHOIS", params, 1):
            return
        target = params[-1].split(",")[0]
        if not is_valid_nick(target):
            self._reply("401", clean(target)[:64] or "*", text="No such nick/channel")
            self._reply("318", clean(target)[:64] or "*", text="End of /WHOIS list")
            return
        out.append(Whois(target, self._carry_label()))

    def _cmd_motd(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        self._out.append(self._motd())

    def _motd(self) -> str:
        lines = [self._numeric("375", text=f"- {SERVER_NAME} Message of the day -")]
        lines += [self._numeric("372", text=f"- {line}") for line in MOTD]
        lines.append(self._numeric("376", text="End of /MOTD command"))
        return "".join(lines)

    def _cmd_chathistory(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        if "draft/chathistory" not in self.caps:
            self._reply("421", "CHATHISTORY", text="Unknown command (CAP REQ draft/chathistory)")
            return
        try:
            request = ircv3_history.parse(params, self._label)
        except ircv3_history.HistoryFail as fail:
            self._out.append(fail.line())
            return
        if isinstance(request, str):  # a nick: private history is not kept
            self._local_batches += 1
            self._out.append(self._batch(f"L{self._local_batches}", "chathistory", [request], []))
            return
        self._carry_label()
        out.append(request)

    def _cmd_tagmsg(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        """TAGMSG (typing notices and the like): the relay has nowhere to carry them."""

    def _cmd_userhost(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        found = [
            f"{self.nick}=+{self.nick}@{HOST}"
            for p in params[:5]
            if self.nick is not None and nick_key(p) == nick_key(self.nick)
        ]
        self._reply("302", text=" ".join(found))

    def _cmd_away(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        """Through the hub: WHOIS shows it, away-notify tells the rooms; the
        answer (305/306) is the hub's `away` about this client."""
        text = clean(params[0])[:MAX_REASON].strip() if params else ""
        out.append(Away(text or None))

    def _cmd_ison(self, params: tuple[str, ...], out: list[Decoded]) -> None:
        self._reply("303", text="")

    # Bodies out ---------------------------------------------------------------

    def encode(self, body: dict[str, Any]) -> bytes:
        try:
            handler = _ENCODERS.get(str(body.get("t")))
            text = handler(self, body) if handler is not None else ""
        except Exception:  # a malformed body must not cost the relay a thread
            _log.exception("irc codec could not encode %r", body.get("t"))
            return b""
        return text.encode("utf-8", "replace")

    def _enc_welcome(self, body: dict[str, Any]) -> str:
        self.nick = str(body["nick"])
        self.registered = True
        version = clean(str(body.get("server", SERVER_NAME))).replace(" ", "_") or SERVER_NAME
        me = self.nick
        lines = [
            self._numeric("001", text=f"Welcome to the chat-relay IRC gateway {user_prefix(me)}"),
            self._numeric("002", text=f"Your host is {SERVER_NAME}, running version {version}"),
            self._numeric("003", text="This server speaks chat-relay protocol v1"),
            self._numeric("004", SERVER_NAME, version, "i", "nt"),
            self._numeric(
                "005",
                "CHANTYPES=#",
                "NICKLEN=32",
                "CHANNELLEN=65",
                f"CHANLIMIT=#:{self.max_rooms}",
                "CASEMAPPING=ascii",
                f"NETWORK={SERVER_NAME}",
                f"CHATHISTORY={HISTORY_MAX_LIMIT}",
                "MSGREFTYPES=msgid,timestamp",
                text="are supported by this server",
            ),
            self._motd(),
        ]
        return "".join(lines) + self._release_held(False)

    def _enc_error(self, body: dict[str, Any]) -> str:
        ref, code = body.get("ref"), body.get("code")
        if code in _REFUSED:
            self._forget_refused(str(ref))
        if ref == "oper" and code not in _REFUSED:
            _pop(self._opers)
        if ref == "hello":
            refused = code in ("nick_taken", "nick_invalid")
            return self._enc_error_now(body) + self._release_held(refused)
        return self._enc_error_now(body)

    def _forget_refused(self, ref: str) -> None:
        """A request the relay refused before the hub (rate limit) gets no answer:
        drop what was recorded for it. The reader sends this error while it
        dispatches the request's line, so the record is the newest one (unless
        a later command on the same line was taken: then that one's goes)."""
        queues: dict[str, deque[Any]] = {
            "who": self._asked, "rooms": self._list_filters, "oper": self._opers,
        }
        queue = queues.get(ref)
        if queue:
            try:
                queue.pop()
            except IndexError:  # the encoder answered it meanwhile
                pass

    def _enc_error_now(self, body: dict[str, Any]) -> str:
        """The reply an IRC client reads an error as: the numeric the error
        table gives its code (transports/errors.py), except where the command
        that asked decides, then the closing line if the code closes."""
        code = str(body.get("code", ""))
        text = str(body.get("text", ""))
        ref = body.get("ref")
        room = body.get("room")
        channel = room_to_channel(room) if isinstance(room, str) else "*"
        nick = str(body.get("nick") or "*")
        if code in ("nick_taken", "nick_invalid"):
            if ref == "hello" or not self.registered:
                asked = self._hello_nick
            else:
                asked = _pop(self._nick_to)  # this answer's record, used or not
            nick = str(body.get("nick") or asked or "*")
        elif code == "muted" and ref == "say":
            return self._numeric("404", channel, text=f"Cannot send to channel ({text})")
        elif code == "no_such_nick" and ref == "whois":
            nick = clean(nick)
            return self._labeled_lines([
                self._error_numeric(code, text, channel, nick),
                self._numeric("318", nick, text="End of /WHOIS list")], body.get("id"))
        elif code == "no_such_nick":
            nick = str(body.get("nick") or _pop(self._whisper_to) or "*")
        else:
            in_context = self._error_in_context(code, text, ref, channel, body)
            if in_context is not None:
                return in_context
        reply = self._error_numeric(code, text, channel, nick)
        if code in FATAL_CODES:
            self.closed = True
            reply += f"ERROR :Closing Link: {self.me} ({clean(code)}: {clean(text)})\r\n"
        return reply or self._server_notice(f"error {code}: {text}")

    def _error_in_context(self, code: str, text: str, ref: Any, channel: str,
                          body: dict[str, Any]) -> str | None:
        """The replies the command that asked decides (None: the table's)."""
        if ref == "chathistory":
            fail = build(SERVER_NAME, "FAIL", ["CHATHISTORY", "INVALID_TARGET", "*", channel],
                         text)
            return self._labeled_lines([fail], body.get("id"))
        if ref == "whisper":
            _pop(self._whisper_to)
        if code == "not_in_room" and ref == "who":
            room = body.get("room")
            kind = self._pop_members_kind(str(room)) if isinstance(room, str) else "names"
            if kind == "who":
                return self._numeric("315", channel, text="End of WHO list")
            return self._numeric("366", channel, text="End of /NAMES list")
        if code == "not_in_room" and ref == "say":
            return self._numeric("404", channel, text="Cannot send to channel (join it first)")
        return None

    def _error_numeric(self, code: str, text: str, channel: str, nick: str) -> str:
        """The error table's numeric for `code` ("" when it has none)."""
        rule = ERRORS.get(code)
        if rule is None or rule.irc is None:
            return ""
        named = {"channel": (channel,), "nick": (nick,), "": ()}[rule.irc.names]
        return self._numeric(rule.irc.numeric, *named, text=rule.irc.text.format(text=text))

    def _pop_members_kind(self, room: str) -> str:
        """Which command asked for `room`'s members.

        The hub answers one connection's requests in order, so the oldest
        record is this answer's; older records for other rooms belong to
        requests refused on the way and are dropped.
        """
        queue = self._asked
        while queue:
            try:
                asked, kind = queue.popleft()
            except IndexError:
                break
            if asked == room:
                return kind
        return "names"

    def _peek_members_kind(self, room: str) -> str:
        """Like `_pop_members_kind`, for a page that is not the last: the
        record stays for the pages still to come."""
        queue = self._asked
        while queue:
            try:
                asked, kind = queue[0]
            except IndexError:
                break
            if asked == room:
                return kind
            _pop(queue)  # a refused request's record (see _pop_members_kind)
        return "names"

    def _names(self, room: str, members: list[str]) -> str:
        channel = room_to_channel(room)
        prefix = f":{SERVER_NAME} 353 {self.me} = {channel} :"
        return "".join(word_lines(prefix, [clean(m) for m in members])) + self._numeric(
            "366", channel, text="End of /NAMES list"
        )

    def _enc_joined(self, body: dict[str, Any]) -> str:
        room = str(body["room"])
        already = room in self.rooms
        if not already:
            self.rooms = (*self.rooms, room)
        join = "" if already else f":{user_prefix(self.me)} JOIN {room_to_channel(room)}\r\n"
        names = self._names(room, list(body.get("members", ())))
        if body.get("truncated") or body.get("quiet"):
            names += _channel_notice(room, _big_room_text(room, body.get("count"), True))
        return join + names

    def _enc_parted(self, body: dict[str, Any]) -> str:
        room = str(body["room"])
        self.rooms = tuple(r for r in self.rooms if r != room)
        return f":{user_prefix(self.me)} PART {room_to_channel(room)}\r\n"

    def _enc_pong(self, body: dict[str, Any]) -> str:
        return _pong(str(body.get("id") or ""))

    def _enc_renamed(self, body: dict[str, Any]) -> str:
        old, new = self.me, str(body["nick"])
        self.nick = new
        _pop(self._nick_to)
        return f":{user_prefix(old)} NICK :{clean(new)}\r\n"

    def _enc_members(self, body: dict[str, Any]) -> str:
        """353s then 366 (NAMES) or 352s then 315 (WHO); a big room's list comes
        in pages (`more`), and only the last one ends the reply."""
        room = str(body["room"])
        members = [clean(str(m)) for m in body.get("members", ())]
        more = bool(body.get("more"))
        kind = self._peek_members_kind(room) if more else self._pop_members_kind(room)
        channel = room_to_channel(room)
        if kind == "names":
            if more:
                prefix = f":{SERVER_NAME} 353 {self.me} = {channel} :"
                return "".join(word_lines(prefix, members))
            return self._names(room, members)
        lines = [
            self._numeric("352", channel, m, HOST, SERVER_NAME, m, "H", text=f"0 {m}")
            for m in members
        ]
        end = "" if more else self._numeric("315", channel, text="End of WHO list")
        return "".join(lines) + end

    def _enc_rooms(self, body: dict[str, Any]) -> str:
        wanted = _pop(self._list_filters)
        rooms = body.get("rooms") or {}
        lines = [self._numeric("321", "Channel", text="Users  Name")]
        for room, count in sorted(rooms.items()):
            if wanted is None or room in wanted:
                lines.append(self._numeric("322", room_to_channel(str(room)), str(count), text=""))
        if body.get("truncated"):
            lines.append(self._server_notice(
                f"LIST shows the {len(rooms)} largest of {body.get('total', '?')} rooms"))
        lines.append(self._numeric("323", text="End of /LIST"))
        return "".join(lines)

    def _enc_msg(self, body: dict[str, Any]) -> str:
        sender = body.get("from")
        if self.nick is not None and isinstance(sender, str):
            if nick_key(sender) == nick_key(self.nick):
                return self._echo(body, None)
        return self.encode_fanout(body, self._fan_key).decode("utf-8", "replace")

    def _echo(self, body: dict[str, Any], label: Any) -> str:
        """This client's own msg or whisper: echo-message shows it (labeled), a
        label without echo-message gets `ACK`, else nothing (IRC shows its own)."""
        label = label if isinstance(label, str) and "labeled-response" in self.caps else None
        if "echo-message" not in self.caps:
            return _ack(label) if label is not None else ""
        target = str(body.get("to")) if body.get("t") == "whisper" else \
            room_to_channel(str(body.get("room")))
        return _privmsg(self.me, target, str(body.get("text", "")), bool(body.get("action")),
                        _msg_tags(body, self.caps, label=label))

    def _enc_whisper(self, body: dict[str, Any]) -> str:
        sender = str(body.get("from", ""))
        if self.nick is not None and nick_key(sender) == nick_key(self.nick):
            _pop(self._whisper_to)
            return self._echo(body, body.get("id"))
        return _privmsg(sender, self.me, str(body.get("text", "")), bool(body.get("action")),
                        _msg_tags(body, self.caps))

    def _enc_presence(self, body: dict[str, Any]) -> str:
        if self._about_me(body):
            return ""
        return self.encode_fanout(body, self._fan_key).decode("utf-8", "replace")

    def _enc_presence_batch(self, body: dict[str, Any]) -> str:
        return self._batch_own(body).decode("utf-8", "replace")

    def _batch_own(self, body: dict[str, Any]) -> bytes:
        """A presence_batch without the reader's own events (`joined` etc. showed them)."""
        events = body.get("events")
        mine = [e for e in events if isinstance(e, dict) and not self._about_me(e)] \
            if isinstance(events, list | tuple) else []
        return self.encode_fanout({**body, "events": mine}, None)

    def _enc_history(self, body: dict[str, Any]) -> str:
        """Replayed history (after a join or resume): a chathistory batch where
        the client took `batch`; else a join replay as PRIVMSGs with a time
        prefix, and a resume's messages as they would have come."""
        if body.get("replay") is True and "batch" not in self.caps:
            return self._enc_replay(body)
        messages = [m for m in body.get("messages", ()) if isinstance(m, dict)]
        if "batch" in self.caps and messages:
            return self._history_batch(str(body.get("room")), messages, None)
        return "".join(self._enc_msg(m) for m in messages)

    def _history_batch(self, room: str, messages: list[dict[str, Any]], label: Any) -> str:
        self._batches += 1
        ref = f"B{self._batches}"
        lines = [
            _privmsg(str(m.get("from")), room_to_channel(room), str(m.get("text", "")),
                     bool(m.get("action")), _msg_tags(m, self.caps, batch=ref))
            for m in messages
        ]
        return self._batch(ref, "chathistory", [room_to_channel(room)], lines, label)

    def _batch(self, ref: str, kind: str, params: list[str], lines: list[str],
               label: Any = None) -> str:
        """`BATCH +ref kind params`, the lines (already tagged batch=ref), `BATCH -ref`."""
        label = label if isinstance(label, str) and "labeled-response" in self.caps else None
        if "batch" not in self.caps:
            return "".join(lines) if lines or label is None else _ack(label)
        start = tag_prefix([("label", label)]) + build(SERVER_NAME, "BATCH", ["+" + ref, kind,
                                                                              *params])
        return start + "".join(lines) + build(SERVER_NAME, "BATCH", ["-" + ref])

    def _enc_chathistory(self, body: dict[str, Any]) -> str:
        label = body.get("id")
        if body.get("sub") == "targets":
            self._batches += 1
            ref = f"B{self._batches}"
            lines = [
                tag_prefix([("batch", ref)]) + build(
                    SERVER_NAME, "CHATHISTORY",
                    ["TARGETS", room_to_channel(str(name)), f"timestamp={server_time(int(ts))}"])
                for name, ts in body.get("targets", ())
            ]
            return self._batch(ref, "draft/chathistory-targets", [], lines, label)
        messages = [m for m in body.get("messages", ()) if isinstance(m, dict)]
        return self._history_batch(str(body.get("room")), messages, label)

    def _enc_whois(self, body: dict[str, Any]) -> str:
        nick = clean(str(body.get("nick")))
        rooms = [room_to_channel(clean(str(r))) for r in body.get("rooms", ())]
        lines = [self._numeric("311", nick, nick, HOST, "*", text=nick),
                 self._numeric("312", nick, SERVER_NAME, text="chat-relay")]
        if rooms:
            prefix = f":{SERVER_NAME} 319 {self.me} {nick} :"
            lines += word_lines(prefix, rooms)
        if body.get("away"):
            lines.append(self._numeric("301", nick, text=str(body["away"])))
        lines.append(self._numeric("318", nick, text="End of /WHOIS list"))
        return self._labeled_lines(lines, body.get("id"))

    def _labeled_lines(self, lines: list[str], label: Any) -> str:
        if not isinstance(label, str) or "labeled-response" not in self.caps:
            return "".join(lines)
        self._batches += 1
        return labeled(lines, label, self.caps, f"B{self._batches}")

    def _enc_away(self, body: dict[str, Any]) -> str:
        """AWAY: 305/306 for this client's own, `AWAY` lines with away-notify."""
        nick, text = str(body.get("nick", "")), body.get("text")
        if self.nick is not None and nick_key(nick) == nick_key(self.nick):
            if text:
                return self._numeric("306", text="You have been marked as being away")
            return self._numeric("305", text="You are no longer marked as being away")
        if "away-notify" not in self.caps:
            return ""
        return build(user_prefix(clean(nick)), "AWAY", (),
                     str(text) if text else None)

    def _enc_replay(self, body: dict[str, Any]) -> str:
        """A join replay: the room's latest messages right after the JOIN and NAMES.

        A client that negotiated `batch` gets it as one `chathistory` batch with
        `@time=` tags and untouched texts (`_enc_history`). Every other client gets plain PRIVMSGs
        from the original nicks (its own included: they are history, not an
        echo) with `[HH:MM] ` (the relay's local time) before the text, the way
        Ergo's autoreplay serves clients without server-time.
        """
        return self._replay_plain(body)

    @staticmethod
    def _replay_plain(body: dict[str, Any]) -> str:
        lines = []
        for m in body.get("messages", ()):
            if not isinstance(m, dict):
                continue
            sender = clean(str(m.get("from", "*"))).replace(" ", "_")
            channel = room_to_channel(str(m.get("room", body.get("room"))))
            text = f"[{hhmm(m.get('ts'))}] {m.get('text', '')}"
            lines.append(text_lines(user_prefix(sender), "PRIVMSG", channel, text))
        return "".join(lines)

    def _enc_ping(self, body: dict[str, Any]) -> str:
        msg_id = body.get("id")
        token = clean(str(msg_id if msg_id is not None else SERVER_NAME)).replace(" ", "_")[:64]
        self._ping_ids = (*self._ping_ids[-(_MAX_PINGS - 1) :], (token, msg_id))
        return f"PING :{token}\r\n"

    def _enc_notice(self, body: dict[str, Any]) -> str:
        text = str(body.get("text", ""))
        if text == "you are an operator" and self._opers:
            _pop(self._opers)
            return self._numeric("381", text="You are now an IRC operator")
        return self._server_notice(text)

    def _about_me(self, body: dict[str, Any]) -> bool:
        """Whether a presence is this client's own join/part/rename, which
        `joined`/`parted`/`renamed` already showed it."""
        if self.nick is None:
            return False
        me = nick_key(self.nick)
        nick, new = body.get("nick"), body.get("new")
        return (isinstance(nick, str) and nick_key(nick) == me) or (
            isinstance(new, str) and nick_key(new) == me
        )

    # Fan-out ------------------------------------------------------------------

    # The key is the negotiated caps that change room traffic (tags); a client
    # may still CAP REQ after its first join, so it is asked each time.
    fixed_fanout_key = False

    def fanout_key(self, room: str) -> Hashable:
        return self._fan_key

    @classmethod
    def encode_fanout(cls, body: dict[str, Any], key: Hashable) -> bytes:
        t = body.get("t")
        caps: frozenset[str] = key if isinstance(key, frozenset) else frozenset()
        try:
            if t == "msg":
                return _privmsg(
                    str(body["from"]), room_to_channel(str(body["room"])), str(body["text"]),
                    bool(body.get("action")), _msg_tags(body, caps),
                ).encode("utf-8", "replace")
            if t == "presence_batch":
                return cls._batch_lines(body)
            if t == "presence":
                nick = clean(str(body["nick"]))
                channel = room_to_channel(clean(str(body["room"])))
                event = body.get("event")
                if event == "join":
                    return f":{user_prefix(nick)} JOIN {channel}\r\n".encode()
                if event == "part" and body.get("by"):  # an operator removed them
                    by = clean(str(body["by"]))
                    return text_lines(user_prefix(by), "KICK", f"{channel} {nick}",
                                      str(body.get("reason") or by)).encode("utf-8", "replace")
                if event == "part":  # with the reason its QUIT gave, if any
                    reason = body.get("reason")
                    return build(user_prefix(nick), "PART", [channel],
                                 str(reason) if reason else None).encode("utf-8", "replace")
                if event == "nick" and body.get("new"):
                    return f":{user_prefix(nick)} NICK :{clean(str(body['new']))}\r\n".encode()
        except (KeyError, TypeError):
            _log.warning("irc fan-out got a malformed %r body", t)
        return b""

    @classmethod
    def _batch_lines(cls, body: dict[str, Any]) -> bytes:
        """A presence_batch as IRC has it: one JOIN/PART/KICK/NICK line per event,
        and a channel NOTICE when the room turned quiet or loud."""
        room = str(body["room"])
        out = [cls.encode_fanout({"t": "presence", "room": room, **e}, None)
               for e in body.get("events", ()) if isinstance(e, dict)]
        quiet = body.get("quiet")
        if isinstance(quiet, bool):
            out.append(_channel_notice(room, _big_room_text(room, body.get("count"), quiet))
                       .encode("utf-8", "replace"))
        return b"".join(out)

    def encode_own(self, body: dict[str, Any], msg_id: Any) -> bytes:
        """IRC clients show their own lines themselves, and their own joins,
        parts and renames come from `joined`/`parted`/`renamed`."""
        if body.get("t") == "presence_batch":
            return self._batch_own(body)
        if body.get("t") == "msg":
            return self._echo(body, msg_id).encode("utf-8", "replace")
        if self._about_me(body):
            return b""
        return self.encode_fanout(body, self._fan_key)


def _ack(label: str) -> str:
    return tag_prefix([("label", label)]) + build(SERVER_NAME, "ACK")


def _with_tags(prefix: str, line: str) -> str:
    """`line` with the tags of `prefix` (`@k=v `) added before its own."""
    if not prefix:
        return line
    if line.startswith("@"):
        return prefix[:-1] + ";" + line[1:]
    return prefix + line


def labeled(lines: list[str], label: str, caps: frozenset[str], ref: str) -> str:
    """A labeled answer (labeled-response): `ACK` for no line, the one line
    labeled, or several in a `labeled-response` batch (the first line labeled
    when the client has no `batch`)."""
    tag = tag_prefix([("label", label)])
    if not lines:
        return _ack(label)
    if len(lines) == 1 or "batch" not in caps:
        return _with_tags(tag, lines[0]) + "".join(lines[1:])
    inner = tag_prefix([("batch", ref)])
    return (tag + build(SERVER_NAME, "BATCH", ["+" + ref, "labeled-response"])
            + "".join(_with_tags(inner, line) for line in lines)
            + build(SERVER_NAME, "BATCH", ["-" + ref]))


_Handler = Callable[[IrcServerCodec, tuple[str, ...], list[Decoded]], None]
_HANDLERS: Final[dict[str, _Handler]] = {
    "PASS": IrcServerCodec._cmd_pass,
    "NICK": IrcServerCodec._cmd_nick,
    "USER": IrcServerCodec._cmd_user,
    "CAP": IrcServerCodec._cmd_cap,
    "PING": IrcServerCodec._cmd_ping,
    "PONG": IrcServerCodec._cmd_pong,
    "QUIT": IrcServerCodec._cmd_quit,
    "JOIN": IrcServerCodec._cmd_join,
    "PART": IrcServerCodec._cmd_part,
    "PRIVMSG": IrcServerCodec._cmd_privmsg,
    "NOTICE": IrcServerCodec._cmd_notice,
    "NAMES": IrcServerCodec._cmd_names,
    "WHO": IrcServerCodec._cmd_who,
    "LIST": IrcServerCodec._cmd_list,
    "TOPIC": IrcServerCodec._cmd_topic,
    "MODE": IrcServerCodec._cmd_mode,
    "WHOIS": IrcServerCodec._cmd_whois,
    "USERHOST": IrcServerCodec._cmd_userhost,
    "AWAY": IrcServerCodec._cmd_away,
    "AUTHENTICATE": IrcServerCodec._cmd_authenticate,
    "MOTD": IrcServerCodec._cmd_motd,
    "CHATHISTORY": IrcServerCodec._cmd_chathistory,
    "TAGMSG": IrcServerCodec._cmd_tagmsg,
    "ISON": IrcServerCodec._cmd_ison,
    "OPER": IrcServerCodec._cmd_oper,
    "KICK": IrcServerCodec._cmd_kick,
}


def _pop(queue: deque[Any]) -> Any:
    """The oldest item of a reader -> encoder queue, or None (popleft is atomic)."""
    try:
        return queue.popleft()
    except IndexError:
        return None


def _channel_notice(room: str, text: str) -> str:
    return text_lines(SERVER_NAME, "NOTICE", room_to_channel(clean(room)), text)


def _big_room_text(room: str, count: Any, quiet: bool) -> str:
    size = f"{count} members" if isinstance(count, int) else "many members"
    if quiet:
        return (f"#{room} has {size}: joins and parts are not shown there "
                "(NAMES lists everyone)")
    return f"#{room} has {size}: joins and parts are shown again"


def _pong(token: str) -> str:
    """The PONG for a client's PING (its token already cut to 200 characters
    by `_cmd_ping`), from the gateway or the relay's pong."""
    return build(SERVER_NAME, "PONG", [SERVER_NAME], token)


_Encoder = Callable[[IrcServerCodec, dict[str, Any]], str]
_ENCODERS: Final[dict[str, _Encoder]] = {
    "welcome": IrcServerCodec._enc_welcome,
    "error": IrcServerCodec._enc_error,
    "joined": IrcServerCodec._enc_joined,
    "parted": IrcServerCodec._enc_parted,
    "renamed": IrcServerCodec._enc_renamed,
    "members": IrcServerCodec._enc_members,
    "rooms": IrcServerCodec._enc_rooms,
    "msg": IrcServerCodec._enc_msg,
    "whisper": IrcServerCodec._enc_whisper,
    "presence": IrcServerCodec._enc_presence,
    "presence_batch": IrcServerCodec._enc_presence_batch,
    "history": IrcServerCodec._enc_history,
    "chathistory": IrcServerCodec._enc_chathistory,
    "whois": IrcServerCodec._enc_whois,
    "away": IrcServerCodec._enc_away,
    "ping": IrcServerCodec._enc_ping,
    "pong": IrcServerCodec._enc_pong,
    "notice": IrcServerCodec._enc_notice,
}
