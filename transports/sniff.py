"""Tell a new connection's dialect from its first bytes (PROTOCOL.md table).

Pure: the relay reads up to SNIFF_MAX_BYTES with a timeout and calls `sniff`
after every read. `None` means "those bytes are still a proper prefix of a
keyword, read more"; once SNIFF_TIMEOUT passes with no new byte, or the
client closes, the relay takes the dialect to be text (a person at `nc`
may type nothing until they see the greeting).

The rules keep one property the I/O side relies on: once `sniff(p)` names a
dialect, `sniff(p + anything)` names the same one, so reading more bytes can
never change an answer already given.
"""

from __future__ import annotations

from typing import Final

# Seconds of silence after which a connection is text (PROTOCOL.md: 300 ms).
SNIFF_TIMEOUT: Final = 0.3

# Keywords are matched case-sensitively, as clients send them (HTTP methods
# are case-sensitive; every IRC client we know sends upper case).
_KEYWORDS: Final[tuple[tuple[bytes, str], ...]] = (
    (b"GET ", "ws"),
    (b"CAP ", "irc"),
    (b"NICK ", "irc"),
    (b"PASS ", "irc"),
    (b"USER ", "irc"),
)

# The longest keyword ("NICK "): after this many bytes `sniff` always answers.
SNIFF_MAX_BYTES: Final = 5


def sniff(prefix: bytes) -> str | None:
    """Name the dialect of a connection that began with `prefix`.

    Args:
        prefix: every byte received so far (only the first SNIFF_MAX_BYTES
            matter; more are allowed and ignored).

    Returns:
        "native", "ws", "irc" or "text"; or None while `prefix` is empty or a
        proper prefix of a keyword, so one more byte may decide.
    """
    if not prefix:
        return None
    if prefix[0] == 0:
        return "native"
    undecided = False
    for keyword, dialect in _KEYWORDS:
        if prefix.startswith(keyword):
            return dialect
        if keyword.startswith(prefix):
            undecided = True
    return None if undecided else "text"
