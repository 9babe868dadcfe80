"""Raw-socket test peers: a native client and a text (nc-style) client.

(benchmarks/dialects.py's `LoadPeer`s are the load generator's socketless side
of each dialect, not these.)

They speak bytes on real sockets and wait on conditions with deadlines, so a
missing reply fails the test instead of hanging it.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from tests.relayproc import UNIT
from transports.native import FrameDecoder, frame

Body = dict[str, Any]


def connect(host: str, port: int, tls: ssl.SSLContext | None, source: str | None = None
            ) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=5 * UNIT,
                                    source_address=(source, 0) if source else None)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="localhost")
    return sock


def read_for(sock: socket.socket, seconds: float) -> None:
    """Read and drop what the relay answers for up to `seconds` or until it closes,
    so the close that follows is a FIN, not an RST over unread data."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            if not sock.recv(65536):
                return
    except OSError:
        return


class NativePeer:
    def __init__(self, port: int, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None,
                 source: str | None = None) -> None:
        self.sock = connect(host, port, tls, source)
        self.decoder = FrameDecoder(16 * 1024 * 1024)
        self.inbox: list[Any] = []
        self.closed = False
        self.nick = ""

    @classmethod
    def joined(cls, port: int, nick: str, rooms: list[str] | None = None,
               tls: ssl.SSLContext | None = None, **hello: Any) -> NativePeer:
        """Connect, say hello and wait for welcome plus one `joined` per room."""
        peer = cls(port, tls=tls)
        peer.nick = nick
        rooms = ["lobby"] if rooms is None else rooms
        # A nick still held by our own ghost (a worker that just died) frees up
        # within moments; retry briefly the way the client library does.
        deadline = time.monotonic() + 3.0 * UNIT
        while True:
            peer.send({"t": "hello", "v": 1, "nick": nick, "rooms": rooms, **hello})
            reply = peer.expect(lambda b: b.get("t") in ("welcome", "error"))
            if reply["t"] == "welcome":
                break
            if reply.get("code") != "nick_taken" or time.monotonic() > deadline:
                raise AssertionError(f"hello refused: {reply}")
            threading.Event().wait(0.05)
        for room in list(rooms) + list(hello.get("resume", {})):
            peer.expect(lambda b, r=room: b.get("t") == "joined" and b["room"] == r)
        return peer

    @property
    def local_port(self) -> int:
        return int(self.sock.getsockname()[1])

    def send(self, body: Body) -> None:
        self.sock.sendall(frame(body))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _pump(self, timeout: float) -> bool:
        self.sock.settimeout(max(0.001, timeout))
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return False
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.inbox.extend(self.decoder.feed(data))
        return True

    def expect(self, pred: Callable[[Body], bool], timeout: float = 5.0) -> Body:
        """Return (and remove) the first received body matching `pred`."""
        deadline = time.monotonic() + timeout * UNIT
        while True:
            for i, body in enumerate(self.inbox):
                if isinstance(body, dict) and pred(body):
                    return self.inbox.pop(i)  # type: ignore[no-any-return]
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(f"no matching frame; got {self.inbox[-10:]!r}")
            self._pump(left)

    def expect_error(self, code: str, timeout: float = 5.0) -> Body:
        return self.expect(lambda b: b.get("t") == "error" and b.get("code") == code, timeout)

    def msgs(self, room: str, count: int, timeout: float = 10.0) -> list[Body]:
        """Collect `count` msg frames of `room`, in arrival order."""
        out = []
        for _ in range(count):
            out.append(self.expect(lambda b: b.get("t") == "msg" and b["room"] == room,
                                   timeout))
        return out

    def drain(self, quiet: float = 0.2) -> list[Any]:
        """Everything that arrives until the line stays quiet for `quiet` seconds."""
        while self._pump(quiet * UNIT):
            pass
        out, self.inbox = self.inbox, []
        return out

    def wait_closed(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout * UNIT
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("connection still open")
            self._pump(left)

    def close(self) -> None:
        self.sock.close()


class TextPeer:
    """Talks like nc: raw lines in, raw lines out."""

    def __init__(self, port: int, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
                 ) -> None:
        self.sock = connect(host, port, tls)
        self.buf = b""
        self.lines: list[str] = []
        self.closed = False

    def send_line(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        self.sock.sendall(data + b"\n")

    def expect(self, pred: Callable[[str], bool], timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout * UNIT
        while True:
            for i, line in enumerate(self.lines):
                if pred(line):
                    return self.lines.pop(i)
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(f"no matching line; got {self.lines[-10:]!r}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                self.closed = True
                continue
            self.buf += data
            *done, self.buf = self.buf.split(b"\n")
            self.lines.extend(d.decode("utf-8", "replace") for d in done)

    def expect_text(self, fragment: str, timeout: float = 5.0) -> str:
        return self.expect(lambda line: fragment in line, timeout)

    def close(self) -> None:
        self.sock.close()


def worker_of(relay_pid: int, local_port: int, timeout: float = 5.0) -> int:
    """Which worker process serves the client whose local port is `local_port`.

    A connect returns once the kernel queued the connection, maybe before a
    worker accepted it: asked again until one has, within `timeout`.
    """
    deadline = time.monotonic() + timeout * UNIT
    while True:
        for child in psutil.Process(relay_pid).children(recursive=True):
            try:
                conns = child.net_connections(kind="tcp")
            except psutil.NoSuchProcess:
                continue
            for c in conns:
                if c.raddr and c.raddr.port == local_port:
                    return int(child.pid)
        if time.monotonic() > deadline:
            raise LookupError(f"no worker serves port {local_port}")
        time.sleep(0.02)  # the poll interval of the condition above


class Recorder(threading.Thread):
    """Reads a peer's msgs in the background, noting seq and end-to-end latency.

    Senders put `time.time_ns()` as the text, so latency is arrival minus that.
    """

    def __init__(self, peer: NativePeer, room: str = "lobby") -> None:
        super().__init__(daemon=True)
        self.peer, self.room = peer, room
        self.seqs: list[int] = []
        self.latency_ms: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set() and not self.peer.closed:
            if not self.peer._pump(0.05):
                continue
            now = time.time_ns()
            keep = []
            for body in self.peer.inbox:
                if isinstance(body, dict) and body.get("t") == "msg" and body["room"] == self.room:
                    self.seqs.append(body["seq"])
                    stamp = body["text"].split(" ", 1)[0]
                    if stamp.isdigit():
                        self.latency_ms.append((now - int(stamp)) / 1e6)
                else:
                    keep.append(body)
            self.peer.inbox = keep

    def wait_seqs(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout * UNIT
        while len(self.seqs) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(self.seqs)} of {count} msgs")
            self.halt.wait(0.01)

    def stop(self) -> None:
        self.halt.set()
        self.join()

    def p99(self) -> float:
        ordered = sorted(self.latency_ms)
        return ordered[int(len(ordered) * 0.99)] if ordered else 0.0


class Ticker(threading.Thread):
    """Says `time.time_ns()` every `period` seconds, paced from a schedule (bounded)."""

    def __init__(self, peer: NativePeer, period: float = 0.01, limit: int = 3000,
                 room: str = "lobby", size: int = 0) -> None:
        super().__init__(daemon=True)
        self.peer, self.period, self.limit, self.room = peer, period, limit, room
        self.pad = " " + "x" * (size - 20) if size > 20 else ""
        self.sent = 0
        self.halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.halt.is_set() and self.sent < self.limit:
            self.peer.send({"t": "say", "room": self.room,
                            "text": str(time.time_ns()) + self.pad})
            self.sent += 1
            self.halt.wait(max(0.0, start + self.sent * self.period - time.monotonic()))

    def stop(self) -> int:
        self.halt.set()
        self.join()
        return self.sent


def assert_one_order(peers: list[NativePeer], senders: list[NativePeer], per_sender: int,
                     room: str = "lobby") -> None:
    """Senders say at once; every peer sees one seq order, each sender's in its order."""

    def blast(peer: NativePeer) -> None:
        for i in range(per_sender):
            peer.send({"t": "say", "room": room, "text": f"{peer.local_port}:{i}"})

    threads = [threading.Thread(target=blast, args=(s,)) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = per_sender * len(senders)
    streams = [[(m["seq"], m["from"], m["text"]) for m in p.msgs(room, total)] for p in peers]
    assert [seq for seq, _, _ in streams[0]] == list(range(1, total + 1))
    for stream in streams[1:]:
        assert stream == streams[0]
    for s in senders:
        mine = [t for _, _, t in streams[0] if t.startswith(f"{s.local_port}:")]
        assert mine == [f"{s.local_port}:{i}" for i in range(per_sender)]
