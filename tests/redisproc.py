"""Run a `redis-server` as a child process for tests and measurements.

The Redis engine's tests need a Redis they own: started on a free loopback
port, stopped by its PID (SIGTERM, the way an operator stops it, or SIGKILL)
and started again on the same port to see what the relay does meanwhile.
Readiness is a PING that answers, never a sleep.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

REDIS = shutil.which("redis-server")


@dataclass(frozen=True)
class Tls:
    """A private CA and a certificate for 127.0.0.1 it signed (trustme), as files:
    what an operator hands `redis-server --tls-port` and `?ssl_ca_certs=`."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def make(cls, tmp: Path) -> Tls:
        import trustme

        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1", "localhost")
        files = cls(tmp / "ca.pem", tmp / "redis.pem", tmp / "redis.key")
        ca.cert_pem.write_to_path(str(files.ca))
        issued.cert_chain_pems[0].write_to_path(str(files.cert))
        issued.private_key_pem.write_to_path(str(files.key))
        return files

    def server_args(self, port: int) -> list[str]:
        """TLS only on `port` (no plain port), clients not asked for certificates."""
        return ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(self.cert),
                "--tls-key-file", str(self.key), "--tls-ca-cert-file", str(self.ca),
                "--tls-auth-clients", "no"]

    def client_kwargs(self) -> dict[str, Any]:
        return {"ssl": True, "ssl_ca_certs": str(self.ca)}

    @property
    def query(self) -> str:
        return f"?ssl_ca_certs={self.ca}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server on 127.0.0.1; `persist` gives it an append-only file in `dir`."""

    def __init__(self, port: int = 0, persist: Path | None = None, password: str = "",
                 tls: Tls | None = None) -> None:
        self.port = port or free_port()
        self.persist = persist
        self.password = password  # requirepass (tests only: it shows in this test's argv)
        self.tls = tls  # serve TLS only (rediss://)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/0{self.tls.query}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 10.0) -> RedisServer:
        import redis

        assert REDIS is not None, "redis-server missing"
        ports = ["--port", str(self.port)] if self.tls is None else self.tls.server_args(self.port)
        cmd = [REDIS, *ports, "--bind", "127.0.0.1", "--save", ""]
        if self.persist is not None:
            cmd += ["--dir", str(self.persist), "--appendonly", "yes", "--appendfsync",
                    "always"]
        else:
            cmd += ["--appendonly", "no"]
        if self.password:
            cmd += ["--requirepass", self.password]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, password=self.password or None,
                             **(self.tls.client_kwargs() if self.tls else {}))
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on {self.port} did not start") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal our redis-server by PID and wait until it is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> RedisServer:
        return self.start() if self.proc is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def cluster_port() -> int:
    """A free loopback port P whose cluster bus port (P + 10000) is free too.

    The kernel's ephemeral ports (32768+) would put the bus past 65535, so
    this draws from 20000-29999 instead and checks both by binding them.
    """
    for _ in range(200):
        port = random.randrange(20_000, 30_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _cluster_ok(client: Any) -> bool:
    """The node sees every slot served, and, if it is a replica, has synced with
    its primary (a replica that never did cannot be promoted by a failover)."""
    info = client.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
    state = info.get("cluster_state") if isinstance(info, dict) else None
    if state not in ("ok", b"ok"):
        return False
    repl = client.info("replication")
    return repl.get("role") != "slave" or repl.get("master_link_status") == "up"


class RedisCluster:
    """Six redis-servers on 127.0.0.1 made into a cluster of 3 primaries + 3 replicas.

    `node_timeout_ms=1000` keeps a failover to a second or two. Ready
    when every node's CLUSTER INFO says cluster_state:ok and every replica's
    link to its primary is up; stopped by PID.
    """

    def __init__(self, tmp: Path, nodes: int = 6, password: str = "",
                 node_timeout_ms: int = 5000, replicas: int = 1, tls: Tls | None = None) -> None:
        self.tmp = tmp
        self.replicas = replicas  # per primary
        self.tls = tls  # TLS only, between clients and nodes and among the nodes
        # Short for failover tests (quick), longer otherwise: on a loaded machine a
        # node that stalls for a second could be failed over when nobody meant it.
        self.node_timeout_ms = node_timeout_ms
        self.password = password  # requirepass and masterauth of every node
        self.ports = [cluster_port() for _ in range(nodes)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        nodes = ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])
        if self.tls is not None:
            return f"rediss+cluster://{nodes}{self.tls.query}"
        return f"redis+cluster://{nodes}"

    def _client(self, port: int) -> Any:
        import redis

        return redis.Redis(port=port, socket_timeout=1, password=self.password or None,
                           **(self.tls.client_kwargs() if self.tls else {}))

    def start(self, timeout: float = 30.0) -> RedisCluster:
        assert REDIS is not None, "redis-server missing"
        cli = shutil.which("redis-cli")
        assert cli is not None, "redis-cli missing"
        for port in self.ports:
            listen = (["--port", str(port)] if self.tls is None else
                      [*self.tls.server_args(port), "--tls-cluster", "yes",
                       "--tls-replication", "yes"])
            self.procs[port] = subprocess.Popen(
                [REDIS, *listen, "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.tmp), "--cluster-enabled", "yes",
                 "--cluster-config-file", str(self.tmp / f"nodes-{port}.conf"),
                 "--cluster-node-timeout", str(self.node_timeout_ms),
                 # replicas sync at once (the default waits 5 s for more replicas)
                 "--repl-diskless-sync-delay", "0",
                 *(["--requirepass", self.password, "--masterauth", self.password]
                   if self.password else [])], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._wait(port, lambda c: bool(c.ping()), deadline)
        made = subprocess.run(
            [cli, *(["--tls", "--cacert", str(self.tls.ca)] if self.tls else []),
             "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, "REDISCLI_AUTH": self.password} if self.password else None)
        if made.returncode:
            raise RuntimeError(f"redis-cli --cluster create failed: {made.stdout[-2000:]}"
                               f"{made.stderr[-500:]}")
        for port in self.ports:
            self._wait(port, _cluster_ok,
                       deadline)
        return self

    def _wait(self, port: int, ready: Callable[[Any], bool], deadline: float) -> None:
        import redis

        client = self._client(port)
        try:
            while True:
                try:
                    if ready(client):
                        return
                except (redis.ConnectionError, redis.ResponseError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node {port} not ready")
                time.sleep(0.05)
        finally:
            client.close()

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Until every live node says cluster_state:ok (after a failover, say)."""
        deadline = time.monotonic() + timeout
        for port, proc in self.procs.items():
            if proc.poll() is None:
                self._wait(port, _cluster_ok, deadline)

    def primary_of(self, key: str) -> int:
        """The port of the live primary that serves `key`'s slot, as a live node sees it."""

        port = next(p for p, proc in self.procs.items() if proc.poll() is None)
        client = self._client(port)
        try:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
            nodes = client.execute_command("CLUSTER NODES")  # parsed: addr -> fields
        finally:
            client.close()
        for addr, node in nodes.items():
            flags = str(node["flags"])
            if "master" not in flags or "fail" in flags:
                continue
            for rng in node["slots"]:
                if int(rng[0]) <= slot <= int(rng[-1]):
                    return int(str(addr).rsplit(":", 1)[1])
        raise LookupError(f"no primary serves slot {slot}")

    def failover(self, port: int, timeout: float = 30.0) -> int:
        """A manual failover of the primary on `port` (CLUSTER FAILOVER sent to one of
        its replicas, which waits for it to catch up: nothing lost); the new
        primary's port, once it serves as one. The replica is the node that says
        so itself (INFO replication), not gossip, which may lag."""
        deadline = time.monotonic() + timeout
        replica = 0
        while not replica:
            for other, proc in self.procs.items():
                if other != port and proc.poll() is None and self._replicates(other, port):
                    replica = other
                    break
            else:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no replica of {port}")
                time.sleep(0.05)
        while True:  # asked again if the first try lapsed (votes are slow on a loaded box)
            self._wait(replica, lambda c: bool(c.execute_command("CLUSTER FAILOVER")), deadline)
            try:
                self._wait(replica, lambda c: c.info("replication").get("role") == "master",
                           min(deadline, time.monotonic() + 5))
                return replica
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise

    def _replicates(self, node: int, primary: int) -> bool:
        import redis

        client = self._client(node)
        try:
            repl = client.info("replication")
        except redis.ConnectionError:
            return False
        finally:
            client.close()
        return repl.get("role") == "slave" and int(repl.get("master_port", 0)) == primary

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        """Signal one of our nodes by PID and wait until it is gone."""
        proc = self.procs[port]
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> RedisCluster:
        return self if self.procs else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
