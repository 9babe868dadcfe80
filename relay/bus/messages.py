"""Every request to the hub and every control item from it, one typed message each.

On the bus a request is a msgpack map `{"op": NAME, ...fields}` (plus "c",
the client's connection id on its worker, for a client's request), and a
control item is a map `{"t": "_NAME", ...}` that no client ever sees. This
module is the one place that spells the key "op" and the names: senders
build a dataclass and call `to_wire()`, the hub's dispatch table is keyed by
each class's `OP`, and a worker reads control items with `decode_control`.
Replies meant for clients (welcome, joined, msg, error, ...) are protocol
bodies (PROTOCOL.md), not bus messages, and are not typed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

OP = "op"  # the key that names a request


def op_of(req: Any) -> str | None:
    """The name of a request as it came off the bus (None when it has none)."""
    op = req.get(OP) if isinstance(req, dict) else None
    return op if isinstance(op, str) else None


@dataclass(frozen=True, slots=True)
class Request:
    """A request to the hub; its fields go on the wire under their own names."""

    OP: ClassVar[str] = ""

    def to_wire(self, conn: int | None = None) -> dict[str, Any]:
        """The map the hub reads; `conn` (the client's id on its worker) as "c"."""
        wire: dict[str, Any] = {OP: self.OP}
        names: tuple[str, ...] = self.__slots__  # type: ignore[attr-defined]
        for name in names:
            wire[name] = getattr(self, name)
        if conn is not None:
            wire["c"] = conn
        return wire


# A worker's own requests ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heartbeat(Request):
    """Every 0.5 s; `hello` while the worker waits for its first answer."""

    OP: ClassVar[str] = "hb"
    hello: bool | None = None

    def to_wire(self, conn: int | None = None) -> dict[str, Any]:
        return {OP: self.OP} if self.hello is None else {OP: self.OP, "hello": self.hello}


@dataclass(frozen=True, slots=True)
class Credit(Request):
    """Ask for receipt `n` (worker/pacing.py: the credit window)."""

    OP: ClassVar[str] = "credit"
    n: int


@dataclass(frozen=True, slots=True)
class Sync(Request):
    """After a hub restart: [conn, nick, {room: last seq}] for every client here."""

    OP: ClassVar[str] = "sync"
    clients: list[list[Any]]


@dataclass(frozen=True, slots=True)
class Fill(Request):
    """Resend `room`'s messages after seq `after`: the bus dropped some."""

    OP: ClassVar[str] = "fill"
    room: str
    after: int


@dataclass(frozen=True, slots=True)
class AuthFail(Request):
    """A wrong password from `ip`: the hub counts it relay-wide and may block."""

    OP: ClassVar[str] = "auth_fail"
    ip: str


@dataclass(frozen=True, slots=True)
class WorkerGone(Request):
    """The supervisor: worker `w` died, its clients are gone."""

    OP: ClassVar[str] = "worker_gone"
    w: str


# A client's requests (with "c") ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello(Request):
    OP: ClassVar[str] = "hello"
    nick: str | None
    rooms: list[str]
    resume: dict[str, Any]
    ip: str


@dataclass(frozen=True, slots=True)
class Gone(Request):
    """The client's connection closed."""

    OP: ClassVar[str] = "gone"


@dataclass(frozen=True, slots=True)
class Bye(Request):
    """The client said bye: the hub answers `_bye` after every earlier reply."""

    OP: ClassVar[str] = "bye"
    reason: str | None = None

    def to_wire(self, conn: int | None = None) -> dict[str, Any]:
        wire: dict[str, Any] = {OP: self.OP, "c": conn}
        if self.reason is not None:
            wire["reason"] = self.reason
        return wire


@dataclass(frozen=True, slots=True)
class Echo(Request):
    """A reply the reader made, sent back down in line with the hub's replies."""

    OP: ClassVar[str] = "echo"
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Join(Request):
    OP: ClassVar[str] = "join"
    room: str


@dataclass(frozen=True, slots=True)
class Part(Request):
    OP: ClassVar[str] = "part"
    room: str


@dataclass(frozen=True, slots=True)
class Say(Request):
    OP: ClassVar[str] = "say"
    room: str
    text: str
    id: Any = None
    action: bool | None = None

    def to_wire(self, conn: int | None = None) -> dict[str, Any]:
        wire = {OP: self.OP, "room": self.room, "text": self.text, "id": self.id, "c": conn}
        if self.action:
            wire["action"] = True
        return wire


@dataclass(frozen=True, slots=True)
class Whisper(Request):
    OP: ClassVar[str] = "whisper"
    to: str
    text: str
    id: Any = None
    action: bool | None = None


@dataclass(frozen=True, slots=True)
class Nick(Request):
    OP: ClassVar[str] = "nick"
    nick: str


@dataclass(frozen=True, slots=True)
class Who(Request):
    OP: ClassVar[str] = "who"
    room: str


@dataclass(frozen=True, slots=True)
class History(Request):
    OP: ClassVar[str] = "history"
    room: str
    after: int | None
    limit: int | None


@dataclass(frozen=True, slots=True)
class ChatHistory(Request):
    """IRCv3 CHATHISTORY: `refs` are [kind, value] pairs."""

    OP: ClassVar[str] = "chathistory"
    room: str
    sub: str
    refs: list[list[Any]]
    limit: int
    id: Any = None


@dataclass(frozen=True, slots=True)
class Whois(Request):
    OP: ClassVar[str] = "whois"
    nick: str
    id: Any = None


@dataclass(frozen=True, slots=True)
class Away(Request):
    OP: ClassVar[str] = "away"
    text: str | None


@dataclass(frozen=True, slots=True)
class Rooms(Request):
    OP: ClassVar[str] = "rooms"


@dataclass(frozen=True, slots=True)
class Ping(Request):
    """Through the hub, so the pong comes after every earlier reply."""

    OP: ClassVar[str] = "ping"
    id: Any = None


@dataclass(frozen=True, slots=True)
class Moderation(Request):
    """An operator's action: `fields` are the client's frame without its "t"."""

    fields: dict[str, Any] = field(default_factory=dict)

    def to_wire(self, conn: int | None = None) -> dict[str, Any]:
        return {**self.fields, OP: self.OP, "c": conn}


@dataclass(frozen=True, slots=True)
class Kick(Moderation):
    OP: ClassVar[str] = "kick"


@dataclass(frozen=True, slots=True)
class Ban(Moderation):
    OP: ClassVar[str] = "ban"


@dataclass(frozen=True, slots=True)
class Unban(Moderation):
    OP: ClassVar[str] = "unban"


@dataclass(frozen=True, slots=True)
class Mute(Moderation):
    OP: ClassVar[str] = "mute"


@dataclass(frozen=True, slots=True)
class Unmute(Moderation):
    OP: ClassVar[str] = "unmute"


MODERATION: dict[str, type[Moderation]] = {
    cls.OP: cls for cls in (Kick, Ban, Unban, Mute, Unmute)}


# Control items from the hub (never shown to a client) -----------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """The hub answered our hello heartbeat: accept clients now."""

    T: ClassVar[str] = "_ready"
    epoch: int


@dataclass(frozen=True, slots=True)
class Resync:
    """The hub does not know us (it restarted): re-announce our clients."""

    T: ClassVar[str] = "_resync"


@dataclass(frozen=True, slots=True)
class Filled:
    """The answer to a Fill: `room`'s messages from history."""

    T: ClassVar[str] = "_fill"
    room: str
    messages: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Bans:
    """Every IP ban (ip -> until) and password block (key -> until), wall-clock ms."""

    T: ClassVar[str] = "_bans"
    ips: dict[str, int]
    blocks: dict[str, int]


@dataclass(frozen=True, slots=True)
class Block:
    """One new password block, announced to every worker."""

    T: ClassVar[str] = "_block"
    key: str
    until: int


@dataclass(frozen=True, slots=True)
class Receipt:
    """Credit receipt `n`: our fan-out of everything sent before it is done."""

    T: ClassVar[str] = "_credit"
    n: int


@dataclass(frozen=True, slots=True)
class HubBeat:
    """The hub's heartbeat: its epoch, and topic -> [bus seq, room msg seq or None]."""

    T: ClassVar[str] = "_hub"
    epoch: Any
    seqs: dict[bytes, list[Any]]


@dataclass(frozen=True, slots=True)
class ByeDone:
    """Every reply before a client's bye went out (a reader waits for this)."""

    T: ClassVar[str] = "_bye"


Control = Ready | Resync | Filled | Bans | Block | Receipt | HubBeat | ByeDone


def decode_control(body: dict[str, Any]) -> Control | None:
    """The control item in `body`, or None for a client's protocol body."""
    t = body.get("t")
    if t == "_ready":
        return Ready(body["epoch"])
    if t == "_resync":
        return Resync()
    if t == "_fill":
        return Filled(str(body.get("room")), list(body.get("messages") or ()))
    if t == "_bans":
        return Bans(dict(body.get("ips") or {}), dict(body.get("blocks") or {}))
    if t == "_block":
        return Block(str(body.get("key")), int(body.get("until") or 0))
    if t == "_credit":
        return Receipt(int(body.get("n") or 0))
    if t == "_hub":
        return HubBeat(body.get("epoch"), body.get("seqs") or {})
    if t == "_bye":
        return ByeDone()
    return None


@dataclass(frozen=True, slots=True)
class RoomItem:
    """One item of a room batch: `[body, author worker, author conn, client id]`.

    The author is a worker id (or, for a presence batch, a list of
    [worker, conn] pairs); the worker whose client wrote it sends that client
    its own copy (with its `id`). Fan-out reads the raw lists (the hot path);
    this type names the positions and makes items elsewhere.
    """

    body: dict[str, Any]
    author: Any = None
    conn: int | None = None
    id: Any = None

    def to_wire(self) -> list[Any]:
        return [self.body, self.author, self.conn, self.id]
