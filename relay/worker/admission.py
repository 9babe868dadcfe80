"""Who may connect and try a password: caps, bans, blocks, and the refusal pen.

Admission is checked by the acceptor right after accept(), before any
thread exists: connection caps (each of W workers enforces its share of a
relay-wide limit), operator IP bans and password blocks, both as the hub
announced them (the bus thread replaces them whole; readers and the acceptor
read them without a lock). Readers report wrong passwords here: the hub
counts them relay-wide, and the wait before the answer holds only that
reader.

The refusal pen refuses a connection without a thread: caps and bans are
checked right after accept(), before a thread exists, so a flood of refused
connections costs a socket each for at most a second, never a thread. A
refused peer still deserves one error it can read, and in its own dialect,
which its first bytes tell (transports/sniff.py): the acceptor keeps the
socket non-blocking in this pen until they come (or SNIFF_TIMEOUT of silence
says "text"), writes the error with one non-blocking send, half-closes and
reads until the peer closes (closing with unread input would send RST, which
can destroy the error before the peer reads it).

The pen holds at most PEN_MAX sockets; past that a refused connection gets
the text line at once (`* error: ...`) and is closed. TLS peers (a TLS port,
or a ClientHello on a plain one) are closed without a word: no handshake is
done for a connection that is refused anyway.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from relay.bus.messages import AuthFail, Bans, Block, Request
from relay.config import Settings
from transports.errors import error_body
from transports.registry import SERVER_CODECS
from transports.sniff import SNIFF_TIMEOUT, sniff
from transports.validate import auth_key, ip_key

log = logging.getLogger("chat_relay.worker")

PEN_MAX = 256        # refused sockets waiting for first bytes or lingering, per worker
PEN_LINGER = 1.0     # seconds a refused socket is read after our error, before close
_DONTWAIT = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)
AUTH_DELAY_CAP = 8.0    # seconds: the longest wait before a wrong-password answer


def peer_ip(addr: str) -> str:
    """The IP of an "ip:port" address (IPv6 keeps its colons)."""
    return addr.rsplit(":", 1)[0]


def _share(limit: int, workers: int) -> int:
    """Each of the W workers enforces its share of a relay-wide limit."""
    return max(1, -(-limit // workers))


class Admission:
    """One worker's connection counts, and the bans and blocks the hub announced."""

    def __init__(self, settings: Settings, workers: int,
                 submit: Callable[[Request], None]) -> None:
        self.settings = settings
        self._submit = submit  # a request to the hub (the bus thread sends it)
        self._lock = threading.Lock()
        self.per_ip: Counter[str] = Counter()
        self.total = 0
        self.handshakes = 0  # connections not yet past hello
        self.max_total = _share(settings.max_connections, workers)
        self.max_per_ip = _share(settings.max_per_ip, workers)
        self.max_handshakes = _share(settings.max_handshakes, workers)
        self.refused: Counter[str] = Counter()  # refusals at accept, by code
        self._all_closed = threading.Condition(self._lock)
        # Operator IP bans (ip -> until, wall-clock ms, 0 = no expiry) and
        # addresses blocked after failed passwords (auth_key -> until). Replaced
        # whole by the bus thread, never mutated, so other threads read them
        # without a lock.
        self.banned_ips: dict[str, int] = {}
        self.auth_blocks: dict[str, int] = {}

    def refusal(self, ip: str) -> tuple[str, str] | None:
        """(code, why) a new connection from `ip` is refused, or None to serve it."""
        blocked = self.auth_blocked(ip)
        if blocked:
            return "too_many_connections", blocked
        ban = self.banned(ip)
        if ban:
            return "banned", ban
        s = self.settings
        with self._lock:
            if self.total >= self.max_total:
                why = f"the relay is full ({s.max_connections} connections)"
            elif self.per_ip[ip] >= self.max_per_ip:
                why = f"too many connections from {ip} (limit {s.max_per_ip})"
            elif self.handshakes >= self.max_handshakes:
                why = (f"too many connections still in their handshake (limit "
                       f"{s.max_handshakes}); try again")
            else:
                return None
        return "too_many_connections", why

    def admitted(self, ip: str) -> None:
        """A connection from `ip` is served: count it (and its handshake)."""
        with self._lock:
            self.total += 1
            self.per_ip[ip] += 1
            self.handshakes += 1

    def handshake_over(self) -> None:
        with self._lock:
            self.handshakes -= 1

    def connection_closed(self, addr: str) -> None:
        ip = peer_ip(addr)
        with self._lock:
            self.total -= 1
            self.per_ip[ip] -= 1
            if self.per_ip[ip] <= 0:
                del self.per_ip[ip]
            if self.total <= 0:
                self._all_closed.notify_all()

    def wait_all_closed(self, timeout: float) -> None:
        with self._lock:
            self._all_closed.wait_for(lambda: self.total <= 0, timeout=timeout)

    # Bans and password blocks ---------------------------------------------------

    def take_bans(self, bans: Bans) -> None:
        """The hub's full lists (on hello, on resync, after every change)."""
        self.banned_ips = bans.ips
        self.auth_blocks = bans.blocks

    def take_block(self, block: Block) -> None:
        """One new password block, announced by the hub."""
        now = time.time_ns() // 1_000_000
        blocks = {k: u for k, u in self.auth_blocks.items() if u > now}
        blocks[block.key] = block.until
        self.auth_blocks = blocks

    def banned(self, ip: str) -> str:
        """Why `ip` is banned (an operator's IP ban, as the hub told us), or ""."""
        bans = self.banned_ips
        if not bans:
            return ""
        key = ip_key(ip)
        until = bans.get(key) if key is not None else None
        if until is None:
            return ""
        left = until - time.time() * 1000
        if until and left <= 0:
            return ""
        span = (f"for {max(1, int(-(-left // 60_000)))} more minute(s)" if until
                else "by an operator")
        return f"your address {key} is banned {span}"

    def auth_blocked(self, ip: str) -> str:
        """Why `ip` may not try a password now (the hub blocked it), or ""."""
        blocks = self.auth_blocks
        if not blocks:
            return ""
        key = auth_key(ip)
        left = (blocks.get(key, 0) if key else 0) - time.time() * 1000
        if left <= 0:
            return ""
        return f"{key} is blocked for {-(-left // 1000):.0f} s after failed passwords"

    def auth_failed(self, ip: str, failures: int) -> None:
        """Count a wrong password relay-wide, then make its sender wait.

        The hub counts (so every worker and host sees the failure) and blocks;
        the wait (auth_delay, doubling per failure on this connection, capped)
        holds only the calling client's reader thread.
        """
        self._submit(AuthFail(ip))
        delay = min(AUTH_DELAY_CAP, self.settings.auth_delay * 2 ** max(0, failures - 1))
        if delay > 0:
            time.sleep(delay)


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
    return codec_cls(max_frame, max_text).encode(error_body(code, text))


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
