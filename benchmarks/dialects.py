"""The benchmark's side of each dialect, sans-I/O: handshake, then checking.

One object per connection. `start()` gives the bytes to send once the TCP
connection is up; `feed(data, now_ns)` takes what the socket read and returns
bytes to send back (handshake steps, PONGs). Once `ready`, a receiver checks
every message: native by the room's `seq`, text and IRC (which carry no seq)
by the per-sender counter in the payload. Latencies go into a plain dict of
microseconds -> count, because a dict increment is several times cheaper
than an HDR record in Python; the load process folds them onto HDR buckets
and sends those counts to the parent twice a second (`drain_latencies`).

A sender is the same object with `checking=False`: after its handshake it
throws away what it receives (its own echoes, others' messages), which it
must still read so that the relay never sees it as a slow consumer. It only
looks for an error in it (`ERROR_MARKS`), with one `find()` a read: a relay
that rate-limits its clients drops most of what they say, and the report
must say why messages were lost, not just that they were.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from benchmarks import payload
from benchmarks.seqcheck import StreamChecker, Tally
from transports.native import frame

DIALECTS = ("native", "text", "irc")
MAX_FRAME = 16 * 1024 * 1024  # a longer length prefix is fatal, as in FrameDecoder
MAX_LINE = 1 << 20  # a longer partial line is counted corrupt and dropped
ERROR_TEXT = 200  # bytes of an error kept for the report (loadengine.c ERR_TEXT)
_len_at = struct.Struct(">I").unpack_from
# msgpack >= 1.0 defaults are raw=False, strict_map_key=True and size limits
# bounded by the body: what transports.native.unpack_body asks for explicitly.
_unpackb = msgpack.unpackb
_TS_END = len(payload.MARK) + payload.TS_DIGITS


# Sent by the runner to a bare-line server before a run, over and over until
# every connection has seen it come back: a "* " line, which the engines pass
# over once ready, so a late copy is never counted as corrupt.
PROBE_LINE = b"* chat-bench probe: everyone in?\n"

# Where an error starts in what a dialect receives: a native body with the
# msgpack pair "t": "error" (a message text "error" follows the key "text",
# never "t"), then its "code"; text error lines start with "* error: ", and
# chat-relay's IRC errors are NOTICEs ":error CODE: text". Any IRC server's
# last words before it closes a link are an "ERROR :reason" line (ngIRCd's
# flood limit: "ERROR :Closing Link: nick[host] (Excess Flood)").
ERROR_MARKS = {"native": b"\xa1t\xa5error", "text": b"* error: ", "irc": b" :error "}
IRC_ERROR_LINE = b"ERROR :"
_NATIVE_CODE = b"\xa4code"
_NATIVE_SPAN = 256  # the code follows the type within this many bytes


def sniff_error(dialect: str, data: bytes) -> str | None:
    """The first error a sender received whole in `data` (its code, or its line)."""
    mark = ERROR_MARKS[dialect]
    at = data.find(mark)
    if at < 0:
        start = _irc_error_start(data) if dialect == "irc" else -1
        return _line_at(data, start) if start >= 0 else None  # the whole reason
    start = at + len(mark)
    if dialect == "native":
        key = data.find(_NATIVE_CODE, start, start + _NATIVE_SPAN)
        head = data[key + 5] if 0 <= key < len(data) - 5 else 0
        if not 0xA0 <= head <= 0xBF:  # a fixstr: every error code is short
            return "error"
        return data[key + 6:key + 6 + (head & 0x1F)].decode(errors="replace")
    text = _line_at(data, start)
    return text.split(":", 1)[0] if dialect == "irc" else text


def _line_at(data: bytes, start: int) -> str:
    """The rest of the line from `start`, as an error text."""
    end = data.find(b"\n", start)
    return error_text(data[start:end if end >= 0 else len(data)].rstrip(b"\r"))


def error_text(raw: bytes) -> str:
    """A relay's error as reported: its first ERROR_TEXT bytes, decoded (the C
    engine keeps the same bytes, so both engines report the same text)."""
    return raw[:ERROR_TEXT].decode(errors="replace")


def _irc_error_start(data: bytes) -> int:
    """Where the reason of an IRC server's "ERROR :" line (at a line start) begins, or -1."""
    if data.startswith(IRC_ERROR_LINE):
        return len(IRC_ERROR_LINE)
    at = data.find(b"\n" + IRC_ERROR_LINE)
    return at + 1 + len(IRC_ERROR_LINE) if at >= 0 else -1


class LoadPeer:
    """One load-generator connection's side of a dialect (no socket: bytes in,
    bytes out). This holds what every dialect shares; subclasses implement
    the wire details. (tests/wire.py's NativePeer and TextPeer are different:
    test clients on real sockets.)"""

    dialect = ""

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

    def drain_latencies(self) -> dict[int, int]:
        out, self.latencies = self.latencies, {}
        return out


class NativeLoadPeer(LoadPeer):
    """msgpack frames; joins its room in `hello` and checks the room's seq.

    The framing is done here rather than by `transports.native.FrameDecoder`
    because this is the load generator's hot path: frames are unpacked
    straight out of the received bytes (no bytearray append, no per-frame
    copy, no list of bodies), and the in-order case of the seq check and the
    latency record are inlined. What is checked is the same: every frame in
    the room is counted, its seq checked and its send time recorded; a body
    that is not a msgpack map, or a msg without a usable seq or payload, is
    corrupt; a length over MAX_FRAME is fatal.
    """

    dialect = "native"

    def __init__(self, nick: str, room: str, size: int, checking: bool) -> None:
        super().__init__(nick, room, size, checking)
        self._buf = bytearray()  # an incomplete frame, waiting for the rest
        self._dead = False  # a fatal framing error: the stream cannot be resynced
        self.checker = StreamChecker()

    def start(self) -> bytes:
        return frame({"t": "hello", "v": 1, "nick": self.nick, "rooms": [self.room]})

    def say(self, text: str) -> bytes:
        return frame({"t": "say", "room": self.room, "text": text})

    def feed(self, data: bytes, now_ns: int) -> bytes:
        """Decode every whole frame; keep a trailing partial one for the next call."""
        if (self.ready and not self.checking) or self._dead:
            if not self.checking and self.error is None:
                self.error = sniff_error("native", data)
            return b""
        buf = self._buf
        if not buf:  # the common case: the chunk starts on a frame boundary
            used = self._scan(data, now_ns)
            if used < len(data) and not self._dead:
                buf += memoryview(data)[used:]
            return b""
        buf += data  # amortised: a large frame arriving in pieces is not re-copied
        used = self._scan(buf, now_ns)
        if self._dead:
            buf.clear()
        else:
            del buf[:used]
        return b""

    def _scan(self, data: bytes | bytearray, now_ns: int) -> int:
        """Handle the whole frames in `data`; returns how many bytes they took."""
        end = len(data)
        pos = 0
        room = self.room
        chk = self.checker
        nxt = chk.next
        run = 0  # in-order seqs not yet added to chk.unique
        delivered = corrupt = 0
        lat = self.latencies
        since = self.measure_from_ns
        try:
            while end - pos >= 4:
                length = _len_at(data, pos)[0]
                if length > MAX_FRAME:
                    self._dead = True
                    self.error = "frame_too_large"
                    corrupt += 1
                    break
                stop = pos + 4 + length
                if stop > end:
                    break
                try:
                    body = _unpackb(data[pos + 4 : stop])
                except Exception:  # msgpack raises many types; all mean a bad frame
                    body = None
                pos = stop
                if type(body) is not dict:
                    corrupt += 1
                    continue
                t = body.get("t")
                if t == "msg":
                    if body.get("room") != room:
                        continue
                    seq = body.get("seq")
                    if seq == nxt:
                        nxt += 1
                        run += 1
                    elif type(seq) is int:
                        chk.next = nxt
                        chk._slow(seq)
                        nxt = chk.next
                    else:
                        corrupt += 1  # a msg with no seq cannot be checked
                        continue
                    delivered += 1
                    try:
                        ts = int(body["text"][2:_TS_END])  # payload.ts_of, inlined
                    except (ValueError, KeyError, TypeError):
                        corrupt += 1
                        continue
                    if ts >= since:
                        us = (now_ns - ts) // 1000
                        lat[us] = lat.get(us, 0) + 1
                elif t == "joined" and body.get("room") == room:
                    nxt = int(body.get("seq", 0)) + 1
                    self.ready = True
                elif t == "error":
                    self.error = str(body.get("code", "error"))
        finally:
            chk.next = nxt
            chk.unique += run
            self.delivered += delivered
            self.corrupt += corrupt
        return pos

    def unique(self) -> int:
        return self.checker.unique

    def tally(self) -> Tally:
        t = Tally(delivered=self.delivered, corrupt=self.corrupt)
        t.add_stream(self.checker)
        return t


class LineLoadPeer(LoadPeer):
    """Line dialects (text, IRC): checks each sender's counter in the payload."""

    def __init__(self, nick: str, room: str, size: int, checking: bool) -> None:
        super().__init__(nick, room, size, checking)
        self._buf = bytearray()  # a line still waiting for its newline
        self.streams: dict[bytes, StreamChecker] = {}

    def feed(self, data: bytes, now_ns: int) -> bytes:
        """Check each payload line, hand the others to `control`; returns replies."""
        if self.ready and not self.checking:
            if self.error is None:
                self.error = sniff_error(self.dialect, data)
            return b""
        lines = data.split(b"\n")
        tail = lines.pop()
        if tail or self._buf:
            self._hold(lines, tail)
            if not lines:
                return b""
        replies: list[bytes] = []
        streams = self.streams
        size = self.size
        mark = payload.MARK_B
        parse = payload.parse_span
        lat = self.latencies
        since = self.measure_from_ns
        delivered = corrupt = 0
        try:
            for line in lines:
                i = line.find(mark)
                if i < 0:
                    reply = self.control(line.rstrip(b"\r"))
                    if reply:
                        replies.append(reply)
                    continue
                end = len(line) - 1 if line[-1] == 13 else len(line)  # CR LF
                try:
                    ts, sid, counter = parse(line, i, end, size)
                except ValueError:
                    corrupt += 1
                    continue
                chk = streams.get(sid)
                if chk is None:
                    chk = streams[sid] = StreamChecker()
                if counter == chk.next:  # StreamChecker.see, inlined
                    chk.next = counter + 1
                    chk.unique += 1
                else:
                    chk._slow(counter)
                delivered += 1
                if ts >= since:
                    us = (now_ns - ts) // 1000
                    lat[us] = lat.get(us, 0) + 1
        finally:
            self.delivered += delivered
            self.corrupt += corrupt
        return b"".join(replies) if replies else b""

    def _hold(self, lines: list[bytes], tail: bytes) -> None:
        """Complete the held partial line with this chunk's first; hold `tail`.

        Only the partial line is copied, never the whole chunk, and a line
        that grows past MAX_LINE without a newline is counted corrupt.
        """
        buf = self._buf
        if buf and lines:
            buf += lines[0]
            lines[0] = bytes(buf)
            buf.clear()
        buf += tail
        if len(buf) > MAX_LINE:
            self.corrupt += 1
            buf.clear()

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


class TextLoadPeer(LineLoadPeer):
    """chat-relay's text dialect; with `greeting=False`, bare lines (the seed server).

    A bare-line server says nothing when it has taken a client in, so with
    `probe=True` the peer is ready only once the runner's PROBE_LINE has come
    back through it: until then the server may not relay to it yet (the seed
    registers a client when its accept loop gets to it), and what it missed
    would be counted as lost.
    """

    dialect = "text"

    def __init__(
        self, nick: str, room: str, size: int, checking: bool, greeting: bool = True,
        probe: bool = False,
    ) -> None:
        super().__init__(nick, room, size, checking)
        self._greeted = not greeting
        self.ready = not greeting and not probe

    def say(self, text: str) -> bytes:
        return text.encode() + b"\n"

    def control(self, line: bytes) -> bytes:
        if not self.ready and line == PROBE_LINE.rstrip(b"\n"):
            self.ready = True  # a bare-line server: only the probe can say so
            return b""
        if self.ready or not line.startswith(b"* "):
            if line and not line.startswith(b"* ") and self.ready:
                self.corrupt += 1
            return b""
        if not self._greeted:
            self._greeted = True
            return b"/join " + self.room.encode() + b"\n"
        if self.room.encode() in line:
            if b"error" in line:
                self.error = error_text(line)
            else:
                self.ready = True
        return b""


class IrcLoadPeer(LineLoadPeer):
    """RFC 2812 client subset: register, JOIN #room, PRIVMSG, answer PING."""

    dialect = "irc"

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
            self.error = error_text(line)
        return b""


def make_peer(
    dialect: str, nick: str, room: str, size: int, checking: bool, greeting: bool = True
) -> LoadPeer:
    """A peer for a run: a bare-line (greeting-less) one waits for the probe."""
    if dialect == "native":
        return NativeLoadPeer(nick, room, size, checking)
    if dialect == "text":
        return TextLoadPeer(nick, room, size, checking, greeting, probe=not greeting)
    if dialect == "irc":
        return IrcLoadPeer(nick, room, size, checking)
    raise ValueError(f"unknown dialect {dialect!r}; choose one of {', '.join(DIALECTS)}")


def merge_latencies(into: dict[int, int], part: dict[int, int]) -> None:
    for k, v in part.items():
        into[k] = into.get(k, 0) + v


def describe(peer: LoadPeer) -> dict[str, Any]:
    """A compact snapshot for debugging a failed handshake."""
    return {"nick": peer.nick, "room": peer.room, "ready": peer.ready, "error": peer.error}
