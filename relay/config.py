"""Every bound and setting of a relay, with its default, in one place.

Each field is a `chat-relay start` flag (dashes for underscores). Defaults
follow PROTOCOL.md and the numbers trusted servers use (Redis, NATS, IRC).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field


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
    # Limits (each has a flag and a test at its bound).
    max_frame: int = 65536            # native frame body bytes
    max_text: int = 4096              # text bytes per message / line
    max_outbox: int = 1024 * 1024     # bytes queued for one client before slow_consumer
    sndbuf: int = 262144              # kernel send buffer per client; 0 = kernel autotuning
    history: int = 1000               # messages kept per room
    rate_limit: float = 20.0          # messages/s per client; 0 = off
    rate_burst: int = 40
    max_errors: int = 100             # errors per connection per 10 s before it is closed
    max_connections: int = 10000      # per relay process group (split across workers)
    max_per_ip: int = 256
    hello_timeout: float = 10.0
    ping_interval: float = 60.0
    slow_consumer_grace: float = 0.5  # seconds the slow_consumer error may take to leave
    shutdown_grace: float = 3.0       # seconds to flush outboxes on SIGTERM
    bus_hwm: int = 100000             # zmq high-water marks on every bus socket
    max_linger: float = 0.02          # seconds a loaded worker may hold output to batch it
    password: str = ""
    # Security and operations.
    tls_cert: str = ""                # PEM certificate: TLS 1.2+ for every dialect
    tls_key: str = ""
    keys: str = ""                    # CURVE key directory (chat-relay keys generate)
    history_db: str = ""              # SQLite file: history, seq and epoch survive restarts
    metrics: str = ""                 # HOST:PORT for Prometheus text metrics
    log_format: str = "text"          # text or json
    oper_password: str = ""           # lets a client /kick, /ban, /mute

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        return cls(**json.loads(text))
