"""`chat-relay start`: binds the port, starts the hub and W workers, keeps them alive.

The supervisor binds the listening socket itself and hands the same fd to
every worker, so `--port 0` works (all workers share the one ephemeral port)
and a worker that dies loses only its own connections. It restarts any child
that dies, tells the hub a dead worker's clients are gone, and on SIGINT or
SIGTERM stops workers first (they tell clients `shutting_down` and flush),
then the hub. Children read their settings from an inherited fd (argv is
public on the host); the hub's copy carries no password.
"""

from __future__ import annotations

import logging
import os
import secrets
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import zmq

from relay import __version__, discovery
from relay.banner import client_command, join_lines
from relay.bus.link import BusLink
from relay.bus.messages import WorkerGone
from relay.config import SECRET_ENV, Settings, redacted
from relay.metrics import SupervisorMetrics
from transports.registry import SERVER_CODECS

log = logging.getLogger("chat_relay.supervisor")

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


@dataclass
class Child:
    role: str           # "hub" or "worker"
    ident: str
    proc: subprocess.Popen[bytes]
    status_r: int | None = None
    started: float = field(default_factory=time.monotonic)


def bind_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, port))
    sock.listen(4096)
    return sock


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.children: list[Child] = []
        self.bus_dir: str | None = None
        self.hub_endpoint = settings.hub
        self.own_hub = not settings.hub
        self.stopping = False
        self.stop_reason = ""  # what asked for the stop, told to the operator
        self.announced = False  # the banner went out, so the operator hears the stop too
        self.listener: socket.socket | None = None
        self.ctx: zmq.Context[Any] | None = None
        self.notify: BusLink | None = None
        self.restarts: Counter[str] = Counter()
        self.metrics: SupervisorMetrics | None = None
        self.advertiser: discovery.Advertiser | None = None

    # Children ------------------------------------------------------------------

    def _python(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "relay", *args]

    def _spawn(self, cmd: list[str], settings: Settings, pass_fds: tuple[int, ...] = ()
               ) -> subprocess.Popen[bytes]:
        """Start a child that reads `settings` from an inherited fd, not argv.

        Anyone on the host can read a process's argv (`ps`), so no setting
        rides on it; and $CHAT_RELAY_PASSWORD / $CHAT_RELAY_OPER_PASSWORD are
        taken out of the child's environment: the settings carry them.
        """
        fd = settings.write_fd()
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        try:
            return subprocess.Popen([*cmd, "--settings-fd", str(fd)], env=env,
                                    pass_fds=(*pass_fds, fd))
        finally:
            os.close(fd)

    def _start_hub(self) -> Child:
        cmd = self._python("_hub", "--bind", self.hub_endpoint)
        child = Child("hub", "hub", self._spawn(cmd, self.settings.without_secrets()))
        self.children.append(child)
        return child

    def _start_worker(self) -> Child:
        assert self.listener is not None
        ident = f"w{secrets.token_hex(4)}"
        status_r, status_w = os.pipe()
        cmd = self._python(
            "_worker", "--id", ident, "--hub", self.hub_endpoint,
            "--fd", str(self.listener.fileno()), "--status-fd", str(status_w),
            "--workers", str(self.settings.workers),
        )
        try:
            proc = self._spawn(cmd, self.settings.for_workers(),
                               (self.listener.fileno(), status_w))
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        child = Child("worker", ident, proc, status_r)
        self.children.append(child)
        return child

    def _wait_ready(self, workers: list[Child], timeout: float) -> list[Child]:
        """Wait for each worker's "ready" line; returns those that never said it."""
        sel = selectors.DefaultSelector()
        waiting = {}
        for child in workers:
            assert child.status_r is not None
            sel.register(child.status_r, selectors.EVENT_READ)
            waiting[child.status_r] = child
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline and not self.stopping:
            for key, _ in sel.select(timeout=min(0.2, max(0.0, deadline - time.monotonic()))):
                fd = int(key.fd)
                os.read(fd, 256)  # "ready <id>\n", or b"" if the worker died
                sel.unregister(fd)
                os.close(fd)
                waiting.pop(fd).status_r = None
        sel.close()
        return list(waiting.values())

    def _notify_worker_gone(self, ident: str) -> None:
        """Tell the hub at once, so a dead worker's nicks are free for its reconnecting users."""
        if self.notify is None:
            self.ctx = zmq.Context()
            self.notify = BusLink(self.ctx, self.hub_endpoint, f"sup-{os.getpid()}", hwm=1000,
                                  keys=self.settings.keys)
        self.notify.send([WorkerGone(ident).to_wire()])

    # Lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        if s.tls_cert:
            from relay.tls import server_context

            server_context(s.tls_cert, s.tls_key)  # fail here, clearly, not in every worker
        if s.metrics:
            # Before any child starts: children find the files' dir in their environment.
            self.metrics = SupervisorMetrics(s.metrics, self._metric_facts)
            self.metrics.prepare()
            self.metrics.start()
        if self.own_hub:
            self.bus_dir = tempfile.mkdtemp(prefix="chat-relay-")
            os.chmod(self.bus_dir, 0o700)  # the ipc bus is for its owner only
            self.hub_endpoint = f"ipc://{self.bus_dir}/hub"
            self._start_hub()
        self.listener = bind_listener(s.host, s.port)
        workers = [self._start_worker() for _ in range(s.workers)]
        late = self._wait_ready(workers, READY_TIMEOUT)
        if late and not self.stopping:
            where = ("" if self.own_hub
                     else f"; is the hub at {self.hub_endpoint} up, with these keys?")
            raise RuntimeError(f"{len(late)} worker(s) did not become ready in {READY_TIMEOUT} s"
                               f"{where} (see the log above)")
        if not self.stopping:
            self._advertise()
            self._banner()

    def _advertise(self) -> None:
        """Announce the relay on the LAN (mDNS) unless told not to or loopback-only."""
        s = self.settings
        assert self.listener is not None
        if not s.mdns:
            return
        advert = discovery.plan(self.listener.getsockname()[0], self.listener.getsockname()[1],
                                __version__, tls=bool(s.tls_cert), password=bool(s.password),
                                dialects=SERVER_CODECS)
        if advert is not None:
            self.advertiser = discovery.Advertiser(advert).start()

    def _metric_facts(self) -> dict[str, Any]:
        """Asked by the metrics HTTP thread at each scrape."""
        workers = [c for c in list(self.children) if c.role == "worker"]
        return {"restarts": dict(self.restarts),
                "workers": sum(1 for c in workers if c.proc.poll() is None)}

    def _banner(self) -> None:
        s = self.settings
        assert self.listener is not None
        host, port = self.listener.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        loopback = host in ("127.0.0.1", "::1", "localhost")
        scope = ("loopback only; add --host 0.0.0.0 to serve the LAN" if loopback
                 else "serving the LAN: anyone who can reach this host can join")
        join_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        joins = join_lines(join_host, port, bool(s.tls_cert), client_command())
        print(
            f"chat-relay {__version__} listening on {shown}:{port} ({scope})\n"
            f"  {s.workers} worker process{'es' if s.workers != 1 else ''}, "
            f"hub {'on ' + self.hub_endpoint}"
            f"{', engine ' + redacted(s.engine) if s.engine else ''}\n"
            + "\n".join(joins) + "\n"
            "  stop with Ctrl-C",
            flush=True,
        )
        if self.metrics is not None:
            print(f"  metrics on {self.metrics.url}", flush=True)
        if self.advertiser is not None:
            ad = self.advertiser.advert
            print(f"  advertising on the LAN (mDNS) as '{ad.name}' at "
                  f"{', '.join(ad.addresses)}; find it with: {client_command()} --discover",
                  flush=True)
        self.announced = True

    def run(self) -> int:
        """Watch children until asked to stop; restart whatever dies."""
        while not self.stopping:
            for child in list(self.children):
                code = child.proc.poll()
                if code is None or self.stopping:
                    continue
                self.children.remove(child)
                self.restarts[child.role] += 1
                if self.metrics is not None:
                    self.metrics.process_dead(child.proc.pid)
                if child.role == "hub":
                    log.error("hub exited with %s; restarting it", code)
                    self._start_hub()
                else:
                    log.error("worker %s exited with %s; starting a replacement", child.ident,
                              code)
                    try:
                        self._notify_worker_gone(child.ident)
                    except zmq.ZMQError:
                        log.exception("could not tell the hub")
                    replacement = self._start_worker()
                    if child.status_r is not None:
                        os.close(child.status_r)
                    if self._wait_ready([replacement], READY_TIMEOUT):
                        log.error("replacement worker %s is not ready", replacement.ident)
            time.sleep(0.05)  # the watch interval: restarts happen within ~50 ms + startup
        return 0

    def stop(self) -> None:
        """Workers first (they flush `shutting_down` to clients), then the hub."""
        self.stopping = True
        if self.announced:
            why = f" on {self.stop_reason}" if self.stop_reason else ""
            # A terminal has just echoed "^C" with no newline: start a line of our own.
            lead = "\n" if self.stop_reason == "Ctrl-C" and sys.stdout.isatty() else ""
            print(f"{lead}chat-relay: stopping{why}; telling clients the relay is shutting down",
                  flush=True)
        if self.advertiser is not None:  # first: nobody should find a relay that is leaving
            self.advertiser.close()
            self.advertiser = None
        for role in ("worker", "hub"):
            group = [c for c in self.children if c.role == role]
            for child in group:
                if child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            for child in group:
                try:
                    child.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.error("%s %s did not stop in time; killing it", child.role, child.ident)
                    child.proc.kill()
                    child.proc.wait()
        if self.notify is not None:
            self.notify.close(linger=0)
        if self.ctx is not None:
            self.ctx.term()
        if self.listener is not None:
            self.listener.close()
        if self.bus_dir:
            shutil.rmtree(self.bus_dir, ignore_errors=True)
        if self.metrics is not None:
            self.metrics.close()
        if self.announced:
            print("chat-relay: stopped", flush=True)


def main(settings: Settings) -> int:
    sup = Supervisor(settings)

    def on_signal(signum: int, frame: object) -> None:
        sup.stop_reason = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        sup.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sup.start()
        sup.run()
    except ssl.SSLError as exc:
        print(f"chat-relay: cannot use TLS certificate {settings.tls_cert}: {exc}",
              file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"chat-relay: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
              file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"chat-relay: {exc}", file=sys.stderr)
        return 1
    finally:
        sup.stop()
    return 0
