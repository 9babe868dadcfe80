"""What each client event asks of the hub: the typed bus request for it.

The reader decodes a frame into an event (transports/events.py) and checks
it; what goes to the hub is the bus's own message (relay/bus/messages.py),
so the hub never sees a dialect's shape.
"""

from __future__ import annotations

from relay.bus import messages as m
from transports.events import (
    Away,
    ChatHistory,
    ClientEvent,
    HistoryQuery,
    Join,
    ListRooms,
    NickChange,
    Part,
    Ping,
    Say,
    Whisper,
    Who,
    Whois,
)

# Requests answered with pages of replies (history, member lists): a reader
# lets a client have at most MAX_ASKING of them unanswered (writer.wait_to_ask).
PAGED = (m.History, m.ChatHistory, m.Who, m.Rooms, m.Whois)
MAX_ASKING = 2
# Sent up after a paged request; the hub echoes it back behind the reply, and
# the bus thread counts the request answered once that reply is out.
ANSWERED = "_answered"


def request_for(ev: ClientEvent) -> m.Request | None:
    """The hub request for a checked client event (None: not the hub's business)."""
    if isinstance(ev, Say):
        return m.Say(ev.room, ev.text, ev.id, True if ev.action else None)
    if isinstance(ev, Join):
        return m.Join(ev.room)
    if isinstance(ev, Part):
        return m.Part(ev.room)
    if isinstance(ev, Whisper):
        return m.Whisper(ev.to, ev.text, ev.id, ev.action)
    if isinstance(ev, NickChange):
        return m.Nick(ev.nick)
    if isinstance(ev, Who):
        return m.Who(ev.room)
    if isinstance(ev, HistoryQuery):
        return m.History(ev.room, ev.after, ev.limit)
    if isinstance(ev, ListRooms):
        return m.Rooms()
    if isinstance(ev, ChatHistory):
        return m.ChatHistory(ev.room, ev.sub, [list(r) for r in ev.refs], ev.limit, ev.id)
    if isinstance(ev, Whois):
        return m.Whois(ev.nick, ev.id)
    if isinstance(ev, Away):
        return m.Away(ev.text)
    if isinstance(ev, Ping):
        # Through the hub, so the pong comes after the replies to every
        # request before it: a client pings to know those are all in.
        return m.Ping(ev.id)
    return None


def moderation_for(ev: ClientEvent) -> m.Moderation:
    """An operator's kick/ban/mute: the frame's fields, under the bus's name for it."""
    fields = ev.to_body()
    return m.MODERATION[str(fields.pop("t"))](fields)
