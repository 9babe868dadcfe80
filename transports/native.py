"""Native dialect: 4-byte big-endian length, then one msgpack map (sans-I/O).

`FrameDecoder` splits a byte stream into bodies without copying more than it
must; `NativeServerCodec` is the relay side, `NativeClientCodec` the client
side. Neither touches a socket.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from typing import Any

import msgpack

from transports.codec import Decoded, ServerCodec
from transports.errors import FatalProtocolError, ProtocolError
from transports.events import (
    ClientEvent,
    RelayEvent,
    parse_client_body,
    parse_relay_body,
    presence_bodies,
)
from transports.validate import MAX_DEPTH, depth_exceeds

DEFAULT_MAX_FRAME = 65536
_LEN = struct.Struct(">I")
_pack = msgpack.Packer(use_bin_type=True).pack


def pack_body(body: dict[str, Any]) -> bytes:
    """msgpack bytes of one body (no length prefix)."""
    return _pack(body)


def frame(body: dict[str, Any]) -> bytes:
    """One complete native frame for `body`."""
    data = _pack(body)
    return _LEN.pack(len(data)) + data


def frame_packed(data: bytes) -> bytes:
    """Prefix already-packed msgpack bytes with their length."""
    return _LEN.pack(len(data)) + data


def unpack_body(data: bytes) -> Any:
    """Decode one body; every msgpack size limit is bounded by the body itself.

    Raises:
        ProtocolError: `bad_frame` when `data` is not one msgpack value, or
            when it nests deeper than MAX_DEPTH (msgpack's own C decoder stops
            at 1,024 levels; the depth check walks only what that decoded,
            before any field is read).
    """
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types; all mean the same
        raise ProtocolError(
            "bad_frame", f"body of {len(data)} bytes is not msgpack: {str(exc)[:80]}"
        ) from None
    if depth_exceeds(body, MAX_DEPTH):
        raise ProtocolError(
            "bad_frame", f"body nests maps and lists more than {MAX_DEPTH} levels deep"
        )
    return body


class FrameDecoder:
    """Splits bytes into frame bodies; a length over `max_frame` is fatal.

    `feed()` returns decoded bodies (any msgpack value) and `ProtocolError`s in
    stream order. After a fatal error it ignores further input.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._dead = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Any]:
        if self._dead:
            return []
        buf = self._buf
        buf += data
        out: list[Any] = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (length,) = _LEN.unpack_from(buf, pos)
            if length > self.max_frame:
                self._dead = True
                buf.clear()
                out.append(
                    FatalProtocolError(
                        "frame_too_large",
                        f"frame length {length} exceeds the limit of {self.max_frame} bytes",
                    )
                )
                return out
            if end - pos - 4 < length:
                break
            body = bytes(buf[pos + 4 : pos + 4 + length])
            pos += 4 + length
            try:
                out.append(unpack_body(body))
            except ProtocolError as err:
                out.append(err)
        if pos:
            del buf[:pos]
        return out


class NativeServerCodec(ServerCodec):
    """The relay side of the native dialect."""

    name = "native"
    fixed_fanout_key = True

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, max_text: int = 4096) -> None:
        super().__init__(max_frame, max_text)
        self._decoder = FrameDecoder(max_frame)

    def receive_data(self, data: bytes) -> list[Decoded]:
        out: list[Decoded] = []
        if not data or self.closed:
            self.closed = True
            return out
        for body in self._decoder.feed(data):
            if isinstance(body, ProtocolError):
                out.append(body)
                continue
            try:
                out.append(parse_client_body(body, self.max_text))
            except ProtocolError as err:
                out.append(err)
        return out

    def encode(self, body: dict[str, Any]) -> bytes:
        return self.encode_fanout(body, None)

    @classmethod
    def encode_fanout(cls, body: dict[str, Any], key: Hashable) -> bytes:
        if body.get("t") == "presence_batch":  # the hub's form; clients get v1 bodies
            return b"".join(frame(b) for b in presence_bodies(body))
        return frame(body)

    def encode_own(self, body: dict[str, Any], msg_id: Any) -> bytes:
        if msg_id is None:
            return self.encode_fanout(body, None)
        own = dict(body)
        own["id"] = msg_id
        return frame(own)


class NativeClientCodec:
    """The client side: events in, bytes out; bytes in, RelayEvents out."""

    def __init__(self, max_frame: int = 16 * 1024 * 1024) -> None:
        # A client trusts its relay more than the relay trusts clients, but
        # still bounds a frame: history pages can be large.
        self._decoder = FrameDecoder(max_frame)

    def send(self, event: ClientEvent) -> bytes:
        return frame(event.to_body())

    def data_to_send(self) -> bytes:
        """Bytes the codec produced by itself: never any in the native dialect."""
        return b""

    def receive_data(self, data: bytes) -> list[RelayEvent | ProtocolError]:
        out: list[RelayEvent | ProtocolError] = []
        for body in self._decoder.feed(data):
            if isinstance(body, ProtocolError):
                out.append(body)
                continue
            try:
                out.append(parse_relay_body(body))
            except ProtocolError as err:
                out.append(err)
        return out
