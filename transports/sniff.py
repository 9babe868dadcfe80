"""Tell a new connection's dialect from its first bytes (PROTOCOL.md table).

Pure: the relay reads up to SNIFF_MAX_BYTES with a timeout and calls `sniff`
after every read. `None` means "those bytes are still a proper prefix of a
keyword, read more"; once SNIFF_TIMEOUT passes with no new byte, or the
client closes, the relay takes the dialect to be text (a person at `nc`
may type nothing until they see the greeting).

A TLS ClientHello (a handshake record, 0x16 0x03) is named "tls": a relay
without TLS closes such a connection at once instead of taking a TLS client
for a person typing binary. `looks_like_text` tells whether the first bytes
of a text connection are text at all.

The rules keep one property the I/O side relies on: once `sniff(p)` names a
dialect, `sniff(p + anything)` names the same one, so reading more bytes can
never change an answer already given.
"""

from __future__ import annotations

import re
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

# A TLS record header: content type 22 (handshake), then major version 3.
TLS_HELLO: Final = b"\x16\x03"

# Telnet commands: IAC WILL/WONT/DO/DONT option, IAC SB ... IAC SE, IAC x.
_TELNET: Final = re.compile(rb"\xff[\xfb-\xfe].|\xff\xfa.*?(?:\xff\xf0|$)|\xff.?", re.S)

# C0 control bytes a person's text never holds (tab, LF, VT, FF, CR and ESC,
# which terminals send for arrow keys, are allowed).
_CONTROL: Final = frozenset(range(0x20)) - {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1B}


def sniff(prefix: bytes) -> str | None:
    """Name the dialect of a connection that began with `prefix`.

    Args:
        prefix: every byte received so far (only the first SNIFF_MAX_BYTES
            matter; more are allowed and ignored).

    Returns:
        "native", "ws", "irc", "tls" or "text"; or None while `prefix` is
        empty or a proper prefix of a keyword, so one more byte may decide.
    """
    if not prefix:
        return None
    if prefix[0] == 0:
        return "native"
    if prefix[0] == TLS_HELLO[0]:
        if len(prefix) < len(TLS_HELLO):
            return None
        return "tls" if prefix.startswith(TLS_HELLO) else "text"
    undecided = False
    for keyword, dialect in _KEYWORDS:
        if prefix.startswith(keyword):
            return dialect
        if keyword.startswith(prefix):
            undecided = True
    return None if undecided else "text"


def looks_like_text(prefix: bytes) -> bool:
    """True if `prefix` can begin a person's text: UTF-8 without control bytes.

    Telnet option negotiation (IAC ...), which some telnet clients send
    first, is not held against it.

    A multi-byte character cut off at the end of `prefix` is allowed (its
    rest may be in the next read).
    """
    prefix = _TELNET.sub(b"", prefix)
    if any(b in _CONTROL for b in prefix):
        return False
    try:
        prefix.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Only a sequence truncated by the end of `prefix` may still be text.
        return exc.end == len(prefix) and exc.reason == "unexpected end of data"
    return True
