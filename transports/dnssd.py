"""How a relay describes itself on the LAN (DNS-SD over mDNS), without any I/O.

A relay bound to a LAN address advertises one service instance of type
`_chat-relay._tcp`; its SRV record gives the host and port, its TXT record
the facts a client needs before it connects (RFC 6763 key=value strings):

    txtvers=1  version=0.1.0  proto=1  tls=yes|no  password=yes|no
    dialects=native,text,ws,irc

The relay builds the record (`build_txt`) and clients parse it
(`parse_txt`). Whatever arrives over multicast comes from anyone on the
LAN: parsing never raises, unknown keys are ignored, a missing or garbled
flag is "unknown" (None), and every string is bounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SERVICE_TYPE = "_chat-relay._tcp.local."
TXT_VERSION = "1"
PROTOCOL_VERSION = 1

MAX_LABEL = 63        # bytes in one DNS label: an instance name must fit
MAX_VERSION = 32      # characters of a version string kept from a TXT record
MAX_DIALECTS = 8      # dialect names kept from a TXT record ...
MAX_DIALECT = 16      # ... each of at most this many characters

_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


@dataclass(frozen=True, slots=True)
class RelayTxt:
    """What a relay's TXT record says; None where it says nothing usable."""

    version: str = ""
    proto: int | None = None
    tls: bool | None = None
    password: bool | None = None
    dialects: tuple[str, ...] = ()


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def build_txt(version: str, tls: bool, password: bool, dialects: Iterable[str]) -> dict[str, str]:
    """The TXT record of a relay, key -> value, in the order it is sent."""
    return {
        "txtvers": TXT_VERSION,
        "version": version,
        "proto": str(PROTOCOL_VERSION),
        "tls": _yes_no(tls),
        "password": _yes_no(password),
        "dialects": ",".join(dialects),
    }


def _text(value: bytes | str | None, limit: int) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value[: limit * 4].decode("utf-8", errors="replace")
    return value[:limit]


def _flag(value: str) -> bool | None:
    return {"yes": True, "no": False}.get(value.strip().lower())


def parse_txt(properties: Mapping[bytes, bytes | None] | Mapping[str, str | None]) -> RelayTxt:
    """A TXT record as zeroconf hands it over (bytes or str keys); never raises.

    Keys compare case-insensitively (RFC 6763, 6.4); a key without a value
    (None) counts as absent.
    """
    fields: dict[str, str] = {}
    for key, value in properties.items():
        name = _text(key, 16).lower()
        if value is not None and name not in fields:  # RFC 6763: the first one counts
            fields[name] = _text(value, 256)
    proto = fields.get("proto", "")
    dialects = [d.strip()[:MAX_DIALECT] for d in fields.get("dialects", "").split(",")]
    return RelayTxt(
        version=fields.get("version", "")[:MAX_VERSION],
        proto=int(proto) if proto.isascii() and proto.isdigit() and len(proto) < 6 else None,
        tls=_flag(fields.get("tls", "")),
        password=_flag(fields.get("password", "")),
        dialects=tuple(d for d in dialects if d)[:MAX_DIALECTS],
    )


def host_label(hostname: str) -> str:
    """The first label of a host name, with only letters, digits and dashes."""
    first = hostname.split(".", 1)[0]
    return _HOST_UNSAFE.sub("-", first).strip("-") or "host"


def instance_name(hostname: str, port: int) -> str:
    """`chat-relay on HOST (PORT)`, with HOST cut so the whole fits one DNS label."""
    suffix = f" ({port})"
    room = MAX_LABEL - len("chat-relay on ") - len(suffix)
    return f"chat-relay on {host_label(hostname)[:room]}{suffix}"


def server_name(hostname: str, port: int) -> str:
    """The relay's own mDNS host name: unique per host and port, so that the
    address records of two relays (say, two network namespaces with one
    hostname) never merge into one."""
    label = host_label(hostname)[: MAX_LABEL - len("chat-relay--65535")]
    return f"chat-relay-{label}-{port}.local."
