"""The benchmark's side of each dialect, sans-I/O: handshake, then checking.

One object per connection. `start()` gives the bytes to send once the TCP
connection is up; `feed(data, now_ns)` takes what the socket read and returns
bytes to send back (handshake steps, PONGs). Once `ready`, a receiver checks
every message: native by the room's `seq`, text and IRC (which carry no seq)
by the per-sender counter in the payload. Latencies go into a plain dict of
microseconds -> count, because a dict increment is several times cheaper
than an HDR record in Python; the load process moves them into its HDR
histogram a few times a second (`drain_latencies`).

A sender is the same object with `checking=False`: after its handshake it
throws away what it receives (its own echoes, others' messages), which it
must still read so that the relay never sees it as a slow consumer.
"""

from __future__ import annotations

from typing import Any

from benchmarks import payload
from benchmarks.seqcheck import StreamChecker, Tally
from transports.errors import ProtocolError
from transports.native import FrameDecoder, frame

DIALECTS = ("native", "text", "irc")


class Peer:
    """State every dialect shares; subclasses implement the wire details."""

    def __init__(self, nick: str, room: str, size: int, checking: bool) -> None:
        self.nick = nick
        self.room = room
        self.size = size
        self.checking = checking
        self.ready = False
        self.error: str | None = None
        self.delivered = 0
        self.corrupt = 0
        self.latencies: dict[int, int] = {}
        self.measure_from_ns = 0  # messages sent before this (warm-up) get no latency

    def start(self) -> bytes:
        return b""

    def feed(self, data: bytes, now_ns: int) -> bytes:
        raise NotImplementedError

    def say(self, text: str) -> bytes:
        """Bytes that make this connection say `text` in its room."""
        raise NotImplementedError

    def unique(self) -> int:
        raise NotImplementedError

    def tally(self) -> Tally:
        raise NotImplementedError

    def _latency(self, ts: int, now_ns: int) -> None:
        if ts >= self.measure_from_ns:
            us = (now_ns - ts) // 1000
            lat = self.latencies
            lat[us] = lat.get(us, 0) + 1

    def drain_latencies(self) -> dict[int, int]:
        out, self.latencies = self.latencies, {}
        return out


class NativePeer(Peer):
    """msgpack frames; joins its room in `hello` and checks the room's seq."""

    def __init__(self, nick: str, room: str, size: int, checking: bool) -> None:
        super().__init__(nick, room, size, checking)
        self._decoder = FrameDecoder(16 * 1024 * 1024)
        self.checker = StreamChecker()

    def start(self) -> bytes:
        return frame({"t": "hello", "v": 1, "nick": self.nick, "rooms": [self.room]})

    def say(self, text: str) -> bytes:
        return frame({"t": "say", "room": self.room, "text": text})

    def feed(self, data: bytes, now_ns: int) -> bytes:
        if self.ready and not self.checking:
            return b""
        see = self.checker.see
        for body in self._decoder.feed(data):
            if type(body) is not dict:
                self.corrupt += 1
                if isinstance(body, ProtocolError) and body.fatal:
                    self.error = body.code
                continue
            t = body.get("t")
            if t == "msg":
                if body.get("room") != self.room:
                    continue
                see(body["seq"])
                self.delivered += 1
                try:
                    self._latency(payload.ts_of(body["text"]), now_ns)
                except (ValueError, KeyError, TypeError):
                    self.corrupt += 1
            elif t == "joined" and body.get("room") == self.room:
                self.checker.next = int(body.get("seq", 0)) + 1
                self.ready = True
            elif t == "error":
                self.error = str(body.get("code", "error"))
        return b""

    def unique(self) -> int:
        return self.checker.unique

    def tally(self) -> Tally:
        t = Tally(delivered=self.delivered, corrupt=self.corrupt)
        t.add_stream(self.checker)
        return t


class LinePeer(Peer):
    """Line dialects (text, IRC): checks each sender's counter in the payload."""

    def __init__(self, nick: str, room: str, size: int, checking: bool) -> None:
        super().__init__(nick, room, size, checking)
        self._buf = b""
        self.streams: dict[bytes, StreamChecker] = {}

    def feed(self, data: bytes, now_ns: int) -> bytes:
        if self.ready and not self.checking:
            return b""
        lines = (self._buf + data).split(b"\n")
        self._buf = lines.pop()
        if len(self._buf) > 1 << 20:
            self.corrupt += 1
            self._buf = b""
        replies: list[bytes] = []
        streams = self.streams
        size = self.size
        for line in lines:
            i = line.find(payload.MARK_B)
            if i < 0:
                reply = self.control(line.rstrip(b"\r"))
                if reply:
                    replies.append(reply)
                continue
            if line[-1:] == b"\r":
                line = line[:-1]
            try:
                ts, sid, counter = payload.parse_line(line, i, size)
            except ValueError:
                self.corrupt += 1
                continue
            checker = streams.get(sid)
            if checker is None:
                checker = streams[sid] = StreamChecker()
            checker.see(counter)
            self.delivered += 1
            self._latency(ts, now_ns)
        return b"".join(replies)

    def control(self, line: bytes) -> bytes:
        """Handle a line that carries no payload; returns bytes to send back."""
        raise NotImplementedError

    def unique(self) -> int:
        return sum(s.unique for s in self.streams.values())

    def tally(self) -> Tally:
        t = Tally(delivered=self.delivered, corrupt=self.corrupt)
        for s in self.streams.values():
            t.add_stream(s)
        return t


class TextPeer(LinePeer):
    """chat-relay's text dialect; with `greeting=False`, bare lines (the seed server)."""

    def __init__(
        self, nick: str, room: str, size: int, checking: bool, greeting: bool = True
    ) -> None:
        super().__init__(nick, room, size, checking)
        self._greeted = not greeting
        self.ready = not greeting

    def say(self, text: str) -> bytes:
        return text.encode() + b"\n"

    def control(self, line: bytes) -> bytes:
        if self.ready or not line.startswith(b"* "):
            if line and not line.startswith(b"* ") and self.ready:
                self.corrupt += 1
            return b""
        if not self._greeted:
            self._greeted = True
            return b"/join " + self.room.encode() + b"\n"
        if self.room.encode() in line:
            if b"error" in line:
                self.error = line.decode(errors="replace")[:200]
            else:
                self.ready = True
        return b""


class IrcPeer(LinePeer):
    """RFC 2812 client subset: register, JOIN #room, PRIVMSG, answer PING."""

    def start(self) -> bytes:
        n = self.nick.encode()
        return b"NICK " + n + b"\r\nUSER " + n + b" 0 * :" + n + b"\r\n"

    def say(self, text: str) -> bytes:
        return b"PRIVMSG #" + self.room.encode() + b" :" + text.encode() + b"\r\n"

    def control(self, line: bytes) -> bytes:
        if line.startswith(b"PING"):
            return b"PONG" + line[4:] + b"\r\n"
        parts = line.split(b" ", 3)
        code = parts[1] if len(parts) > 1 else b""
        if code == b"001":
            return b"JOIN #" + self.room.encode() + b"\r\n"
        if code == b"366":
            self.ready = True
        elif code in (b"432", b"433", b"471", b"473", b"474", b"ERROR") or line.startswith(
            b"ERROR"
        ):
            self.error = line.decode(errors="replace")[:200]
        return b""


def make_peer(
    dialect: str, nick: str, room: str, size: int, checking: bool, greeting: bool = True
) -> Peer:
    if dialect == "native":
        return NativePeer(nick, room, size, checking)
    if dialect == "text":
        return TextPeer(nick, room, size, checking, greeting)
    if dialect == "irc":
        return IrcPeer(nick, room, size, checking)
    raise ValueError(f"unknown dialect {dialect!r}; choose one of {', '.join(DIALECTS)}")


def merge_latencies(into: dict[int, int], part: dict[int, int]) -> None:
    for k, v in part.items():
        into[k] = into.get(k, 0) + v


def describe(peer: Peer) -> dict[str, Any]:
    """A compact snapshot for debugging a failed handshake."""
    return {"nick": peer.nick, "room": peer.room, "ready": peer.ready, "error": peer.error}
