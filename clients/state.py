"""Sans-I/O client state: our nick, our rooms, and what the user already saw.

Rules this module keeps (read before changing it):

- Per room, `last` is the highest seq delivered to the user. Every `msg` is
  delivered at most once and in seq order: a seq <= `last` is a duplicate.
- A seq > `last` + 1 is a gap. Live messages past the gap are held back, a
  `history` query (our own, a "fill") asks for the missing ones, and when its
  page arrives the missing messages are delivered, then the held ones.
  Whatever history can no longer give is reported once, with its count, as a
  `Missed` event; the user is never silently short of a message.
- A reconnect resumes from `last` (`resume_map()`). What was held or asked
  for on the old connection is forgotten: the relay replays after `last`.
- `history` pages the user asked for pass through untouched; pages we asked
  for are consumed here. Pages come back per room in the order asked.
- A big room's `members` comes in pages (`more`); they are joined here into
  one `Members`, delivered with the last page (at most MAX_MEMBERS names).
- `history_gap` is a notice, not an answer: a `history` page still follows
  it (after a query) or the replay does (after a resume hello). What history
  no longer has shows as a jump in seq there, and becomes one `Missed`.
- A join replay (a `history` page marked `replay`, unasked, right after a
  fresh join's `joined`) holds only seqs <= `joined.seq`: earlier messages,
  delivered as the page itself for the user to see as such. It answers no
  query and moves no `last`, so it is never a gap, a duplicate or a fill.

Feed every relay event to `receive()`; deliver what it returns; send what
`outgoing()` returns. Nothing here touches a socket or a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from transports.events import (
    ClientEvent,
    Error,
    HistoryPage,
    HistoryQuery,
    Joined,
    Members,
    Msg,
    Parted,
    RelayEvent,
    Renamed,
    Say,
    Welcome,
)
from transports.validate import HISTORY_MAX_LIMIT, nick_key

# Live messages held back behind one unfilled gap before we give the gap up.
MAX_HELD = 10_000
# Names gathered from one room's paged `members` before they are delivered as they are.
MAX_MEMBERS = 1_000_000


@dataclass(frozen=True, slots=True)
class LocalEvent:
    """An event the client library makes itself (never on the wire)."""


@dataclass(frozen=True, slots=True)
class Missed(LocalEvent):
    """Messages `first`..`last` of `room` are gone: history no longer reaches them.

    `count` is None when the relay did not say how many (a resume whose room
    seq we never learnt).
    """

    room: str
    count: int | None
    first: int | None = None
    last: int | None = None


@dataclass(frozen=True, slots=True)
class Restarted(LocalEvent):
    """The relay restarted and lost its history (a new epoch, or a room whose
    seq went back): what `room` had before the restart is gone."""

    room: str


@dataclass(frozen=True, slots=True)
class ConnectionLost(LocalEvent):
    """The connection dropped; the client is reconnecting (with auto-reconnect on)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reconnected(LocalEvent):
    """A new connection is up and every room was resumed."""

    nick: str


Incoming = RelayEvent | LocalEvent


@dataclass(slots=True)
class RoomState:
    last: int
    held: dict[int, Msg] = field(default_factory=dict)
    filling: bool = False
    joined_seq: int | None = None
    # The relay said history_gap for our resume; the replay's first seq tells
    # how much is gone.
    resume_gap: bool = False
    # Resumed across a restart whose seq went on: the jump to the first
    # message after it is what the Restarted notice said is gone.
    quiet_gap: bool = False


class ClientState:
    """Everything a client must remember across frames and reconnects."""

    def __init__(self, nick: str | None = None) -> None:
        self.nick = nick
        self.rooms: dict[str, RoomState] = {}
        # Per room, one entry per history query in flight: True = a fill (ours).
        self._history_tags: dict[str, deque[bool]] = {}
        self._out: list[ClientEvent] = []
        # The relay's history epoch (welcome), and rooms to resume across its change.
        self.epoch: int | None = None
        self._restarted: set[str] = set()
        # Rooms whose next history_gap the Restarted notice has already told.
        self._told_gap: set[str] = set()
        self._pages: dict[str, list[str]] = {}  # room -> names of `members` pages so far
        # Says not yet seen coming back: id -> (room, text).
        self.unacked: dict[Any, tuple[str, str]] = {}

    # Outgoing ---------------------------------------------------------------

    def resume_map(self) -> dict[str, int]:
        """{room: last delivered seq} for the `resume` key of a reconnect hello."""
        return {room: rs.last for room, rs in self.rooms.items()}

    def outgoing(self) -> list[ClientEvent]:
        """Queries the state wants sent (history fills); empties the list."""
        out, self._out = self._out, []
        return out

    def sent(self, event: ClientEvent) -> None:
        """Note an event the user sends: their history queries and says."""
        if isinstance(event, HistoryQuery):
            self._history_tags.setdefault(event.room, deque()).append(False)
        elif isinstance(event, Say) and event.id is not None:
            self.unacked[event.id] = (event.room, event.text)

    def connection_lost(self) -> None:
        """Forget what the old connection owed us; keep `last` for the resume."""
        for rs in self.rooms.values():
            rs.held.clear()
            rs.filling = False
            rs.joined_seq = None
            rs.resume_gap = False
            rs.quiet_gap = False
        self._history_tags.clear()
        self._told_gap.clear()
        self._out.clear()
        self._pages.clear()

    # Incoming ---------------------------------------------------------------

    def receive(self, event: RelayEvent) -> list[Incoming]:
        """Update the state with one relay event; return what to deliver, in order."""
        if isinstance(event, Msg):
            return self._on_msg(event)
        if isinstance(event, HistoryPage):
            return self._on_page(event)
        if isinstance(event, Joined):
            return self._on_joined(event)
        if isinstance(event, Welcome):
            self._on_welcome(event)
        elif isinstance(event, Parted):
            self.rooms.pop(event.room, None)
            self._history_tags.pop(event.room, None)
        if isinstance(event, (Welcome, Renamed)):
            self.nick = event.nick
        elif isinstance(event, Error):
            return self._on_error(event)
        elif isinstance(event, Members):
            return self._on_members(event)
        return [event]

    def _on_welcome(self, ev: Welcome) -> None:
        """A new epoch means the relay restarted without its history (with
        --history-db the epoch persists): every room we resume is told so."""
        if ev.epoch is None:
            return
        if self.epoch is not None and ev.epoch != self.epoch:
            self._restarted = set(self.rooms)
        self.epoch = ev.epoch

    def _on_members(self, ev: Members) -> list[Incoming]:
        """Gather a paged member list; deliver it whole with its last page."""
        if not ev.more and ev.room not in self._pages:
            return [ev]
        names = self._pages.setdefault(ev.room, [])
        names += ev.members
        if ev.more and len(names) < MAX_MEMBERS:
            return []
        del self._pages[ev.room]
        return [Members(ev.room, tuple(names), ev.more)]

    def _on_joined(self, ev: Joined) -> list[Incoming]:
        rs = self.rooms.get(ev.room)
        if rs is None:
            # A fresh join: nothing before it is ours to deliver.
            self.rooms[ev.room] = RoomState(last=ev.seq, joined_seq=ev.seq)
            return [ev]
        rs.joined_seq = ev.seq
        restarted = ev.room in self._restarted
        self._restarted.discard(ev.room)
        if ev.seq < rs.last:
            # The room's numbering restarted (a relay without our history): what
            # it holds is all from after the restart, and ours to show.
            rs.last = 0
            rs.held.clear()
            if ev.seq:
                self._out.append(HistoryQuery(ev.room, 0, min(HISTORY_MAX_LIMIT, ev.seq)))
                self._history_tags.setdefault(ev.room, deque()).append(True)
                rs.filling = True
            self._told_gap.add(ev.room)
            return [Restarted(ev.room), ev]
        if restarted:
            rs.quiet_gap = True  # the seq went on (the hub alone restarted)
            self._told_gap.add(ev.room)
            return [Restarted(ev.room), ev]
        return [ev]

    def _on_msg(self, m: Msg) -> list[Incoming]:
        rs = self.rooms.get(m.room)
        if rs is None:
            return [m]  # not a room we track: nothing to order it against
        if m.seq <= rs.last or m.seq in rs.held:
            return []
        self._ack(m)
        out: list[Incoming] = []
        if rs.resume_gap or rs.quiet_gap:
            if m.seq > rs.last + 1:
                if not rs.quiet_gap:
                    out.append(Missed(m.room, m.seq - rs.last - 1, rs.last + 1, m.seq - 1))
                rs.last = m.seq - 1
            rs.resume_gap = rs.quiet_gap = False
        if m.seq == rs.last + 1 and not rs.held:
            rs.last = m.seq
            return out + [m]
        rs.held[m.seq] = m
        out += self._drain(rs)
        if len(rs.held) > MAX_HELD:
            out += self._give_up(m.room, rs)
        elif rs.held and not rs.filling:
            self._request_fill(m.room, rs)
        return out

    def _ack(self, m: Msg) -> None:
        if not self.unacked or self.nick is None or nick_key(m.sender) != nick_key(self.nick):
            return
        if m.id is not None and m.id in self.unacked:
            del self.unacked[m.id]
            return
        # A replay from history carries no id: match the oldest same say.
        for key, value in self.unacked.items():
            if value == (m.room, m.text):
                del self.unacked[key]
                return

    def _drain(self, rs: RoomState) -> list[Incoming]:
        out: list[Incoming] = []
        while rs.last + 1 in rs.held:
            rs.last += 1
            out.append(rs.held.pop(rs.last))
        return out

    def _request_fill(self, room: str, rs: RoomState) -> None:
        missing = min(rs.held) - rs.last - 1
        self._out.append(
            HistoryQuery(room=room, after=rs.last, limit=min(HISTORY_MAX_LIMIT, missing))
        )
        self._history_tags.setdefault(room, deque()).append(True)
        rs.filling = True

    def _give_up(self, room: str, rs: RoomState) -> list[Incoming]:
        """History cannot fill the gap before the held messages: say so, move on."""
        rs.filling = False
        if not rs.held:
            return []
        first_held = min(rs.held)
        out: list[Incoming] = []
        if first_held > rs.last + 1:
            out.append(Missed(room, first_held - rs.last - 1, rs.last + 1, first_held - 1))
            rs.last = first_held - 1
        return out + self._drain(rs)

    def _pop_tag(self, room: str) -> bool | None:
        tags = self._history_tags.get(room)
        return tags.popleft() if tags else None

    def _on_page(self, page: HistoryPage) -> list[Incoming]:
        if page.replay:
            return [page]  # earlier messages to show, not ours to order (see the top)
        tag = self._pop_tag(page.room)
        rs = self.rooms.get(page.room)
        if tag is False or rs is None:
            return [page]  # the user's own query: theirs to read as they like
        if tag:
            rs.filling = False
        out: list[Incoming] = []
        for m in sorted(page.messages, key=lambda m: m.seq):
            if m.seq <= rs.last:
                continue
            out += self._drain(rs)
            if m.seq > rs.last + 1:
                out.append(Missed(page.room, m.seq - rs.last - 1, rs.last + 1, m.seq - 1))
            rs.held.pop(m.seq, None)
            rs.last = m.seq
            self._ack(m)
            out.append(m)
        out += self._drain(rs)
        if rs.held and not rs.filling:
            if tag and (not page.more or not page.messages):
                out += self._give_up(page.room, rs)
            else:
                self._request_fill(page.room, rs)
        return out

    def _on_error(self, err: Error) -> list[Incoming]:
        if err.ref == "say" and self.unacked:
            # A refused say never comes back; forget the oldest one of that room.
            for key, (said_in, _text) in self.unacked.items():
                if err.room is None or err.room == said_in:
                    del self.unacked[key]
                    break
        room = err.room
        if room is None:
            return [err]
        rs = self.rooms.get(room)
        tags = self._history_tags.get(room)
        if err.ref == "history" and tags:
            if err.code == "history_gap":
                # A notice ahead of the page that still answers the query: our
                # fill learns what is gone from that page; the user sees it.
                return [] if tags[0] else [err]
            if self._pop_tag(room) and rs is not None:
                return self._give_up(room, rs)  # our fill failed: report, go on
            return [err]
        if err.code == "history_gap" and room in self._told_gap:
            self._told_gap.discard(room)
            return []  # the Restarted notice said it; what is left arrives as usual
        if err.code == "history_gap" and rs is not None:
            # A resume that history no longer reaches fully. The relay replays
            # what it still has right after this; the first replayed seq says
            # how many are gone (see _on_msg).
            if rs.joined_seq is not None and rs.joined_seq > rs.last:
                rs.resume_gap = True
                return []
            return [Missed(room, None)]
        return [err]
