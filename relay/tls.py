"""TLS for every dialect on the port, sans-I/O (ssl.MemoryBIO + SSLObject).

Why not ssl.SSLSocket: two threads write to a connection (its reader and the
bus thread) while the reader blocks in recv, and one OpenSSL object must not
be read and written at once. With MemoryBIOs the socket stays a plain socket,
and the Connection encrypts under its own send lock, so records leave in the
order they were made.
"""

from __future__ import annotations

import ssl

TLS_RECORD_HANDSHAKE = 0x16


def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key or None)
    return ctx


class TlsClosed(Exception):
    """The peer ended TLS (close_notify) or broke it."""


class ServerTls:
    def __init__(self, ctx: ssl.SSLContext) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_side=True)

    def handshake_step(self, data: bytes) -> tuple[bool, bytes]:
        """Feed what the peer sent; returns (done, wire bytes to send it now).

        The reader thread does the I/O (worker/reader.py), with its deadline.

        Raises:
            TlsClosed: the handshake failed.
        """
        if data:
            self._in.write(data)
        try:
            self._obj.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        except ssl.SSLError as exc:
            raise TlsClosed(f"TLS handshake failed: {exc.reason}") from exc
        return done, self._out.read()

    def decrypt(self, raw: bytes) -> tuple[bytes, bytes]:
        """Feed wire bytes; returns (plaintext, wire bytes TLS wants sent back).

        Raises:
            TlsClosed: on close_notify or a broken record.
        """
        if raw:
            self._in.write(raw)
        chunks = []
        while True:
            try:
                chunk = self._obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError as exc:
                raise TlsClosed("peer sent close_notify") from exc
            except ssl.SSLError as exc:
                raise TlsClosed(f"bad TLS record: {exc.reason}") from exc
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks), self._out.read()

    def encrypt(self, plain: bytes) -> bytes:
        self._obj.write(plain)
        return self._out.read()
