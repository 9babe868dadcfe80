"""Find relays on the LAN: browse `_chat-relay._tcp` over mDNS for a moment.

Used by `chat-client` (no HOST, or --discover) and `chat-bench --discover`.
Everything here comes from whoever answers on the LAN, so the list is
bounded (MAX_FOUND), names are printed through `clean()`, and a record that
does not resolve to an address and port is left out.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import threading
import time
from dataclasses import dataclass

from zeroconf import ServiceBrowser, ServiceInfo, ServiceListener, Zeroconf

from clients.render import clean
from transports.dnssd import SERVICE_TYPE, RelayTxt, parse_txt

BROWSE_SECONDS = 2.0
RESOLVE_SECONDS = 1.0  # after browsing: for all relays whose records did not come along
MAX_FOUND = 64         # relays listed at most (anyone on the LAN can announce many)

NONE_FOUND_HINT = ("no chat-relay found on the LAN; give HOST PORT instead (a relay is "
                   "advertised only when it listens on a LAN address, e.g. --host 0.0.0.0, "
                   "and not started with --no-mdns)")


class DiscoveryError(Exception):
    """Browsing could not start (no multicast-capable interface)."""


@dataclass(frozen=True, slots=True)
class Found:
    """One relay that answered: its instance name, where to connect, its TXT facts."""

    name: str
    host: str
    port: int
    addresses: tuple[str, ...]
    txt: RelayTxt

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def pick_address(addresses: list[str]) -> str | None:
    """The address to connect to: IPv4 first; never one needing a scope id."""
    usable = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if not (ip.is_link_local or ip.is_multicast or ip.is_unspecified):
            usable.append(ip)
    usable.sort(key=lambda ip: ip.version)
    return str(usable[0]) if usable else None


class _Names(ServiceListener):
    """Instance names seen by the browser (called from zeroconf's thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.names: dict[str, None] = {}

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        with self.lock:
            if len(self.names) < MAX_FOUND:
                self.names[name] = None

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.add_service(zc, type_, name)

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        with self.lock:
            self.names.pop(name, None)  # a goodbye: that relay is leaving

    def snapshot(self) -> list[str]:
        with self.lock:
            return list(self.names)


def _resolve(zc: Zeroconf, name: str, deadline: float) -> Found | None:
    info = ServiceInfo(SERVICE_TYPE, name)
    if not info.load_from_cache(zc):
        left_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
        if left_ms < 10 or not info.request(zc, left_ms):
            return None
    host = pick_address(info.parsed_addresses())
    if host is None or not info.port:
        return None
    label = name.removesuffix("." + SERVICE_TYPE)
    return Found(label, host, int(info.port), tuple(info.parsed_addresses()),
                 parse_txt(info.properties))


def browse(seconds: float = BROWSE_SECONDS) -> list[Found]:
    """The relays that answer within `seconds`, sorted by name.

    Raises:
        DiscoveryError: no interface to browse on (none but loopback, say).
    """
    try:
        zc = Zeroconf()
    except (OSError, RuntimeError) as exc:
        raise DiscoveryError(f"cannot browse the LAN: {exc}") from None
    try:
        names = _Names()
        browser = ServiceBrowser(zc, SERVICE_TYPE, names)
        time.sleep(seconds)
        browser.cancel()
        deadline = time.monotonic() + RESOLVE_SECONDS
        found = [f for n in names.snapshot() if (f := _resolve(zc, n, deadline)) is not None]
    finally:
        zc.close()
    return sorted(found, key=lambda f: (f.name.lower(), f.host, f.port))


def describe(found: Found) -> str:
    """`NAME  HOST:PORT  [tls] [password]`, safe to print."""
    tags = [t for t, on in (("[tls]", found.txt.tls), ("[password]", found.txt.password)) if on]
    return "  ".join([clean(found.name), found.where, *tags])


def listing(found: list[Found]) -> list[str]:
    """The numbered lines people choose from: `1) NAME  HOST:PORT  [tls] [password]`."""
    return [f"{i}) {describe(f)}" for i, f in enumerate(found, start=1)]


def choose(found: list[Found], answer: str) -> Found | None:
    """The relay the number in `answer` names, or None."""
    text = answer.strip()
    if not (text.isascii() and text.isdigit() and len(text) < 6):
        return None
    if not 1 <= int(text) <= len(found):
        return None
    return found[int(text) - 1]


# chat-client and chat-bench -------------------------------------------------

NO_HOST_IN_PIPE = ("give HOST PORT (e.g. chat-client 192.168.1.20 8081), or list the relays "
                   "on the LAN with --discover: with no terminal there is nobody to pick one")


def _browse_or_say_why(prog: str, seconds: float, after_error: str = "") -> list[Found]:
    """The relays found, or [] once stderr says why there are none."""
    try:
        found = browse(seconds)
    except DiscoveryError as exc:
        print(f"{prog}: {exc}{after_error}", file=sys.stderr)
        return []
    if not found:
        print(f"{prog}: {NONE_FOUND_HINT}", file=sys.stderr)
    return found


def print_discovered(prog: str, seconds: float = BROWSE_SECONDS) -> int:
    """`--discover`: the numbered list on stdout; exit status 0, or 1 when none answered."""
    found = _browse_or_say_why(prog, seconds)
    if not found:
        return 1
    for line in listing(found):
        print(line, flush=True)
    return 0


def _ask(found: list[Found]) -> Found | None:
    for line in listing(found):
        print(line)
    for _ in range(3):
        try:
            answer = input(f"join which relay (1-{len(found)})? ")
        except EOFError:
            return None
        chosen = choose(found, answer)
        if chosen is not None:
            return chosen
        print(f"type a number from 1 to {len(found)}")
    return None


def discover_or_pick(args: argparse.Namespace) -> int | None:
    """chat-client's `--discover`, or its no-HOST start: sets args.host/port/tls
    to the relay picked and returns None, or returns the exit status."""
    if args.discover:
        return print_discovered("chat-client")
    if not sys.stdin.isatty():
        print(f"chat-client: {NO_HOST_IN_PIPE}", file=sys.stderr)
        return 2
    print(f"looking for chat-relays on the LAN ({BROWSE_SECONDS:g} s)...", file=sys.stderr)
    found = _browse_or_say_why("chat-client", BROWSE_SECONDS, "; give HOST PORT instead")
    if not found:
        return 1
    if len(found) == 1:
        chosen: Found | None = found[0]
        print(f"found {describe(found[0])}: joining it", file=sys.stderr)
    else:
        chosen = _ask(found)
    if chosen is None:
        return 1
    args.host, args.port = chosen.host, chosen.port
    if chosen.txt.tls:
        args.tls = True  # the relay says it speaks TLS: plain would only be refused
    return None
