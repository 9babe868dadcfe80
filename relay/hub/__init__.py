"""The hub process: one sequencer, history and registry for every room.

A request's path through this package, top to bottom:

    process.py     the loop: receive a worker's batch, hand each request on,
                   publish the output one bus message per run of one topic
    state.py       dispatch: one request (an `op`) to its handler; resync, containment
    members.py     hello, join, part, leave: membership and the replies about it
    requests.py    the other chat requests: say, whisper, nick, history, away...
    moderation.py  kick, ban, mute: the operator's requests and the `_bans` item
    presence.py    joins, parts and renames coalesced per room; quiet rooms
    engine.py      THE SEAM: what the hub asks of its state (sequence, store,
                   look up, register); memory.py is today's implementation
    memory.py      the in-memory engine: nicks, clients, sanctions, rooms
    rooms.py       the memory engine's rooms: budgets, TTL, tombstones, seq floors
    history.py     the memory ring's pages and what a stored message costs
    historydb.py   the SQLite copy of history (--history-db)
    chathistory.py IRCv3 CHATHISTORY selections over a ring
    authguard.py   failed passwords per address, relay-wide blocks
    replies.py     the output items and the reply helpers every handler shares
    stats.py       the counts the hub publishes for metrics

This file imports nothing, so importing one module of the package (metrics
reads `stats`) never pulls in the loop.
"""
