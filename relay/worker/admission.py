"""Refusing a connection without a thread: the acceptor's bounded refusal pen.

Caps and bans are checked right after accept(), before a thread exists, so a
flood of refused connections costs a socket each for at most a second, never
a thread. A refused peer still deserves one error it can read, and in its own
dialect, which its first bytes tell (transports/sniff.py): the acceptor keeps
the socket non-blocking in this pen until they come (or SNIFF_TIMEOUT of
silence says "text"), writes the error with one non-blocking send, half-closes
and reads until the peer closes (closing with unread input would send RST,
which can destroy the error before the peer reads it).

The pen holds at most PEN_MAX sockets; past that a refused connection gets
the text line at once (`* error: ...`) and is closed. TLS peers (a TLS port,
or a ClientHello on a plain one) are closed without a word: no handshake is
done for a connection that is refused anyway.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from dataclasses import dataclass, field

from transports.registry import SERVER_CODECS
from transports.sniff import SNIFF_TIMEOUT, sniff

log = logging.getLogger("chat_relay.worker")

PEN_MAX = 256        # refused sockets waiting for first bytes or lingering, per worker
PEN_LINGER = 1.0     # seconds a refused socket is read after our error, before close
_DONTWAIT = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)


@dataclass(slots=True, eq=False)
class Refused:
    sock: socket.socket
    code: str
    text: str
    deadline: float
    prefix: bytes = b""
    answered: bool = False
    fd: int = field(init=False)

    def __post_init__(self) -> None:
        self.fd = self.sock.fileno()


def refusal_bytes(dialect: str, code: str, text: str, max_frame: int, max_text: int) -> bytes:
    """The error `code` in `dialect`, as a fresh connection of that dialect reads it."""
    if dialect == "tls":
        return b""
    if dialect == "ws":
        body = f"{code}: {text}\n".encode()
        return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Connection: close\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\n\r\n" + body)
    codec_cls = SERVER_CODECS.get(dialect) or SERVER_CODECS["text"]
    return codec_cls(max_frame, max_text).encode({"t": "error", "code": code, "text": text})


class RefusalPen:
    """Refused sockets of one acceptor, watched by that acceptor's selector."""

    def __init__(self, sel: selectors.BaseSelector, max_frame: int, max_text: int,
                 tls: bool) -> None:
        self.sel = sel
        self.max_frame = max_frame
        self.max_text = max_text
        self.tls = tls
        self._held: dict[int, Refused] = {}

    def __len__(self) -> int:
        return len(self._held)

    def add(self, sock: socket.socket, code: str, text: str) -> None:
        """Take a refused socket: it is answered and closed within ~1.3 s."""
        sock.setblocking(False)
        if self.tls:
            _close(sock)
            return
        if len(self._held) >= PEN_MAX:
            self._send(sock, refusal_bytes("text", code, text, self.max_frame, self.max_text))
            _close(sock)
            return
        entry = Refused(sock, code, text, time.monotonic() + SNIFF_TIMEOUT)
        self._held[entry.fd] = entry
        self.sel.register(sock, selectors.EVENT_READ, entry)

    def readable(self, entry: Refused) -> None:
        try:
            data = entry.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(entry)
        elif not entry.answered:
            entry.prefix = (entry.prefix + data)[:16]
            if sniff(entry.prefix) is not None:
                self._answer(entry)

    def next_deadline(self) -> float | None:
        return min((e.deadline for e in self._held.values()), default=None)

    def expire(self, now: float) -> None:
        for entry in [e for e in self._held.values() if e.deadline <= now]:
            if entry.answered:
                self._drop(entry)
            else:
                self._answer(entry)

    def close_all(self) -> None:
        for entry in list(self._held.values()):
            self._drop(entry)

    def _answer(self, entry: Refused) -> None:
        dialect = sniff(entry.prefix) or "text"
        self._send(entry.sock, refusal_bytes(dialect, entry.code, entry.text, self.max_frame,
                                             self.max_text))
        try:
            entry.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(entry)
            return
        entry.answered = True
        entry.deadline = time.monotonic() + PEN_LINGER

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> None:
        """One non-blocking send: a fresh socket's buffer takes a short error whole."""
        try:
            sock.send(data, _DONTWAIT)
        except OSError:
            pass

    def _drop(self, entry: Refused) -> None:
        if self._held.pop(entry.fd, None) is not None:
            self.sel.unregister(entry.sock)
        _close(entry.sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
