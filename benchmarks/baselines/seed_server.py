"""The seed tutorial's chat server, rewritten faithfully as a baseline.

Design (deliberately naive, that is the point of a baseline): an accept loop,
one thread per client, and each chunk a client sends is passed with a
blocking `sendall` to every *other* client, in the receiving thread. No
framing (chunks, not lines, are relayed), no greeting, no rooms. A slow
receiver therefore stalls every sender that writes to it.

    python -m benchmarks.baselines.seed_server --port 0

prints `listening on HOST:PORT` once it accepts connections.
"""

from __future__ import annotations

import argparse
import socket
import threading


class SeedServer:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_server((host, port), backlog=4096, reuse_port=False)
        self.clients: list[socket.socket] = []
        self.lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def serve(self) -> None:
        """The accept loop, until close(); any other accept error ends it loudly."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                if self.sock.fileno() == -1:
                    return  # closed by close()
                raise
            self.register(conn)
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def register(self, conn: socket.socket) -> None:
        """From now on `conn` gets what the others send."""
        with self.lock:
            self.clients.append(conn)

    def close(self) -> None:
        self.sock.close()
        with self.lock:
            for c in self.clients:
                c.close()

    def handle(self, conn: socket.socket) -> None:
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                with self.lock:
                    others = [c for c in self.clients if c is not conn]
                for other in others:
                    try:
                        other.sendall(data)
                    except OSError:
                        pass
        except OSError:
            pass
        finally:
            with self.lock:
                if conn in self.clients:
                    self.clients.remove(conn)
            conn.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    threading.stack_size(256 * 1024)
    server = SeedServer(args.host, args.port)
    host, port = server.address
    print(f"seed server listening on {host}:{port}", flush=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
