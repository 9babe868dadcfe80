"""Field rules from PROTOCOL.md, shared by every dialect so they cannot drift."""

from __future__ import annotations

import ipaddress
import re
from itertools import accumulate, chain, compress, repeat
from operator import is_
from typing import Any, Final

from transports.errors import ProtocolError

NICK_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
ROOM_RE: Final = re.compile(r"[A-Za-z0-9_.#-]{1,64}")
DEFAULT_MAX_TEXT: Final = 4096
"""Bytes of a message's text (PROTOCOL.md; `--max-text` changes it)."""
HISTORY_DEFAULT_LIMIT: Final = 100
"""Messages in a history page when the client names no `limit` (PROTOCOL.md)."""
HISTORY_MAX_LIMIT: Final = 500
"""Most messages a history page may ask for (PROTOCOL.md): one page stays a
bounded reply however large the room's history is."""
MAX_HELLO_ROOMS: Final = 64
"""Rooms a hello may name in `rooms`, and again in `resume`: one hello is
one bounded amount of work for the hub."""
MAX_REASON: Final = 256
"""Bytes of a kick/ban/mute reason: a sentence, not a message."""
MAX_MINUTES: Final = 366 * 24 * 60
"""Longest timed ban or mute (a leap year); a sanction without minutes never expires."""

# Bounds on every integer and structure a client may send (issue 19). A value
# past them is refused where it is parsed, in every dialect, so nothing past
# them ever reaches the bus, the hub, history or another client: msgpack packs
# only integers that fit in 64 bits, its decoder stops at 1,024 levels of
# nesting, and a value that cannot be packed or unpacked on the bus kills a
# process.

SEQ_MAX: Final = 2**63 - 1
"""Largest seq a client may name (`after`, `resume` values). A room's seq is a
counter that starts at 1, so this is unreachable; it is the largest integer
that msgpack, SQLite and a signed 64-bit integer in any client language hold."""
ID_MAX_BYTES: Final = 64
"""An `id` string's UTF-8 size: room for a UUID or a counter with a prefix. The
relay echoes an id, so its size is the size of what a client makes it repeat."""
ID_INT_MIN: Final = -(2**63)
"""Smallest integer `id`: the signed 64-bit range, which every client language holds."""
ID_INT_MAX: Final = 2**63 - 1
"""Largest integer `id` (see ID_INT_MIN)."""
VERSION_MAX: Final = 2**16 - 1
"""Largest protocol version `v` a hello may name: newer clients are welcome (the
relay answers v1), but a version is a small number, not a free integer."""
MAX_DEPTH: Final = 32
"""How deep a body (native, WebSocket JSON or msgpack) may nest maps and lists,
the body itself being level 1. The deepest body PROTOCOL.md needs has 2 levels
(hello's resume map); a deeper body is refused with bad_frame before any field
is read, so a deep unknown value costs no more than decoding it."""
TEXT_MAX_DIGITS: Final = 19
"""Digits of a number typed in the text dialect (/history AFTER, /ban MINUTES):
2^63-1 has 19, so no typed number past the seq range is ever converted."""


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


def check_text(
    text: object, max_bytes: int, ref: str | None = None, key: str = "text"
) -> str:
    if not isinstance(text, str):
        raise ProtocolError("bad_field", f"{key} must be a string, got {type(text).__name__}", ref)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ProtocolError(
            "bad_field", f"{key} is not valid Unicode (lone surrogate)", ref
        ) from None
    if size == 0:
        raise ProtocolError("bad_field", "text must not be empty", ref)
    if size > max_bytes:
        raise ProtocolError(
            "text_too_long", f"{key} is {size} bytes, the limit is {max_bytes}", ref
        )
    return text


def _bound(n: int) -> str:
    """A bound as people read it: 2^63-1 rather than 19 digits."""
    named = {SEQ_MAX: "2^63-1", ID_INT_MIN: "-2^63"}
    return named.get(n, str(n))


def _shown(value: int) -> str:
    """An out-of-range integer for an error text, without printing 4,000 digits."""
    bits = value.bit_length()
    return str(value) if bits <= 64 else f"an integer of {bits} bits"


def check_int(value: object, key: str, low: int, high: int, ref: str | None = None) -> int:
    """`value` if it is an integer in [low, high], else bad_field naming `key` as given.

    A bool, a float (NaN and infinities included), bytes, an ext type or nil
    is not an integer: nothing is coerced, so what the relay acts on is what
    the client sent.
    """
    if type(value) is not int:  # bool is an int subclass; decoders give exact ints
        raise ProtocolError(
            "bad_field", f"{key} must be an integer, got {type(value).__name__}", ref
        )
    if not low <= value <= high:
        raise ProtocolError(
            "bad_field",
            f"{key} must be {_bound(low)} to {_bound(high)}, got {_shown(value)}",
            ref,
        )
    return value


def check_seq(value: object, key: str, ref: str | None = None) -> int:
    """A seq a client names (`after`, a `resume` value): 0 to SEQ_MAX."""
    return check_int(value, key, 0, SEQ_MAX, ref)


def check_id(value: object, ref: str | None = None) -> int | str:
    """A client's `id`: a string of at most ID_MAX_BYTES or a signed 64-bit integer."""
    if type(value) is int and ID_INT_MIN <= value <= ID_INT_MAX:
        return value
    if type(value) is str and len(value) <= ID_MAX_BYTES:  # more characters: more bytes
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate: no encoder takes it
            size = ID_MAX_BYTES + 1
        if size <= ID_MAX_BYTES:
            return value
    shown = _shown(value) if type(value) is int else type(value).__name__
    raise ProtocolError(
        "bad_field",
        f"'id' must be a string of at most {ID_MAX_BYTES} bytes or an integer -2^63 to "
        f"2^63-1, got {shown}",
        ref,
    )


_DECIMAL: Final = re.compile(rf"[0-9]{{1,{TEXT_MAX_DIGITS}}}")


def is_number(word: str) -> bool:
    """Whether a typed word is meant as a number (ASCII digits, any count)."""
    return word.isascii() and word.isdigit()


def parse_number(word: str, key: str, low: int, high: int, ref: str | None = None) -> int:
    """A number typed in a line dialect: at most TEXT_MAX_DIGITS ASCII digits, in range.

    The digit bound comes first, so a line of 4,000 digits is refused without
    being converted.
    """
    if _DECIMAL.fullmatch(word) is None:
        raise ProtocolError(
            "bad_field",
            f"{key} must be a number of at most {TEXT_MAX_DIGITS} digits, got "
            f"{len(word)} characters",
            ref,
        )
    return check_int(int(word), key, low, high, ref)


# Nesting depth -------------------------------------------------------------------

_CONTAINER_TYPES: Final = frozenset({list, dict})


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether a decoded body nests lists and maps more than `limit` levels deep.

    Level by level, without recursion. Every per-element step (type tests,
    gathering children) runs in C through map/compress/chain, so a 64 KiB body
    costs about as much again as decoding it, however it is shaped. Containers
    are the exact `list` and `dict` that msgpack and json decode to.
    """
    if type(value) is dict and limit >= 1 and _CONTAINER_TYPES.isdisjoint(
            map(type, value.values())):
        return False  # a map of scalars (every say) nests one level: no walk
    level: list[Any] = [value]
    kinds: list[type] = [type(value)]
    depth = 0
    while True:
        is_container = list(map(_CONTAINER_TYPES.__contains__, kinds))
        level = list(compress(level, is_container))
        if not level:
            return False
        depth += 1
        if depth > limit:
            return True
        kinds = list(compress(kinds, is_container))
        lists = compress(level, map(is_, kinds, repeat(list)))
        dicts = compress(level, map(is_, kinds, repeat(dict)))
        level = list(chain(chain.from_iterable(lists),
                           chain.from_iterable(map(dict.values, dicts))))
        kinds = list(map(type, level))


# A JSON string (strict JSON: what json.loads accepts), so brackets inside
# strings are not counted; possessive, so an unterminated one costs one pass.
_JSON_STRING: Final = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_JSON_BRACKET: Final = re.compile(r"[\[\]{}]")
_JSON_STEP: Final = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth_exceeds(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON text nests arrays and objects more than `limit` deep.

    Counted on the text before `json.loads` sees it: the decoder recurses
    once per level and raises RecursionError near 1,000 levels (sooner on a
    deep stack), so a deep body is refused before it is decoded at all.
    Text that is not JSON may be miscounted, but only where json.loads
    fails before reaching it.
    """
    brackets = _JSON_BRACKET.findall(_JSON_STRING.sub("", text))
    return max(accumulate(map(_JSON_STEP.__getitem__, brackets)), default=0) > limit


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


# Failed passwords count per address; IPv6 by its /64, so that rotating the
# addresses one host holds inside its /64 does not reset the count.
AUTH_IPV6_PREFIX: Final = 64


def auth_key(address: str) -> str | None:
    """The key failures from `address` are counted under, or None if it is no IP."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, AUTH_IPV6_PREFIX), strict=False))
    return str(ip)
