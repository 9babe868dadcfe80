"""The supervisor's mDNS/DNS-SD advertiser: LAN clients find the relay by itself.

A relay that listens on a LAN address announces `_chat-relay._tcp` (the
record is drawn in transports/dnssd.py) and, when it stops, says goodbye
(the same records with TTL 0), so browsers drop it at once instead of
after the records expire. A loopback-only relay never advertises: nobody
who could see the announcement could reach it.

Advertising is a courtesy, never a condition: registration (probing for
a unique name takes ~1.7 s) runs in a daemon thread after the relay is
ready, and any zeroconf failure is one log line while the relay goes on.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from transports.dnssd import SERVICE_TYPE, build_txt, instance_name, server_name

log = logging.getLogger("chat_relay.mdns")

STOP_WAIT = 3.0  # seconds close() waits for the goodbye before it lets the thread go


def is_loopback(host: str) -> bool:
    """Whether `host` (a numeric address) reaches only this machine."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _usable(address: str) -> bool:
    """An address a LAN peer can connect to without a scope id."""
    ip = ipaddress.ip_address(address)
    return not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified)


def interface_addresses(ipv6: bool) -> list[str]:
    """This host's (this namespace's) addresses a LAN peer could use, IPv4 first."""
    import ifaddr

    v4: list[str] = []
    v6: list[str] = []
    for adapter in ifaddr.get_adapters():
        for entry in adapter.ips:
            if isinstance(entry.ip, str):
                v4.append(entry.ip)
            elif ipv6:
                v6.append(entry.ip[0].split("%", 1)[0])
    return [a for a in dict.fromkeys(v4 + v6) if _usable(a)]


def advertised_addresses(host: str) -> list[str]:
    """The addresses to announce for a relay bound to `host`: none for loopback,
    every LAN address of the host for a wildcard, else `host` itself."""
    if is_loopback(host):
        return []
    if host in ("0.0.0.0", ""):
        return interface_addresses(ipv6=False)
    if host == "::":
        return interface_addresses(ipv6=True)
    return [host] if _usable(host) else []


@dataclass(frozen=True, slots=True)
class Advert:
    """Everything announced for one relay."""

    name: str                 # the instance: "chat-relay on HOST (PORT)"
    server: str               # its own mDNS host name
    port: int
    addresses: tuple[str, ...]
    txt: dict[str, str]


def plan(bound_host: str, port: int, version: str, tls: bool, password: bool,
         dialects: Iterable[str], hostname: str | None = None) -> Advert | None:
    """What a relay listening on `bound_host:port` announces; None where it must not."""
    addresses = advertised_addresses(bound_host)
    if not addresses:
        return None
    hostname = hostname or socket.gethostname()
    return Advert(instance_name(hostname, port), server_name(hostname, port), port,
                  tuple(addresses), build_txt(version, tls, password, dialects))


class Advertiser:
    """Announces one Advert from a daemon thread until `close()` says goodbye."""

    def __init__(self, advert: Advert) -> None:
        self.advert = advert
        self.registered_as: str | None = None  # the name that won probing, once it has
        self.failed = False
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chat-relay-mdns", daemon=True)

    def start(self) -> Advertiser:
        self._thread.start()
        return self

    def _run(self) -> None:
        zc: Any = None
        info: Any = None
        try:
            from zeroconf import ServiceInfo, Zeroconf

            a = self.advert
            zc = Zeroconf(interfaces=list(a.addresses))
            info = ServiceInfo(SERVICE_TYPE, f"{a.name}.{SERVICE_TYPE}", port=a.port,
                               properties=a.txt, server=a.server,
                               parsed_addresses=list(a.addresses))
            zc.register_service(info, allow_name_change=True)
            self.registered_as = info.name.removesuffix(f".{SERVICE_TYPE}")
            log.info("mDNS: advertised as %r on %s", self.registered_as,
                     ", ".join(a.addresses))
            self._stop.wait()
            zc.unregister_service(info)  # the goodbye: browsers forget us now
        except Exception as exc:  # zeroconf, sockets, a missing package: never the relay's end
            self.failed = True
            log.warning("mDNS: cannot advertise the relay on the LAN (%s: %s); clients "
                        "must be given its address", type(exc).__name__, exc)
        finally:
            if zc is not None:
                try:
                    zc.close()
                except Exception as exc:
                    log.debug("mDNS: close failed: %s", exc)
            self._done.set()

    def close(self, timeout: float = STOP_WAIT) -> None:
        """Withdraw the announcement (bounded: a stuck zeroconf never holds up a stop)."""
        self._stop.set()
        if self._thread.is_alive():
            self._done.wait(timeout)
