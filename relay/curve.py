"""CURVE on a TCP bus: key files, server and client sockets, ZAP, handshake logs.

A bus that leaves the host is encrypted and authenticated, always. The key
directory made by `chat-relay keys generate DIR` holds two key pairs in
pyzmq's certificate format (zmq.auth):

    hub.key   hub.key_secret     the hub's pair; nodes need hub.key only
    node.key  node.key_secret    the pair every relay host (node) presents

The hub is the CURVE server on its XPUB socket and lets in only the public
keys found in DIR, minus its own: node.key, plus any `*.key` file an admin
drops there (one pair per host, if one shared pair is not wanted). Workers
and the supervisor are CURVE clients with the node pair and the hub's key.

A node with the wrong keys is not "just silent": libzmq drops it during the
handshake, and a socket monitor turns that into one clear log line (rate
limited, since libzmq retries every few hundred milliseconds).

ipc buses do not come here: they live in a 0700 directory of their owner.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import parse_monitor_message

log = logging.getLogger("chat_relay.curve")

DOMAIN = "chat-relay"          # ZAP domain; the authenticator serves only this one
HUB = "hub"
NODE = "node"
HEARTBEAT_IVL_MS = 1000        # ZMTP pings on TCP: a dead peer is noticed ...
HEARTBEAT_TIMEOUT_MS = 5000    # ... after this long, and its queue is dropped
CONNECT_TIMEOUT_MS = 2000      # a connect attempt into a dead network gives up after this
LOG_REPEAT = 30.0              # seconds before the same handshake complaint is logged again


class KeyFileError(Exception):
    """The key directory is missing, incomplete or unreadable (the operator's fault)."""


def is_tcp(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


def bus_problem(endpoint: str, keys_dir: str, role: str) -> str:
    """Why a bus on `endpoint` may not start with `keys_dir` (role "hub" or "node"), or ""."""
    if not is_tcp(endpoint):
        return ""
    if not keys_dir:
        return (f"a bus on {endpoint} crosses the network and must be encrypted: "
                f"add --keys DIR (make one with `chat-relay keys generate DIR`)")
    try:
        load(keys_dir, role)
    except KeyFileError as exc:
        return str(exc)
    return ""


# Key files -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keys:
    public: bytes        # z85, this side's public key
    secret: bytes        # z85, this side's secret key
    hub_public: bytes    # z85, the hub's public key (equals `public` on the hub)


def generate(keys_dir: str | os.PathLike[str]) -> list[Path]:
    """Create both key pairs in `keys_dir` (0700); secrets 0600. Refuses to overwrite."""
    path = Path(keys_dir)
    existing = [path / f"{n}{s}" for n in (HUB, NODE) for s in (".key", ".key_secret")]
    clash = [p for p in existing if p.exists()]
    if clash:
        raise KeyFileError(f"{clash[0]} already exists; refusing to overwrite keys "
                        f"(remove them first, or pick another directory)")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    old = os.umask(0o077)  # no window in which a secret file is readable by others
    try:
        for name in (HUB, NODE):
            public, secret = zmq.auth.create_certificates(str(path), name)
            os.chmod(secret, 0o600)
            os.chmod(public, 0o644)
    finally:
        os.umask(old)
    return existing


def _read(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise KeyFileError(f"{path} is missing (made by `chat-relay keys generate DIR`)")
    try:
        public, secret_key = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path} is not a CURVE key file: {exc}") from None
    if secret and not secret_key:
        raise KeyFileError(f"{path} holds no secret key")
    if secret and path.stat().st_mode & 0o077:
        log.warning("%s is readable by others (mode %o); chmod 600 it",
                    path, path.stat().st_mode & 0o777)
    return public, secret_key


def load(keys_dir: str, role: str) -> Keys:
    """The key pair for `role` ("hub" or "node") and the hub's public key.

    Raises:
        KeyFileError: a file is missing or malformed; the message names it.
    """
    path = Path(keys_dir)
    if not path.is_dir():
        raise KeyFileError(f"key directory {path} does not exist")
    hub_public, _ = _read(path / f"{HUB}.key", secret=False)
    public, secret = _read(path / f"{role}.key_secret", secret=True)
    assert secret is not None
    return Keys(public, secret, hub_public)


def allowed_nodes(keys_dir: str) -> dict[bytes, bool]:
    """Every public key in the directory except the hub's own: the nodes let in."""
    hub = load(keys_dir, HUB).public
    certs = zmq.auth.load_certificates(keys_dir)
    return {key: True for key in certs if key != hub}


# Sockets ---------------------------------------------------------------------


def _heartbeats(sock: zmq.Socket[Any]) -> None:
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)
    # A SYN lost while the link was down would otherwise wait out the kernel's
    # backoff (up to minutes); retry the connect instead, every few seconds.
    sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)


def start_authenticator(ctx: zmq.Context[Any], keys_dir: str) -> ThreadAuthenticator:
    """Run ZAP in a thread of `ctx`, allowing only the node keys. Stop it before ctx.term()."""
    nodes = allowed_nodes(keys_dir)
    if not nodes:
        raise KeyFileError(f"{keys_dir} holds no node public key (node.key): no node could join")
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("chat_relay.zap"))
    auth.start()
    auth.configure_curve(domain=DOMAIN, location=keys_dir)
    auth.certs[DOMAIN] = nodes  # the same files, minus the hub's own public key
    return auth


def make_server(sock: zmq.Socket[Any], keys_dir: str) -> None:
    """Make `sock` (the hub's XPUB) a CURVE server; call before bind()."""
    keys = load(keys_dir, HUB)
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret
    sock.curve_server = True
    sock.zap_domain = DOMAIN.encode()
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP handler answering: nobody gets in
    _heartbeats(sock)


def make_client(sock: zmq.Socket[Any], keys_dir: str) -> None:
    """Make `sock` a CURVE client with the node pair and the hub's key; call before connect()."""
    keys = load(keys_dir, NODE)
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret
    sock.curve_serverkey = keys.hub_public
    _heartbeats(sock)


# Handshake monitor -----------------------------------------------------------

_MISMATCH = getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", 0x11000002)


def explain(event: int, value: int, endpoint: str, side: str) -> str:
    """One sentence for a handshake failure; `side` is "hub" or "node"."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        if side == "node":
            return (f"the hub at {endpoint} refused this node's key (ZAP status {value}): "
                    f"node.key is not among the hub's allowed keys; copy node.key and "
                    f"node.key_secret from the hub's key directory")
        return (f"refused a node on {endpoint}: its public key is not in the key "
                f"directory (ZAP status {value})")
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == _MISMATCH:
        return (f"security mechanism mismatch on {endpoint}: one side does not use CURVE "
                f"(start both with --keys)")
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if side == "hub":
            return (f"a node's CURVE handshake on {endpoint} failed (protocol error "
                    f"{value:#x}): it was given a different hub.key")
        return f"CURVE handshake with the hub at {endpoint} failed (protocol error {value:#x})"
    if side == "node":
        return (f"CURVE handshake with the hub at {endpoint} failed: the hub could not "
                f"decrypt it, so this node's hub.key is not that hub's public key "
                f"(copy hub.key from the hub's key directory)")
    return f"a node's handshake on {endpoint} failed (event {event}, value {value})"


FAILURES = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_EVENTS = (FAILURES | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
           | zmq.EVENT_MONITOR_STOPPED)


def watch_handshakes(sock: zmq.Socket[Any], side: str) -> threading.Thread:
    """Log handshake failures of `sock` (and recovery) from a daemon thread.

    Call from the thread that owns `sock`: zmq_socket_monitor is an operation
    on it. The watcher makes its own PAIR socket in its own thread and ends
    when `sock` closes (MONITOR_STOPPED) or the context terminates.
    """
    addr = f"inproc://chat-relay-monitor-{os.getpid()}-{id(sock)}-{time.monotonic_ns()}"
    sock.monitor(addr, _EVENTS)
    ctx = sock.context
    thread = threading.Thread(target=_watch, args=(ctx, addr, side), name="bus-monitor",
                              daemon=True)
    thread.start()
    return thread


def _watch(ctx: zmq.Context[Any], addr: str, side: str) -> None:
    pair: zmq.Socket[bytes] = ctx.socket(zmq.PAIR)
    pair.linger = 0
    last: dict[str, float] = {}
    failing = connected = False
    try:
        pair.connect(addr)
        while True:
            if not pair.poll(1000):
                continue
            msg = parse_monitor_message(pair.recv_multipart())
            event, value = int(msg["event"]), int(msg["value"])
            endpoint = msg["endpoint"].decode(errors="replace")
            if event == zmq.EVENT_MONITOR_STOPPED:
                return
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                if failing or side == "node":
                    log.info("bus handshake with %s succeeded (CURVE)", endpoint)
                failing = False
                connected = side == "node"
                last.clear()
                continue
            if event == zmq.EVENT_DISCONNECTED:
                if connected:  # a node's link to its hub: worth a line; the hub has many
                    log.warning("lost the bus connection to the hub at %s; reconnecting",
                                endpoint)
                connected = False
                continue
            failing = True
            text = explain(event, value, endpoint, side)
            now = time.monotonic()
            if now - last.get(text, -LOG_REPEAT) >= LOG_REPEAT:
                last[text] = now
                log.error("%s", text)
    except zmq.ContextTerminated:
        pass
    finally:
        pair.close(linger=0)
