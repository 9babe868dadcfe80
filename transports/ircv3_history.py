"""IRCv3 `draft/chathistory`: the CHATHISTORY command onto the hub's history.

    CHATHISTORY LATEST  <target> <* | ref> <limit>
    CHATHISTORY BEFORE  <target> <ref> <limit>
    CHATHISTORY AFTER   <target> <ref> <limit>
    CHATHISTORY AROUND  <target> <ref> <limit>
    CHATHISTORY BETWEEN <target> <ref> <ref> <limit>
    CHATHISTORY TARGETS <timestamp=> <timestamp=> <limit>

A ref is `msgid=<id>` (an id this relay made: room, epoch and seq, so it
turns back into a seq of the same room) or `timestamp=<ISO 8601>`. The hub
selects the page (relay/hub/chathistory.py); the answer comes back as a
`chathistory` body and goes out as `BATCH +ref chathistory <target>`.
Bad requests get the specification's `FAIL CHATHISTORY <code>` here.
"""

from __future__ import annotations

from typing import Any, Final

from transports.events import ChatHistory
from transports.irc_lines import SERVER_NAME, build, clean
from transports.ircv3_tags import parse_room_msgid, parse_server_time
from transports.validate import HISTORY_MAX_LIMIT, is_valid_nick, is_valid_room

SUBCOMMANDS: Final = frozenset({"LATEST", "BEFORE", "AFTER", "AROUND", "BETWEEN", "TARGETS"})
_REF_COUNT: Final = {"LATEST": 1, "BEFORE": 1, "AFTER": 1, "AROUND": 1, "BETWEEN": 2,
                     "TARGETS": 2}


class HistoryFail(Exception):
    """A CHATHISTORY request that gets `FAIL CHATHISTORY code context :text`."""

    def __init__(self, code: str, context: tuple[str, ...], text: str) -> None:
        super().__init__(text)
        self.code, self.context, self.text = code, context, text

    def line(self) -> str:
        return build(SERVER_NAME, "FAIL", ("CHATHISTORY", self.code, *self.context), self.text)


def _ref(word: str, sub: str, room: str | None) -> tuple[str, int]:
    if word == "*" and sub == "LATEST":
        return ("*", 0)
    kind, _, value = word.partition("=")
    if kind == "timestamp":
        ms = parse_server_time(value)
        if ms is not None:
            return ("ts", ms)
    elif kind == "msgid" and room is not None:
        found = parse_room_msgid(value)
        if found is not None and found[0] == room:
            return ("seq", found[1])
        raise HistoryFail("INVALID_MSGREFTYPE", (sub, clean(word)[:80]),
                          "not a msgid of this channel")
    raise HistoryFail("INVALID_PARAMS", (sub, clean(word)[:80]),
                      "a reference is msgid=ID or timestamp=YYYY-MM-DDThh:mm:ss.sssZ")


def _limit(word: str, sub: str) -> int:
    if not word.isdigit() or int(word) < 1:
        raise HistoryFail("INVALID_PARAMS", (sub, clean(word)[:20]),
                          f"the limit is a number 1-{HISTORY_MAX_LIMIT}")
    return min(int(word), HISTORY_MAX_LIMIT)


def parse(params: tuple[str, ...], label: Any) -> ChatHistory | str:
    """The request, or the nick of a private target (the relay keeps no private
    history: its answer is an empty batch).

    Raises:
        HistoryFail: the request is malformed.
    """
    if not params:
        raise HistoryFail("NEED_MORE_PARAMS", ("*",), "CHATHISTORY needs a subcommand")
    sub = params[0].upper()
    if sub not in SUBCOMMANDS:
        raise HistoryFail("UNKNOWN_COMMAND", (clean(sub)[:20],), "unknown subcommand")
    wanted = _REF_COUNT[sub] + (1 if sub == "TARGETS" else 2)
    if len(params) < wanted + 1:
        raise HistoryFail("NEED_MORE_PARAMS", (sub,), f"CHATHISTORY {sub} needs {wanted} "
                          "parameters")
    if sub == "TARGETS":
        refs = tuple(_ref(w, sub, None) for w in params[1:3])
        if any(kind != "ts" for kind, _ in refs):
            raise HistoryFail("INVALID_PARAMS", (sub,), "TARGETS takes two timestamps")
        return ChatHistory("", "targets", refs, _limit(params[3], sub), label)
    target = params[1]
    if not target.startswith("#"):
        if is_valid_nick(target):
            return target
        raise HistoryFail("INVALID_TARGET", (sub, clean(target)[:64]), "no such target")
    room = target[1:]
    if not is_valid_room(room):
        raise HistoryFail("INVALID_TARGET", (sub, clean(target)[:64]), "no such channel")
    refs = tuple(_ref(w, sub, room) for w in params[2:2 + _REF_COUNT[sub]])
    return ChatHistory(room, sub.lower(), refs, _limit(params[wanted], sub), label)
