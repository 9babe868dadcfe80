"""Field rules from PROTOCOL.md, shared by every dialect so they cannot drift."""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from transports.errors import ProtocolError

NICK_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
ROOM_RE: Final = re.compile(r"[A-Za-z0-9_.#-]{1,64}")
DEFAULT_MAX_TEXT: Final = 4096
HISTORY_DEFAULT_LIMIT: Final = 100
HISTORY_MAX_LIMIT: Final = 500


def nick_key(nick: str) -> str:
    """Nicks are unique case-insensitively; this is the key they are compared by."""
    return nick.casefold()


def is_valid_nick(nick: object) -> bool:
    return isinstance(nick, str) and NICK_RE.fullmatch(nick) is not None


def is_valid_room(room: object) -> bool:
    return isinstance(room, str) and ROOM_RE.fullmatch(room) is not None


def check_nick(nick: object, ref: str | None = None) -> str:
    if not is_valid_nick(nick):
        raise ProtocolError(
            "nick_invalid",
            f"nick must be 1-32 characters of A-Z a-z 0-9 _ -, got {nick!r:.60}",
            ref,
        )
    assert isinstance(nick, str)
    return nick


def check_room(room: object, ref: str | None = None) -> str:
    if not is_valid_room(room):
        raise ProtocolError(
            "room_invalid",
            f"room must be 1-64 characters of A-Z a-z 0-9 _ . # -, got {room!r:.80}",
            ref,
        )
    assert isinstance(room, str)
    return room


def check_text(text: object, max_bytes: int, ref: str | None = None) -> str:
    if not isinstance(text, str):
        raise ProtocolError("bad_field", f"text must be a string, got {type(text).__name__}", ref)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ProtocolError(
            "bad_field", "text is not valid Unicode (lone surrogate)", ref
        ) from None
    if size == 0:
        raise ProtocolError("bad_field", "text must not be empty", ref)
    if size > max_bytes:
        raise ProtocolError(
            "text_too_long", f"text is {size} bytes, the limit is {max_bytes}", ref
        )
    return text


def ip_key(address: str) -> str | None:
    """An IP address in the one form bans compare by, or None if it is not one.

    IPv4-mapped IPv6 (a dual-stack listener's view of an IPv4 peer,
    "::ffff:10.0.0.7") becomes plain IPv4, so a ban matches either way.
    """
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
