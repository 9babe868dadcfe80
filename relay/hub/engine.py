"""The engine seam: everything the hub's handlers ask of the relay's state.

The handlers (state.py, members.py, requests.py, moderation.py) decide what
a request means and what to answer; an Engine holds the facts they decide
on: who is connected under which nick, who is in which room, each room's seq
and history, bans, mutes and failed passwords. memory.py is the engine of
one hub process (today's behaviour). A second engine (issue 23: Redis) plugs
in here without touching the handlers, the loop or the workers: each host
keeps its own hub process and bus, and that hub drives the shared engine.

Every method is called from the hub's loop thread only, in the order the
requests arrived, and must not block for long (a Redis engine batches its
round trips per wake). What a shared implementation must guarantee is said
per method; "relay-wide" means across every host that uses the same engine.

Keys: a client is a ConnKey (worker id, connection id); worker ids are
unique relay-wide, so a key also says which host and worker holds the
client. Nicks are compared by `transports.validate.nick_key`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from relay.hub.replies import Body, ConnKey, Out

SanctionKind = Literal["nick", "ip", "mute"]  # bans by nick_key, bans by ip_key, mutes by nick_key


class EngineUnavailable(RuntimeError):
    """A shared engine cannot reach its store (Redis down): the request that met it
    is answered `unavailable` (clients stay connected) and the engine retries."""


@dataclass(slots=True)
class ClientRec:
    """One connected client as the engine registers it."""

    worker: str
    conn: int
    nick: str
    rooms: dict[str, None] = field(default_factory=dict)  # ordered set, in join order
    ip: str = ""  # as ip_key() gives it; "" when unknown (re-announced after a hub restart)
    away: str = ""  # AWAY text; "" while present
    quit_reason: str = ""  # the reason its bye gave, shown in the parts it causes


@dataclass(slots=True)
class Sanction:
    """A ban or mute: until (wall-clock ms, 0 = no expiry), who set it, why."""

    until: int
    by: str
    reason: str

    def left(self, now: int) -> str:
        if not self.until:
            return "until an operator lifts it"
        minutes = max(1, -(-(self.until - now) // 60_000))
        return f"for {minutes} more minute{'' if minutes == 1 else 's'}"


class Engine(Protocol):
    """The state one hub drives. See the module docstring for the ground rules."""

    epoch: int
    """Changes only when sequenced history was lost; clients see a new epoch as
    "your seqs mean nothing here". Shared: one epoch per room is allowed, but a
    lost seq counter must never be reused silently (start a new epoch)."""

    on_forget: Callable[[str], None]
    """Called with a room's name when the engine drops it (TTL, budgets), so the
    hub drops what it keeps per room (pending presence)."""

    # Clients and nicks ----------------------------------------------------------

    def client(self, key: ConnKey) -> ClientRec | None:
        """The client's record, or None. Shared: includes other hosts' clients."""

    def clients_on(self, worker: str) -> list[ConnKey]:
        """Every client a worker holds (to drop them when the worker dies)."""

    def clients_at(self, ip: str) -> list[ConnKey]:
        """Every client connected from `ip` (an IP ban cuts them), relay-wide."""

    def client_count(self) -> int:
        """Clients registered (for metrics)."""

    def register(self, rec: ClientRec) -> bool:
        """Claim `rec.nick` for `rec` and record it; False (nothing changed) when the
        nick is taken. Shared: atomic and unique relay-wide (SET NX), leased by the
        owning host so a dead host's nicks come free."""

    def unregister(self, key: ConnKey) -> ClientRec | None:
        """Forget a client and free its nick (the hub parts its rooms first)."""

    def nick_owner(self, nick: str) -> ConnKey | None:
        """Who holds `nick` relay-wide, or None."""

    def rename(self, key: ConnKey, new: str) -> None:
        """Give `key` the nick `new` (the hub checked it is free or already its own)
        and free the old one. Shared: the claim of `new` must be atomic."""

    def set_away(self, key: ConnKey, text: str) -> None:
        """Record AWAY text ("" = back); WHOIS from any host shows it."""

    # Rooms and members ----------------------------------------------------------

    def room_count(self) -> int:
        """Rooms the engine holds (with members or history)."""

    def open_room(self, name: str, force: bool = False) -> bool:
        """Make `name` usable (create it, or bring back its seq and history); False
        when the room budget refuses a new room. `force` opens it anyway (members
        re-announced after a restart exist whatever the budget says). A room that
        comes back continues its seq: no seq is ever handed out twice."""

    def join(self, name: str, key: ConnKey) -> bool:
        """Add a member to an open room (and the room to its record); True when it
        was not a member. Shared: the member's key names its host."""

    def part(self, name: str, key: ConnKey) -> None:
        """Remove a member (and the room from its record); the room stays open."""

    def vacated(self, name: str, mono: float) -> None:
        """The hub announced the last member's leaving: the engine may drop the
        room now (no history) or after the room TTL (counted from `mono`)."""

    def members(self, name: str, limit: int | None = None) -> list[ConnKey]:
        """The room's members in join order, the first `limit` of them if given."""

    def member_count(self, name: str) -> int:
        """How many members the room has relay-wide (0 for a room not open)."""

    def is_member(self, name: str, key: ConnKey) -> bool:
        """Whether `key` is in the room (False for a room not open)."""

    def occupied(self) -> list[tuple[int, str]]:
        """(member count, name) of every room with members, in no order."""

    def quiet(self, name: str) -> bool:
        """Whether the room is past the presence limit (joins and parts unannounced).
        Shared: one flag per room, so every host announces alike."""

    def set_quiet(self, name: str, quiet: bool) -> None:
        """Record the room's quiet flag."""

    # Sequencing and history -----------------------------------------------------

    def sequence(self, name: str, bodies: Sequence[Body]) -> Sequence[Body]:
        """Give each msg body the room's next seq (in order), store it in history and
        return the bodies. Shared: one atomic step per batch (increment, append to
        the room's capped stream, publish to the room's other hosts), so every host
        sees one order per room and a seq is never handed out twice."""

    def seq(self, name: str) -> int | None:
        """The room's last seq (0: never spoken in), or None when it is not open."""

    def raise_seq(self, name: str, seq: int) -> None:
        """Continue the open room's seq from at least `seq` (a worker re-announcing
        what its clients saw after a restart)."""

    def first_seq(self, name: str) -> int:
        """Seq of the oldest message the open room's history still has (seq+1: none)."""

    def latest(self, name: str, limit: int) -> tuple[list[Body], bool]:
        """The newest `limit` messages, oldest first, and whether older ones exist."""

    def after(self, name: str, seq: int, limit: int | None) -> tuple[list[Body], bool]:
        """Up to `limit` (None: all) messages after `seq` from what history still has,
        oldest first, and whether newer ones exist beyond the page."""

    def select(self, name: str, sub: str, refs: Sequence[tuple[str, int]],
               limit: int) -> list[Body]:
        """A CHATHISTORY page (chathistory.py): by seq and by ts, oldest first."""

    def last_ts(self, name: str) -> int | None:
        """The ts of the room's newest message in history, or None."""

    # Moderation and failed passwords -------------------------------------------

    def sanction(self, kind: SanctionKind, key: str, now: int) -> Sanction | None:
        """The sanction in force under `key` (expired ones are dropped). Shared:
        relay-wide and durable across restarts."""

    def sanctions(self, kind: SanctionKind) -> dict[str, Sanction]:
        """Every sanction of a kind (possibly expired ones), for the `_bans` item."""

    def set_sanction(self, kind: SanctionKind, key: str, sanction: Sanction, cap: int,
                     now: int) -> bool:
        """Store a sanction; False when `cap` entries are in force and `key` is new."""

    def lift(self, kind: SanctionKind, key: str) -> Sanction | None:
        """Remove a sanction; returns it, or None if there was none."""

    def auth_fail(self, req: Body, now: int) -> Body | None:
        """Count a failed password (req["ip"]); the `_block` item when it starts a
        block. Shared: counted relay-wide."""

    def auth_blocks(self, now: int) -> dict[str, int]:
        """Addresses blocked after failed passwords: key -> until (ms)."""

    # Upkeep ---------------------------------------------------------------------

    def expire(self, mono: float) -> None:
        """Drop what outlived its TTL (empty, silent rooms); called every heartbeat."""

    def flush(self) -> None:
        """Make everything sequenced so far durable before the hub publishes it: a
        seq a client has seen is never reused. Failures are logged and retried."""

    wake_fd: int | None
    """A file descriptor the hub loop polls: readable when `incoming()` has items
    (None for an engine with nothing coming from elsewhere)."""

    def outgoing(self, out: Out) -> Out:
        """Take the wake's output before it is published and return what this hub
        publishes itself. A shared engine sequences the msgs here (one round trip for
        the wake) and sends room items and replies for other hosts' workers through
        the store; its room items come back to every host, this one included, by
        `incoming()`, in one order per room."""

    def incoming(self) -> Out:
        """Room items sequenced by other hosts since the last call, to publish on
        this host's bus in their room's seq order ([] for a single-hub engine)."""

    def close(self) -> None:
        """Flush and release what the engine holds (files, connections)."""
