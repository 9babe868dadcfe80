"""The contract every server-side dialect codec keeps (sans-I/O).

The relay's connection machinery (relay/worker/writer.py) knows only this
interface, so adding a dialect never touches the relay core:

- `receive_data(data)` takes bytes from the socket (b"" means EOF) and
  returns what they decoded to, in order: `ClientEvent`s for the relay to act
  on, and `ProtocolError`s for bad input (the machinery answers those with
  `encode(err.body())` and closes only when `err.fatal`).
- `data_to_send()` returns bytes the codec produced on its own (a WebSocket
  handshake, an IRC numeric, a text-dialect `/help` page); the machinery
  sends them right after each `receive_data`.
- `encode(body)` turns one relay -> client body (a PROTOCOL.md map) into
  bytes for *this* connection; b"" means this dialect shows nothing for it.
- Fan-out encodes a room's batch once per (codec class, `fanout_key(room)`)
  with the classmethod `encode_fanout(body, key)`, and only for messages a
  member sent itself asks that member's `encode_own(body, id)` (native echoes
  `id`; text and IRC do not echo a client's own lines).
- `closed` becomes True once the codec wants the connection closed after
  what it has to send (a `/quit`, a WebSocket close).
- `configured(settings)` builds the codec a relay connection uses, with the
  limits the relay's settings give it (the constructor's defaults otherwise).

Threads: one rule for every codec, and no locks.

Two threads use a codec. The connection's reader thread decodes:
`receive_data`, `flush_partial`, `partial`, `data_to_send`. The worker's bus
thread encodes what the hub sends: `encode`, `encode_own`, `fanout_key`
(`encode_fanout` is a classmethod of the body alone). The reader thread
also encodes the few bodies the relay makes itself (errors about the
client's input, a keepalive `ping`, a notice before `welcome`, the
`slow_consumer` error) and calls `farewell`, at the same time as the bus
thread may be encoding.

1. Decode state belongs to the reader thread: only decoding writes it.
2. Encode state belongs to the encoder: only `encode`/`encode_own`/
   `farewell` write it, and only for bodies the hub sends (they reach the
   bus thread one at a time, in order); bodies the reader thread encodes
   read state but change none, except to settle a request the relay
   refused before the hub saw it (no hub answer for it can race them).
3. Anything one side needs from the other is passed as a value: an
   immutable object (str, int, tuple, frozenset) the owner replaces by one
   attribute assignment and never changes in place, so a reader sees the
   old value or the new one, never half of either. Per-request records the
   encoder needs (IRC: which command asked) travel through a
   `collections.deque` used one way: the reader appends, the encoder pops
   (deque appends and pops are atomic).
4. A flag that only ever goes from False to True (`closed`, WebSocket's
   "close frame sent") may be set by either side: both write the same value.

tests/unit/transports/test_codec_threads.py decodes and encodes on every codec at once and
checks both outputs are the ones a single thread gives.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, ClassVar, Protocol, Self

from transports.errors import ProtocolError
from transports.events import ClientEvent

Decoded = ClientEvent | ProtocolError


class CodecSettings(Protocol):
    """The relay settings a codec is built from (relay.config.Settings has them all)."""

    @property
    def max_frame(self) -> int: ...
    @property
    def max_text(self) -> int: ...
    @property
    def max_fragments(self) -> int: ...
    @property
    def max_pending(self) -> int: ...
    @property
    def allowed_origins(self) -> str: ...
    @property
    def max_rooms_per_client(self) -> int: ...


class ServerCodec:
    """Base class for a dialect as the relay speaks it (bytes <-> events)."""

    name: ClassVar[str] = "abstract"
    # Whether the relay should send `hello` on the client's behalf (text
    # dialect: guests are named by the relay); None means wait for the client.
    auto_hello: ClassVar[bool] = False

    def __init__(self, max_frame: int = 65536, max_text: int = 4096) -> None:
        self.max_frame = max_frame
        self.max_text = max_text
        self.closed = False
        self.nick: str | None = None
        # Errors this codec answered on its own (IRC's 421, 461, ...), not as
        # a decoded ProtocolError: the reader charges them to the connection's
        # error budget like any other error. Decode state (reader thread).
        self.own_errors = 0
        # How many more the reader will let it answer before the connection is
        # closed for too many errors; past it the codec counts but stays silent,
        # so one read of junk cannot make thousands of replies.
        self.error_allowance = 1 << 30

    @classmethod
    def configured(cls, settings: CodecSettings) -> Self:
        """A codec for one relay connection, with every limit `settings` sets for it."""
        return cls(settings.max_frame, settings.max_text)

    def receive_data(self, data: bytes) -> list[Decoded]:
        raise NotImplementedError

    def data_to_send(self) -> bytes:
        return b""

    def take_own_errors(self) -> int:
        """How many errors the codec answered itself since the last call."""
        count, self.own_errors = self.own_errors, 0
        return count

    @property
    def partial(self) -> bool:
        """True while an unfinished message sits in the input buffer."""
        return False

    def flush_partial(self) -> list[Decoded]:
        """The peer went quiet mid-message: decode what it sent as if complete.

        Only line dialects do anything here: the seed tutorial's client sends
        each message without a newline, and a line followed by silence is
        what it means.
        """
        return []

    def encode(self, body: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def farewell(self) -> bytes:
        """What ends the conversation after a `Bye` (IRC's ERROR line, WebSocket's
        Close frame). The relay sends it once the bye's round trip through the
        hub is done, so it follows the replies to everything sent before the bye
        instead of overtaking them (after a Close, nothing more may be sent)."""
        return b""

    # True when fanout_key() never changes once the connection is set up (the
    # relay then caches it per connection instead of asking per delivery).
    fixed_fanout_key: ClassVar[bool] = False

    def fanout_key(self, room: str) -> Hashable:
        return None

    @classmethod
    def encode_fanout(cls, body: dict[str, Any], key: Hashable) -> bytes:
        raise NotImplementedError

    def encode_own(self, body: dict[str, Any], msg_id: Any) -> bytes:
        """How this member sees a message it sent itself (default: like everyone)."""
        return type(self).encode_fanout(body, self.fanout_key(body.get("room", "")))
