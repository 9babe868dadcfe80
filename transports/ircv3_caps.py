"""IRCv3 capability negotiation (version 302) and SASL PLAIN, sans-I/O.

What the relay offers and what each one changes (transports/irc.py acts on
the negotiated set):

- `server-time`, `message-tags`: `time=` and `msgid=` on every message;
- `batch`: chathistory pages and multi-line labeled answers in a BATCH;
- `echo-message`: a client's own PRIVMSG comes back (with its msgid);
- `draft/chathistory`: the CHATHISTORY command over the hub's history;
- `labeled-response`: `@label=` on the answer, `ACK` when there is none;
- `sasl=PLAIN`: the password of `AUTHENTICATE PLAIN` is the relay's
  `--password` (there are no accounts: the account is the nick);
- `multi-prefix`: accepted; the relay has no channel prefixes to list;
- `away-notify`: `AWAY` of the people one shares a room with.

`CAP REQ` is all or nothing, as the specification says: one unknown name
NAKs the whole request and changes nothing.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

CAPS: Final[dict[str, str]] = {
    "away-notify": "",
    "batch": "",
    "draft/chathistory": "",
    "echo-message": "",
    "labeled-response": "",
    "message-tags": "",
    "multi-prefix": "",
    "sasl": "PLAIN",
    "server-time": "",
}
# Caps that change how room traffic is encoded (the fan-out key).
FANOUT_CAPS: Final = frozenset({"server-time", "message-tags", "away-notify"})
SASL_CHUNK: Final = 400  # AUTHENTICATE payload bytes per line
SASL_MAX: Final = 4 * SASL_CHUNK  # base64 bytes of one PLAIN exchange we accept


def ls_value(version: int) -> str:
    """The `CAP LS` list: with values (`sasl=PLAIN`) for 302 clients only."""
    if version >= 302:
        return " ".join(f"{k}={v}" if v else k for k, v in CAPS.items())
    return " ".join(CAPS)


def request(asked: str, current: frozenset[str]) -> frozenset[str] | None:
    """The caps after `CAP REQ :asked`, or None to NAK (an unknown name, or nothing)."""
    enabled = set(current)
    words = asked.split()
    if not words:
        return None
    for word in words:
        remove = word.startswith("-")
        name = word[1:] if remove else word
        if name not in CAPS:
            return None
        if remove:
            enabled.discard(name)
        else:
            enabled.add(name)
    return frozenset(enabled)


class SaslPlain:
    """One SASL PLAIN exchange: collect base64 chunks, then decode them.

    `feed(arg)` returns None while more chunks are due, else the outcome:
    (authcid, password) on success, or an error string (for 904).
    """

    def __init__(self) -> None:
        self._chunks: list[str] = []
        self._size = 0

    def feed(self, arg: str) -> tuple[str, str] | str | None:
        if arg != "+":
            self._size += len(arg)
            if self._size > SASL_MAX:
                return f"SASL message over {SASL_MAX} bytes"
            self._chunks.append(arg)
            if len(arg) == SASL_CHUNK:
                return None  # a full chunk: more follow (or a lone "+")
        return decode_plain("".join(self._chunks))


def decode_plain(data: str) -> tuple[str, str] | str:
    """base64 of `authzid NUL authcid NUL password` -> (authcid, password)."""
    try:
        raw = base64.b64decode(data, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return "SASL PLAIN payload is not base64 of UTF-8"
    parts = raw.split("\0")
    if len(parts) != 3 or not parts[1]:
        return "SASL PLAIN wants authzid NUL authcid NUL password"
    return parts[1], parts[2]
