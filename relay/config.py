"""Every bound and setting of a relay, with its default, in one place.

Each field is a `chat-relay start` flag (dashes for underscores). Defaults
follow PROTOCOL.md and the numbers trusted servers use (Redis, NATS, IRC).

Settings reach the hub and worker processes as JSON through an inherited
file descriptor (`write_fd` / `read_fd`), never on their command line, which
every local user can read in `ps`; the secrets are kept out of `repr()` so
no log line shows them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace

# Environment variables that set a secret (env name -> Settings field). They
# rank above the config file and below the flags, and children never inherit them.
SECRET_ENV = {"CHAT_RELAY_PASSWORD": "password", "CHAT_RELAY_OPER_PASSWORD": "oper_password",
              "CHAT_RELAY_ENGINE_PASSWORD": "engine_password"}


def redacted(url: str) -> str:
    """`url` without its password (for the banner, the logs and the workers' copy).

    Read by hand, not by urlsplit: a cluster URL lists several HOST:PORTs.
    """
    scheme, sep, rest = url.partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0),
              default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    creds, at, hosts = netloc.rpartition("@")
    user, colon, _password = creds.partition(":")
    if not sep or not at or not colon:
        return url
    return f"{scheme}://{user + ':' if user else ''}***@{hosts}{tail}"


def default_workers() -> int:
    return os.cpu_count() or 1


@dataclass(slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8081
    workers: int = field(default_factory=default_workers)
    log_level: str = "INFO"
    # Bus: empty hub means "start our own hub on a private ipc endpoint".
    hub: str = ""
    # Engine: empty = the hub's memory; redis://HOST:PORT[/DB], rediss://, or
    # redis+cluster://H1:P1,H2:P2,... (rediss+cluster://) = shared state in Redis, so many
    # hosts each run their own hub with no single point of failure.
    engine: str = ""
    engine_password: str = field(default="", repr=False)  # or in the URL; never in argv
    # Limits (each has a flag and a test at its bound).
    max_frame: int = 65536            # native frame body bytes
    max_text: int = 4096              # text bytes per message / line
    max_fragments: int = 1024         # WebSocket frames one message may come in
    max_pending: int = 64             # IRC NAMES/WHO/LIST awaiting the relay's answer
    allowed_origins: str = ""         # browser origins /ws admits besides the page's own
    max_outbox: int = 1024 * 1024     # bytes queued for one client before slow_consumer
    sndbuf: int = 262144              # kernel send buffer per client; 0 = kernel autotuning
    history: int = 1000               # messages kept per room
    history_bytes: int = 128 * 1024 * 1024  # history kept in all rooms together (bytes)
    max_rooms: int = 10000            # rooms the hub holds at once
    max_rooms_per_client: int = 100   # rooms one client may be in
    room_ttl: float = 3600.0          # seconds an empty, silent room is kept
    join_replay: int = 20             # latest messages shown to a fresh joiner; 0 = off
    join_replay_rooms: int = 10       # rooms of one hello that get a join replay
    presence_limit: int = 500         # members past which joins/parts are not announced
    presence_interval: float = 0.2    # seconds a room's presence events are gathered
    rate_limit: float = 20.0          # messages/s per client; 0 = off
    rate_burst: int = 40
    flood_window: float = 10.0        # seconds of flooding (10x --rate-limit) before a cut
    max_errors: int = 100             # errors per connection per 10 s before it is closed
    max_connections: int = 10000      # per relay process group (split across workers)
    max_per_ip: int = 256
    hello_timeout: float = 10.0
    max_handshakes: int = 1024        # connections not yet past hello (split across workers)
    tls_handshake_timeout: float = 5.0  # seconds from accept to a finished TLS handshake
    ping_interval: float = 60.0
    slow_consumer_grace: float = 0.5  # seconds the slow_consumer error may take to leave
    shutdown_grace: float = 3.0       # seconds to flush outboxes on SIGTERM
    bus_hwm: int = 100000             # zmq high-water marks on every bus socket
    max_linger: float = 0.02          # seconds a loaded worker may hold output to batch it
    max_inflight: int = 2000          # requests a worker has on their way through the hub
    max_pause: float = 0.5            # seconds fan-out waits for members that are behind
    password: str = field(default="", repr=False)
    # Security and operations.
    tls_cert: str = ""                # PEM certificate: TLS 1.2+ for every dialect
    tls_key: str = ""
    keys: str = ""                    # CURVE key directory (chat-relay keys generate)
    history_db: str = ""              # SQLite file: history, seq and epoch survive restarts
    metrics: str = ""                 # HOST:PORT for Prometheus text metrics
    log_format: str = "text"          # text or json
    mdns: bool = True                 # advertise on the LAN (DNS-SD); --no-mdns turns it off
    oper_password: str = field(default="", repr=False)  # lets a client /kick, /ban, /mute
    # Password guessing: per connection (worker) and per address (hub, relay-wide).
    auth_tries: int = 3               # wrong passwords on one connection before it is closed
    auth_delay: float = 0.5           # seconds before answering a wrong password; doubles
    auth_failures: int = 5            # failed passwords from one IP (IPv6: its /64) ...
    auth_window: float = 60.0         # ... within this many seconds block it ...
    auth_block: float = 60.0          # ... for this many seconds, on every worker
    auth_table: int = 10000           # addresses the hub keeps failure counts (and blocks) for

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        return cls(**json.loads(text))

    def without_secrets(self) -> Settings:
        """A copy for a process that checks no password (the hub): least privilege."""
        return replace(self, password="", oper_password="")

    def for_workers(self) -> Settings:
        """A copy for the workers: they never talk to the engine, so no engine secret."""
        return replace(self, engine=redacted(self.engine) if self.engine else "",
                       engine_password="")

    def write_fd(self) -> int:
        """These settings in an anonymous in-memory file; returns its fd for `pass_fds`.

        The caller closes the fd once the child has started. A memfd (or an
        unlinked 0600 temp file where there is none) never blocks the writer,
        whatever the size, unlike a pipe nobody reads yet.
        """
        data = self.to_json().encode("utf-8")
        memfd = getattr(os, "memfd_create", None)
        if memfd is not None:
            fd = int(memfd("chat-relay-settings", os.MFD_CLOEXEC))
        else:  # pragma: no cover - Linux always has memfd_create
            import tempfile

            with tempfile.TemporaryFile() as f:
                fd = os.dup(f.fileno())
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    @classmethod
    def read_fd(cls, fd: int) -> Settings:
        """The settings a parent wrote with `write_fd`; closes `fd`."""
        with os.fdopen(fd, "rb") as f:
            return cls.from_json(f.read().decode("utf-8"))
