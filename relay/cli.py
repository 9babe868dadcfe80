"""`chat-relay`: start a relay (supervisor + hub + workers), or run one part of it.

Every Settings field is a flag of `start`, generated from the dataclass so a
new limit cannot be added without its flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

from relay import __version__
from relay.config import SECRET_ENV, Settings

HELP = {
    "host": "address to listen on (default 127.0.0.1: loopback only; 0.0.0.0 serves the LAN)",
    "port": "TCP port for every dialect (default 8081; 0 picks a free one)",
    "workers": "worker processes accepting clients (default: the CPU count)",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "engine": "keep the relay's state in Redis so many hosts share it, each with its own "
    "hub (redis://HOST:PORT[/DB] or rediss:// for TLS; a Redis Cluster: "
    "redis+cluster://HOST:PORT,HOST:PORT,... or rediss+cluster://); the password goes in "
    "$CHAT_RELAY_ENGINE_PASSWORD (or the URL), never on a child's command line",
    "engine_password": "the --engine's Redis password; a flag is visible to every local "
    "user (ps), so prefer $CHAT_RELAY_ENGINE_PASSWORD",
    "hub": "use the hub at this zmq endpoint instead of starting one (tcp://HOST:PORT)",
    "max_frame": "largest native frame body in bytes",
    "max_text": "largest message text (and text-dialect line) in bytes",
    "max_fragments": "frames one WebSocket message may arrive in (empty continuation frames "
    "count too); more is frame_too_large and a close",
    "max_pending": "NAMES/WHO/LIST requests one IRC client may have awaiting an answer; "
    "more are answered at once with an empty list",
    "allowed_origins": "comma list of browser origins (e.g. https://chat.example) whose pages "
    "may open /ws besides the relay's own page; * admits every origin",
    "max_outbox": "bytes queued for one client before it is cut as a slow consumer",
    "sndbuf": "kernel send buffer per client socket in bytes (bounds what hides from the "
    "outbox limit); 0 leaves it to kernel autotuning",
    "history": "messages kept per room for history and resume",
    "history_bytes": "bytes of history kept in all rooms together (texts plus a fixed cost "
    "per message); past it the least recently active rooms lose their oldest messages",
    "max_rooms": "rooms the hub holds at once; at the limit an empty room is forgotten to "
    "make space, and a new room is refused (too_many_rooms) only when every room has members",
    "max_rooms_per_client": "rooms one client may be in; one more join gets too_many_rooms",
    "room_ttl": "seconds a room with no members and no message is kept, with its history",
    "join_replay": "latest messages of a room sent to a client that joins it (marked as "
    "earlier messages, before live ones); a resume gets what it missed instead; 0 = off",
    "join_replay_rooms": "rooms of one hello that get a join replay (the first ones named); "
    "the others are joined without one (a client can still ask with history)",
    "presence_limit": "members past which a room's joins and parts are not announced and "
    "`joined` lists only this many (`who` lists all); announced again at 90%% of it",
    "presence_interval": "seconds over which a room's joins, parts and renames are gathered "
    "and fanned out together (the first goes at once); 0 sends each on its own",
    "rate_limit": "messages per second per client (token bucket); 0 turns the limit off",
    "rate_burst": "burst size of the per-client token bucket",
    "flood_window": "seconds a client may keep sending 10x --rate-limit before it is cut "
    "(what it sends over the limit is dropped meanwhile, with one notice a second)",
    "max_errors": "errors one connection may cause in 10 s; one more closes it with "
    "too_many_errors (--rate-limit 0 does not lift it; 0 does)",
    "max_connections": "connections the relay accepts in total",
    "max_per_ip": "connections accepted from one IP address",
    "hello_timeout": "seconds a native client has to send hello",
    "max_handshakes": "connections the relay holds before their hello succeeds (slow or "
    "silent openers); more are refused at accept",
    "tls_handshake_timeout": "seconds a client has from connecting to a finished TLS handshake",
    "ping_interval": "idle seconds before a keepalive ping; two unanswered ones close",
    "slow_consumer_grace": "seconds a slow consumer's error may take to leave before the close",
    "shutdown_grace": "seconds to flush outboxes when stopping",
    "bus_hwm": "zmq high-water mark (messages) on every bus socket",
    "max_linger": "longest a busy worker holds fan-out to send more messages per syscall "
    "(seconds; it holds a quarter of what its recent send rounds took, up to this); "
    "0 sends at once",
    "max_inflight": "requests a worker may have on their way through the hub; past it, "
    "the readers of the heaviest senders stop reading (TCP pushes back on them) until "
    "the hub's receipts return",
    "max_pause": "seconds a worker holds room traffic back while most members it writes to "
    "are behind; a member that makes no progress for this long no longer holds it back "
    "and is cut when over --max-outbox",
    "password": "password every client must give; a flag is visible to every local user "
    "(ps), so prefer $CHAT_RELAY_PASSWORD or --config FILE (mode 0600)",
    "tls_cert": "PEM certificate file: the port then speaks TLS 1.2+ for every dialect",
    "tls_key": "PEM private key file for --tls-cert",
    "keys": "CURVE key directory for a TCP bus (made by `chat-relay keys generate DIR`)",
    "history_db": "SQLite file that keeps history, seq and epoch across restarts",
    "metrics": "HOST:PORT to serve Prometheus metrics on (port 0 picks one; the banner says)",
    "log_format": "text or json",
    "mdns": "do not advertise the relay on the LAN over mDNS/DNS-SD (`chat-client` with no "
    "HOST finds advertised relays; a loopback-only relay is never advertised)",
    "oper_password": "operator password: lets a client kick, ban and mute; a flag is "
    "visible to every local user (ps), so prefer $CHAT_RELAY_OPER_PASSWORD or --config FILE",
    "auth_tries": "wrong passwords (hello, /pass, PASS, oper) on one connection before it "
    "is closed",
    "auth_delay": "seconds before the answer to a connection's first wrong password; each "
    "further one doubles it (at most 8 s)",
    "auth_failures": "failed passwords from one IP (IPv6: its /64), relay-wide, that block it",
    "auth_window": "seconds within which --auth-failures failures block an address",
    "auth_block": "seconds a blocked address is refused on every worker and host",
    "auth_table": "addresses the hub keeps failure counts for (least recent forgotten first)",
}


def _add_settings_flags(parser: argparse.ArgumentParser, only: set[str] | None = None) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="TOML file with any of these settings; flags override it")
    defaults = Settings()
    for f in dataclasses.fields(Settings):
        if only is not None and f.name not in only:
            continue
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        kind: Any = type(default)
        if kind is bool:  # an on/off setting is one flag that turns it the other way
            flag = ("--no-" if default else "--") + f.name.replace("_", "-")
            parser.add_argument(flag, dest=f.name, action="store_const", const=not default,
                                default=None, help=HELP.get(f.name, ""))
            continue
        parser.add_argument(flag, dest=f.name, type=kind, default=None,
                            help=_flag_help(HELP.get(f.name, ""), default))


def _flag_help(text: str, default: object) -> str:
    """A flag's help with its default said once: not where the text names it
    already, and not at all when the default is empty (the feature is off)."""
    if "default" in text or default == "":
        return text
    return f"{text} [default: {default}]"


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if getattr(args, "config", None):  # defaults < file < $CHAT_RELAY_*PASSWORD < flags
        from relay.configfile import ConfigError, exposure, load

        try:
            values = load(args.config)
        except ConfigError as exc:
            print(f"chat-relay: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        for name, value in values.items():
            setattr(settings, name, value)
        warning = exposure(args.config, values)
        if warning:
            print(f"chat-relay: {warning}", file=sys.stderr)
    for env, name in SECRET_ENV.items():
        secret = os.environ.get(env)
        if secret:
            setattr(settings, name, secret)
    for f in dataclasses.fields(Settings):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(settings, f.name, value)
    if settings.workers < 1:
        raise SystemExit("chat-relay: --workers must be at least 1")
    _check_join_replay(settings)
    _check_engine(settings)
    if settings.presence_limit < 0 or settings.presence_interval < 0:
        raise SystemExit("chat-relay: --presence-limit and --presence-interval must be >= 0")
    if not settings.flood_window > 0:
        raise SystemExit("chat-relay: --flood-window must be more than 0 seconds, got "
                         f"{settings.flood_window:g}")
    return settings


def _check_engine(settings: Settings) -> None:
    """--engine: a Redis URL, and not together with --hub (each host runs its own hub)."""
    if not settings.engine:
        return
    from relay.hub.redis_link import check_url

    problem = check_url(settings.engine)
    if not problem and settings.hub:
        problem = "--engine and --hub exclude each other: with --engine every host runs its own hub"
    if problem:
        raise SystemExit(f"chat-relay: {problem}")


def _check_join_replay(settings: Settings) -> None:
    """A replay is one `history` page: at most what one history query may ask for."""
    from transports.validate import HISTORY_MAX_LIMIT

    if not 0 <= settings.join_replay <= HISTORY_MAX_LIMIT:
        raise SystemExit(f"chat-relay: --join-replay must be 0-{HISTORY_MAX_LIMIT} "
                         f"(messages; 0 turns it off), got {settings.join_replay}")
    if settings.join_replay_rooms < 0:
        raise SystemExit("chat-relay: --join-replay-rooms must be 0 or more, got "
                         f"{settings.join_replay_rooms}")


HUB_SETTINGS = {"history", "history_bytes", "max_rooms", "max_rooms_per_client", "room_ttl",
                "join_replay", "join_replay_rooms",
                "history_db", "bus_hwm", "keys", "log_level", "log_format", "metrics",
                "auth_failures", "auth_window", "auth_block", "auth_table",
                "presence_limit", "presence_interval"}


def _bus_refused(endpoint: str, keys: str, role: str) -> bool:
    """A TCP bus without usable CURVE keys is refused, in words (exit code 2)."""
    from relay.curve import bus_problem

    problem = bus_problem(endpoint, keys, role)
    if problem:
        print(f"chat-relay: {problem}", file=sys.stderr)
    return bool(problem)


def _run_hub(args: argparse.Namespace) -> int:
    """`chat-relay hub`: the hub alone, in the foreground, for relays on other hosts."""
    import zmq

    from relay.hub import process as hub
    from relay.logs import setup_logging

    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_format)
    if _bus_refused(args.bind, settings.keys, "hub"):
        return 2
    try:
        hub.main(settings, args.bind, banner=True)
    except zmq.ZMQError as exc:
        print(f"chat-relay: cannot listen on {args.bind}: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # --metrics address unusable
        print(f"chat-relay: {exc}", file=sys.stderr)
        return 1
    return 0


def _generate_keys(directory: str) -> int:
    from relay.curve import KeyFileError, generate

    try:
        paths = generate(directory)
    except (KeyFileError, OSError) as exc:
        print(f"chat-relay: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(p.name for p in paths)} to {directory}\n"
          f"  hub host:    hub.key, hub.key_secret, node.key\n"
          f"  relay hosts: hub.key, node.key, node.key_secret (keep *.key_secret private)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-relay", description="A LAN chat relay: native, text (nc), WebSocket, IRC."
    )
    parser.add_argument("--version", action="version", version=f"chat-relay {__version__}")
    # The metavar lists the public subcommands only; the children's
    # (`_hub`, `_worker`) get no help text, which keeps them out of --help.
    sub = parser.add_subparsers(dest="command", required=True, metavar="{start,hub,keys}")
    start = sub.add_parser(
        "start", help="run a relay: hub + worker processes on one port",
        epilog="Secrets: every user of this host can read a process's flags (ps), so give "
        "passwords as $CHAT_RELAY_PASSWORD / $CHAT_RELAY_OPER_PASSWORD or in a --config file "
        "only you can read (chmod 600). The hub and workers get their settings through an "
        "inherited file descriptor, never on their command line or in their environment.",
    )
    _add_settings_flags(start)
    public_hub = sub.add_parser("hub", help="run only the hub, serving relays on other hosts")
    public_hub.add_argument("--bind", required=True, help="zmq endpoint, e.g. tcp://0.0.0.0:7070")
    _add_settings_flags(public_hub, HUB_SETTINGS)
    keys = sub.add_parser("keys", help="CURVE keys for a bus between hosts")
    keys.add_argument("action", choices=["generate"])
    keys.add_argument("dir", help="directory to create (0700) with hub and node key pairs")
    # The supervisor's children: settings come through an inherited fd (see
    # Settings.write_fd), because argv is public on the host.
    hub = sub.add_parser("_hub")
    hub.add_argument("--bind", required=True)
    hub.add_argument("--settings-fd", type=int, required=True)
    worker = sub.add_parser("_worker")
    for name in ("--id", "--hub"):
        worker.add_argument(name, required=True)
    for name in ("--fd", "--status-fd", "--workers", "--settings-fd"):
        worker.add_argument(name, type=int, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "start":
        from relay import supervisor
        from relay.logs import setup_logging

        settings = _settings(args)
        setup_logging(settings.log_level, settings.log_format)
        if _bus_refused(settings.hub, settings.keys, "node"):
            return 2
        if settings.history_db and not settings.hub:
            # Fail here, in words, rather than in a hub the supervisor keeps restarting.
            from relay.hub.historydb import HistoryStore, HistoryStoreError

            try:
                HistoryStore.open(settings.history_db, settings.history).close()
            except HistoryStoreError as exc:
                print(f"chat-relay: {exc}", file=sys.stderr)
                return 1
        if settings.engine:
            from relay.hub.redis_link import preflight

            problem = preflight(settings.engine, settings.engine_password)
            if problem:
                print(f"chat-relay: {problem}", file=sys.stderr)
                return 1
        return supervisor.main(settings)
    if args.command == "_hub":
        from relay.child import die_with_parent
        from relay.hub import process as hub
        from relay.logs import setup_logging

        settings = Settings.read_fd(args.settings_fd)
        die_with_parent()
        setup_logging(settings.log_level, settings.log_format)
        hub.main(settings, args.bind)
        return 0
    if args.command == "hub":
        return _run_hub(args)
    if args.command == "keys":
        return _generate_keys(args.dir)
    if args.command == "_worker":
        from relay.worker import process as worker

        settings = Settings.read_fd(args.settings_fd)
        worker.main(settings, args.id, args.hub, args.fd, args.status_fd, args.workers)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
