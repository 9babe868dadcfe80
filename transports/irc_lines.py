"""IRC message syntax (RFC 2812 section 2.3): parsing one line, building lines.

Kept apart from the codec so the grammar can be tested on its own. Nothing
here knows about rooms or the relay; it only turns text into
`command + params` and back, and keeps every line we build within the
RFC's 512 bytes (CR LF included) and free of CR, LF and NUL, which would
otherwise let one user's text inject commands into another user's client.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from transports.ircv3_tags import MAX_CLIENT_TAGS, parse_tags

SERVER_NAME: Final = "chat-relay"
HOST: Final = "relay"
MAX_LINE: Final = 512  # RFC 2812 2.3, CR LF included

_UNSAFE = re.compile(r"[\r\n\0]")
_NEWLINES = re.compile(r"\r\n|[\r\n]")


@dataclass(frozen=True, slots=True)
class IrcMessage:
    """One parsed line: upper-cased command, its params (trailing last), its
    IRCv3 tags (unescaped; empty when the line had none)."""

    command: str
    params: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict, compare=False)


def parse_line(line: str) -> IrcMessage | None:
    """Parse one line without its line ending; None for a line with no command.

    A client-sent prefix (`:...`) is dropped: the relay knows who the client
    is. Message tags (`@...`) are kept, unescaped, up to MAX_CLIENT_TAGS bytes
    (a longer tag section is dropped whole: the line still counts).
    """
    rest = line.lstrip(" ")
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        raw, _, rest = rest.partition(" ")
        if len(raw) - 1 <= MAX_CLIENT_TAGS:
            tags = parse_tags(raw[1:])
        rest = rest.lstrip(" ")
    if rest.startswith(":"):
        rest = rest.partition(" ")[2].lstrip(" ")
    head, sep, trailing = rest.partition(" :")
    parts = head.split(" ")
    params = [p for p in parts[1:] if p]
    if sep:
        params.append(trailing)
    command = parts[0].upper()
    if not command:
        return None
    return IrcMessage(command, tuple(params), tags)


def clean(text: str) -> str:
    """Text without CR, LF or NUL, safe to put in one line."""
    return _UNSAFE.sub(" ", text)


def user_prefix(nick: str) -> str:
    return f"{nick}!{nick}@{HOST}"


def build(
    source: str, command: str, params: Sequence[str] = (), trailing: str | None = None
) -> str:
    """One line with CR LF; `trailing` is always sent after ' :' (it may hold spaces)."""
    parts = [f":{source}", command]
    parts.extend(clean(p).replace(" ", "_") or "*" for p in params)
    if trailing is not None:
        parts.append(":" + clean(trailing))
    return " ".join(parts) + "\r\n"


def split_utf8(text: str, budget: int) -> Iterator[str]:
    """Pieces of `text` of at most `budget` UTF-8 bytes, cut at character boundaries.

    A cut prefers the last space in the final quarter of the piece so words
    survive where they can.
    """
    data = text.encode("utf-8", "replace")
    budget = max(budget, 8)
    while data:
        if len(data) <= budget:
            yield data.decode("utf-8", "replace")
            return
        cut = budget
        while cut > 0 and (data[cut] & 0xC0) == 0x80:  # inside a multi-byte char
            cut -= 1
        space = data.rfind(b" ", cut - cut // 4, cut)
        if space > 0:
            cut = space + 1
        yield data[:cut].decode("utf-8", "replace")
        data = data[cut:]


def text_lines(
    source: str, command: str, target: str, text: str, ctcp: str | None = None
) -> str:
    """`command target :text` lines for a chat text: one per line of the text,
    each split to fit 512 bytes. Empty lines are dropped (IRC cannot send them).
    With `ctcp` (ACTION), each piece is wrapped as `\x01ACTION piece\x01`.
    """
    head = f":{source} {command} {clean(target)} :"
    opener, closer = (f"\x01{ctcp} ", "\x01") if ctcp else ("", "")
    budget = MAX_LINE - 2 - len(head.encode()) - len(opener) - len(closer)
    out: list[str] = []
    for line in _NEWLINES.split(text.replace("\0", "")):
        if not line:
            continue
        for piece in split_utf8(line, budget):
            out.append(f"{head}{opener}{piece}{closer}\r\n")
    return "".join(out)


def word_lines(prefix: str, words: Sequence[str], budget_line: int = MAX_LINE) -> list[str]:
    """`prefix` + space-joined words, as many lines as needed to stay within a line."""
    budget = budget_line - 2 - len(prefix.encode())
    lines: list[str] = []
    current: list[str] = []
    size = 0
    for word in words:
        n = len(word.encode()) + (1 if current else 0)
        if current and size + n > budget:
            lines.append(prefix + " ".join(current) + "\r\n")
            current, size = [], 0
            n = len(word.encode())
        current.append(word)
        size += n
    if current or not lines:
        lines.append(prefix + " ".join(current) + "\r\n")
    return lines


def decode_line(raw: bytes) -> str:
    """UTF-8, or Latin-1 for the old clients that still send it (never fails)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
