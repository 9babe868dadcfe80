"""IRCv3 message tags: escaping, `server-time`, `msgid`, and the tag prefix.

Sans-I/O helpers for transports/irc.py (the message-tags, server-time and
batch specifications):

- A tag value escapes `;`, space, `\\`, CR and LF as `\\:`, `\\s`, `\\\\`,
  `\\r`, `\\n`; unescaping drops a lone trailing `\\` and turns an unknown
  escape `\\x` into `x`, as the specification says.
- `msgid` of a room message is derived from its room, the hub's epoch and
  its seq, so every worker on every host that hears the hub names one
  message alike, and CHATHISTORY can turn a msgid back into a seq. A
  whisper has no seq; its id is derived from its time, ends and text.
- `server-time` is the relay's `ts` (integer ms) as ISO 8601 UTC with
  milliseconds: `2026-12-04T12:00:00.000Z`.
"""

from __future__ import annotations

import calendar
import re
import time
import zlib
from collections.abc import Iterable
from typing import Final

# The hub's epoch as this worker last heard it (relay/worker/busloop.py sets it
# with one assignment; encoders only read it). 0 until the hub answered.
_hub_epoch: int = 0

MAX_CLIENT_TAGS: Final = 4094  # message-tags: bytes of tags a client may send
_ESCAPES: Final = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}
_UNESCAPES: Final = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_ESCAPE_RE: Final = re.compile(r"[; \\\r\n]")
_TS_RE: Final = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z$")


def set_hub_epoch(epoch: int) -> None:
    """Record the hub's epoch (the worker calls this when the hub announces it)."""
    global _hub_epoch
    _hub_epoch = int(epoch)


def hub_epoch() -> int:
    return _hub_epoch


def escape_value(value: str) -> str:
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group()], value)


def unescape_value(value: str) -> str:
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch == "\\":
            if i + 1 < n:
                nxt = value[i + 1]
                out.append(_UNESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def parse_tags(text: str) -> dict[str, str]:
    """`a=1;b;+c=x\\sy` (without the `@`) -> {"a": "1", "b": "", "+c": "x y"}.

    A key given twice keeps its last value; an empty key is skipped.
    """
    tags: dict[str, str] = {}
    for item in text.split(";"):
        key, _, value = item.partition("=")
        if key:
            tags[key] = unescape_value(value)
    return tags


def tag_prefix(tags: Iterable[tuple[str, str | None]]) -> str:
    """`@k=v;k2 ` for the tags whose value is not None ("" for none at all)."""
    items = [k if v == "" else f"{k}={escape_value(v)}" for k, v in tags if v is not None]
    return "@" + ";".join(items) + " " if items else ""


def server_time(ts_ms: int) -> str:
    """Integer ms since the epoch -> `YYYY-MM-DDThh:mm:ss.sssZ`."""
    ts_ms = max(0, int(ts_ms))
    secs, ms = divmod(ts_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"


def parse_server_time(text: str) -> int | None:
    """`2026-12-04T12:00:00.000Z` -> ms since the epoch; None if it is not one."""
    m = _TS_RE.match(text)
    if m is None:
        return None
    try:
        base = time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    frac = (m.group(2) or "0").ljust(3, "0")[:3]
    return calendar.timegm(base) * 1000 + int(frac)


def room_msgid(room: str, seq: int, epoch: int | None = None) -> str:
    """`<epoch hex>-<seq>-<room>`: the room last, as it may hold `-`."""
    return f"{_hub_epoch if epoch is None else epoch:x}-{seq}-{room}"


def parse_room_msgid(msgid: str) -> tuple[str, int] | None:
    """A msgid this relay made -> (room, seq); None for any other string."""
    parts = msgid.split("-", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
        return None
    try:
        int(parts[0], 16)
    except ValueError:
        return None
    return parts[2], int(parts[1])


def whisper_msgid(sender: str, to: str, ts: int, text: str) -> str:
    """A whisper's id: the same for its sender's echo and its target."""
    crc = zlib.crc32(f"{sender}\0{to}\0{text}".encode("utf-8", "replace"))
    return f"p{int(ts):x}-{crc:08x}"
