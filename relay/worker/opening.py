"""The start of a connection, before it has a codec: TLS, sniffing, the dialect.

With --tls-cert every connection must open with a TLS ClientHello and finish
the handshake within --tls-handshake-timeout of its accept. Then the first
bytes tell the dialect (transports/sniff.py); a peer that cannot be served
(TLS on a plain port, binary that is not a dialect, a dialect not built)
gets one line saying why, and nothing it sent is read as chat. The reader
thread (reader.py) runs this, blocking, with deadlines.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from dataclasses import dataclass

from relay.config import Settings
from relay.tls import TLS_RECORD_HANDSHAKE, ServerTls, TlsClosed
from relay.worker.writer import wait_readable
from transports.codec import ServerCodec
from transports.registry import SERVER_CODECS
from transports.sniff import SNIFF_MAX_BYTES, SNIFF_TIMEOUT, looks_like_text, sniff

log = logging.getLogger("chat_relay.session")


@dataclass(slots=True)
class Opened:
    """A connection ready to read frames: its codec, TLS state, and the bytes sniffed."""

    codec: ServerCodec
    tls: ServerTls | None
    prefix: bytes


def linger_raw(sock: socket.socket) -> None:
    """The no-codec path's version of Connection.linger_close()."""
    try:
        sock.shutdown(socket.SHUT_WR)
        for _ in range(16):
            if not wait_readable(sock, 1.0) or not sock.recv(65536):
                break
    except OSError:
        pass


def _recv_plain(sock: socket.socket, tls: ServerTls | None, timeout: float) -> bytes | None:
    """One read before the Connection exists; None on EOF, b"" on timeout."""
    if not wait_readable(sock, timeout):
        return b""
    raw = sock.recv(65536)
    if not raw:
        return None
    if tls is None:
        return raw
    plain, reply = tls.decrypt(raw)
    if reply:
        sock.sendall(reply)
    return plain


def _sniff(sock: socket.socket, tls: ServerTls | None, prefix: bytes) -> bytes:
    deadline = time.monotonic() + SNIFF_TIMEOUT
    while len(prefix) < SNIFF_MAX_BYTES and sniff(prefix) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        chunk = _recv_plain(sock, tls, left)
        if chunk is None:
            break
        prefix += chunk
    return prefix


def _handshake(sock: socket.socket, tls: ServerTls, timeout: float) -> bytes:
    """Complete the TLS handshake (blocking, bounded); returns early plaintext.

    Raises:
        TlsClosed: the peer went away or failed the handshake.
        TimeoutError: it took longer than `timeout`.
    """
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        done, out = tls.handshake_step(data)
        if out:
            sock.sendall(out)
        if done:
            break
        left = deadline - time.monotonic()
        if left <= 0 or not wait_readable(sock, left):
            raise TimeoutError("TLS handshake timed out")
        data = sock.recv(65536)
        if not data:
            raise TlsClosed("peer closed during the TLS handshake")
    plain, _ = tls.decrypt(b"")
    return plain


def _start_tls(sock: socket.socket, ctx: ssl.SSLContext | None, timeout: float
               ) -> tuple[ServerTls | None, bytes]:
    if ctx is None:
        return None, b""
    deadline = time.monotonic() + timeout
    first = sock.recv(1, socket.MSG_PEEK) if wait_readable(sock, timeout) else b""
    if first[:1] != bytes([TLS_RECORD_HANDSHAKE]):
        if first:
            sock.sendall(b"* error: this relay speaks TLS only; connect with TLS "
                         b"(chat-client --tls, openssl s_client)\r\n")
        raise TlsClosed("plaintext client on a TLS port" if first else
                        f"no TLS handshake within {timeout:g} s")
    tls = ServerTls(ctx)
    return tls, _handshake(sock, tls, max(0.0, deadline - time.monotonic()))


def open_stream(sock: socket.socket, addr: str, tls_ctx: ssl.SSLContext | None,
                settings: Settings) -> Opened | None:
    """TLS (if configured), sniff, pick the codec; None when the peer is not served."""
    try:
        tls, early = _start_tls(sock, tls_ctx, settings.tls_handshake_timeout)
    except (TlsClosed, TimeoutError) as exc:
        log.info("%s: %s", addr, exc)
        return None
    prefix = _sniff(sock, tls, early)
    dialect = sniff(prefix) or "text"
    if dialect == "tls":
        # A TLS client on a plain port: not a person typing binary. Close
        # at once; nothing it sent is read as chat, and a plaintext word
        # would only be a TLS error on its side.
        log.info("%s: TLS ClientHello on a plain port; closed", addr)
        return None
    if dialect == "text" and not looks_like_text(prefix):
        notice = (b"* error: the first bytes are not UTF-8 text; this port speaks text "
                  b"lines (nc, telnet), msgpack frames, HTTP/WebSocket and IRC\r\n")
        log.info("%s: binary first bytes on the text dialect; closed", addr)
        sock.sendall(tls.encrypt(notice) if tls else notice)
        return None
    codec_cls = SERVER_CODECS.get(dialect)
    if codec_cls is None:
        notice = (
            f"chat-relay: the {dialect} dialect is not supported yet; connect with the "
            "native (msgpack) dialect or with plain text lines (nc, telnet)\r\n").encode()
        sock.sendall(tls.encrypt(notice) if tls else notice)
        return None
    return Opened(codec_cls.configured(settings), tls, prefix)
