"""One client's reader thread: decode, check, hand to the hub through a narrow link.

The thread owns nothing but its connection's read side. Everything that must
be ordered with room traffic (welcome, joined, msg) or with replies to
earlier requests (pong) comes back from the hub through the bus thread; only
errors about the client's own input are written from here.

A reader sees its worker through two objects only: a `ReaderLink` (submit a
request, open and close, wait for credit: inbox.py) and the worker's
`Admission` (handshake counts, password blocks and failures). It never holds
the worker, so the worker can import it and not the other way round.
"""

from __future__ import annotations

import hmac
import logging
import socket
import ssl
import time
from typing import Any

from relay.bus import messages as m
from relay.config import Settings
from relay.tls import TlsClosed
from relay.worker.admission import Admission, peer_ip
from relay.worker.inbox import ReaderLink
from relay.worker.limits import ErrorBudget, Flood, FloodLimit
from relay.worker.opening import linger_raw, open_stream
from relay.worker.pacing import ReaderWeight
from relay.worker.requests import ANSWERED, MAX_ASKING, PAGED, moderation_for, request_for
from relay.worker.writer import Connection, wait_readable
from transports.codec import Decoded
from transports.errors import ProtocolError
from transports.errors import error_body as _error
from transports.events import MODERATION, Bye, ClientEvent, Hello, Oper, Pong
from transports.sniff import SNIFF_TIMEOUT

log = logging.getLogger("chat_relay.session")

# Codes a client may get before its hello; anything else becomes not_ready.
_PRE_HELLO_CODES = frozenset({"bad_frame", "frame_too_large", "text_too_long"})
PARTIAL_FLUSH = SNIFF_TIMEOUT  # silence after a newline-less line that ends it
# Bytes asked of each recv(), allocated for every call: at 256 KiB glibc maps and
# unmaps fresh pages each time (69 us of a message's path on an idle relay, 15 us
# at 64 KiB); 64 KiB holds ~400 typical frames, longer ones are reassembled.
READ_SIZE = 65536
# Errors about bytes that never became a typed frame: answered by the reader
# at once, never through the hub (there is no request to keep in line with).
_FRAMING_CODES = frozenset({"bad_frame", "frame_too_large"})


class Reader:
    def __init__(self, link: ReaderLink, admission: Admission, settings: Settings,
                 tls_ctx: ssl.SSLContext | None, sock: socket.socket, addr: str,
                 cid: int) -> None:
        self.link = link
        self.admission = admission
        self.settings = settings
        self.tls_ctx = tls_ctx
        self.sock = sock
        self.addr = addr
        self.cid = cid
        self.conn: Connection | None = None
        self.flood = FloodLimit(settings.rate_limit, settings.rate_burst, settings.flood_window)
        self.pings_unanswered = 0
        self.oper = False  # proved the operator password on this connection
        self.auth_failures = 0  # wrong passwords (hello or oper) on this connection
        self.handshaking = True  # counted in the worker's handshakes until past hello
        self.weight = ReaderWeight()  # what it sent recently: heaviest waits first

    # Thread entry ---------------------------------------------------------------

    def run(self) -> None:
        try:
            self._serve()
        except (TlsClosed, ConnectionError) as exc:
            log.info("%s: %s", self.addr, exc)
        except Exception:
            log.exception("connection %s from %s failed; closing it", self.cid, self.addr)
        finally:
            self._handshake_over()
            if self.conn is not None:
                if not self.conn.slow:
                    self.conn.linger_close(self.settings.shutdown_grace)
                self.link.closed(self.conn)
            else:
                linger_raw(self.sock)
                self.sock.close()
            self.admission.connection_closed(self.addr)

    def _handshake_over(self) -> None:
        if self.handshaking:
            self.handshaking = False
            self.admission.handshake_over()

    def _serve(self) -> None:
        s = self.settings
        opened = open_stream(self.sock, self.addr, self.tls_ctx, s)
        if opened is None:
            return
        codec, prefix = opened.codec, opened.prefix
        conn = self.conn = Connection(
            self.cid, self.sock, self.addr, codec, s.max_outbox, self.link.want_write, opened.tls
        )
        conn.errors = ErrorBudget(s.max_errors)
        self.link.opened(conn)
        hello_deadline = time.monotonic() + s.hello_timeout
        if codec.auto_hello:
            if s.password:
                conn.send(codec.encode({"t": "notice", "text":
                                        "this relay needs a password: type /pass PASSWORD"}))
            else:
                self._hello(Hello(nick=None, rooms=("lobby",)))
        data = prefix
        while True:
            if data:
                self._feed(data)
                if conn.closing:
                    return
            if conn.ready:
                self._handshake_over()
                # Overloaded: stop reading (TCP pushes back on the sender).
                self.link.admit(conn, self.weight)
            timeout = s.ping_interval if conn.ready else hello_deadline - time.monotonic()
            if timeout <= 0:
                conn.finish(_error("not_ready", f"no hello within {s.hello_timeout:g} s"))
                return
            if codec.partial:
                timeout = min(timeout, PARTIAL_FLUSH)
            if not wait_readable(self.sock, timeout):
                if codec.partial:
                    self._dispatch(codec.flush_partial())
                    data = b""
                    continue
                if not conn.ready:
                    continue
                if self._keepalive_expired():
                    log.info("cut %s (%s): idle, two pings unanswered", conn.nick, self.addr)
                    return
                data = b""
                continue
            try:
                raw = self.sock.recv(READ_SIZE)
            except OSError:
                return
            if not raw:
                return
            self.pings_unanswered = 0
            try:
                data = conn.decrypt(raw)
            except TlsClosed:
                return

    def _keepalive_expired(self) -> bool:
        """Ping an idle client; True once two pings went unanswered.

        A dialect that cannot carry a ping (text: nc cannot answer) is left to
        TCP keepalive, which probes on the same schedule (see process.py).
        """
        assert self.conn is not None
        ping = self.conn.codec.encode({"t": "ping", "id": self.pings_unanswered + 1})
        if not ping:
            return False
        if self.pings_unanswered >= 2:
            return True
        self.pings_unanswered += 1
        self.conn.send(ping)
        return False

    # Input -----------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        conn = self.conn
        assert conn is not None
        codec = conn.codec
        codec.error_allowance = conn.errors.remaining()
        decoded = codec.receive_data(data)
        if decoded:
            self.weight.add(len(decoded), time.monotonic())
        extra = codec.data_to_send()
        # The codec's own replies (/help, IRC numerics, PING before
        # registration) cost like frames; a last word before a close is free.
        if extra and (codec.closed or self._allowed(None, extra.count(b"\n"))):
            conn.send(extra)
        for _ in range(codec.take_own_errors()):
            if not self._count_error():
                return
        self._dispatch(decoded)
        if codec.closed and not conn.closing:
            # The dialect ended the conversation itself (an HTTP page served,
            # a WebSocket close): flush and close.
            conn.finish(None, "closed by dialect")

    def _dispatch(self, decoded: list[Decoded]) -> None:
        """Every decoded item, malformed or not, is charged to the flood limit;
        every malformed one also to the error budget, answered or not."""
        conn = self.conn
        assert conn is not None
        for item in decoded:
            if conn.closing:
                return
            if isinstance(item, ProtocolError):
                if item.fatal or self._allowed(item.ref):
                    self._reject(item)
                else:
                    self._count_error()
            elif isinstance(item, Bye) or self._allowed(item.T):
                self._handle(item)

    def _reject(self, err: ProtocolError) -> None:
        conn = self.conn
        assert conn is not None
        if not conn.ready and err.code not in _PRE_HELLO_CODES and err.ref != "hello":
            err = ProtocolError("not_ready", self._hello_first(), err.ref)
        if err.fatal:
            conn.finish(err.body(), err.code)
        else:
            self._answer(err.body(), direct=err.code in _FRAMING_CODES)

    def _hello_first(self) -> str:  # a dialect that says hello itself (nc) waits for /pass
        auto = self.conn is not None and self.conn.codec.auto_hello
        return "type /pass PASSWORD first" if auto and self.settings.password else "say hello first"

    def _answer(self, body: dict[str, Any], direct: bool = False) -> None:
        """A reply the reader makes itself, in order with the hub's replies.

        Once the client is in, replies to its earlier frames may still be on
        their way through the hub, so this one goes the same way and comes after
        them; before `welcome` (or when `direct`) it goes out at once. An error
        is charged to the connection's error budget here, once.
        """
        conn = self.conn
        assert conn is not None
        error = body.get("t") == "error"
        if error and not self._count_error():
            return
        if conn.ready and not direct:
            if error:
                body = {**body, "_charged": True}  # the bus thread must not charge it again
            self.link.submit(conn, m.Echo(body))
        else:
            conn.send(conn.codec.encode(body))

    def _count_error(self) -> bool:
        """Charge one error; over the budget, close with too_many_errors (False)."""
        conn = self.conn
        assert conn is not None
        if conn.errors.charge():
            return True
        if conn.closing:
            return False
        log.info("cut %s (%s): too many errors", conn.nick or conn.id, self.addr)
        body = conn.errors.error()
        if conn.ready:
            # After the replies still on their way through the hub: the bus
            # thread sends it and closes (too_many_errors is a cut code there).
            conn.bye_done.clear()
            self.link.submit(conn, m.Echo({**body, "_charged": True}))
            self.link.submit(conn, m.Bye())
            conn.bye_done.wait(self.settings.shutdown_grace)
            conn.finish(None, "too_many_errors")
        else:
            conn.finish(body, "too_many_errors")
        return False

    def _handle(self, ev: ClientEvent) -> None:
        conn = self.conn
        assert conn is not None
        if isinstance(ev, Hello):
            self._hello(ev)
            return
        if isinstance(ev, Pong):
            return
        if isinstance(ev, Bye):
            if conn.ready:
                # Round-trip through the hub so replies to earlier frames arrive first.
                self.link.submit(conn, m.Bye(ev.reason))
                conn.bye_done.wait(self.settings.shutdown_grace)
            conn.send(conn.codec.farewell())
            conn.finish(None, "bye")
            return
        if not conn.ready:
            self._answer(_error("not_ready", self._hello_first(), ev.T))
            return
        if isinstance(ev, Oper):
            self._oper(ev)
            return
        req = self._moderate(ev) if isinstance(ev, MODERATION) else request_for(ev)
        paged = isinstance(req, PAGED)
        if paged:  # not read on while earlier pages wait (TCP pushes back)
            conn.wait_to_ask(MAX_ASKING, self.settings.hello_timeout)
        if req is not None:
            self.link.submit(conn, req)
        if paged:  # the hub echoes this behind the reply: then it is answered
            self.link.submit(conn, m.Echo({"t": ANSWERED}))

    def _allowed(self, ref: str | None, cost: int = 1) -> bool:
        """The flood limit (limits.FloodLimit): drop with rate_limited; cut a
        client still flooding 10x after 10 s.

        `cost` is in frames (a codec's page of replies costs one per line, at
        most a burst). A dropped frame gets no answer of its own: at most one
        rate_limited notice a second says that frames are being dropped.
        """
        verdict = self.flood.take(cost)
        if verdict is Flood.ALLOWED:
            return True
        conn = self.conn
        assert conn is not None
        if verdict is Flood.CUT:
            log.info("cut %s (%s): flooding", conn.nick, self.addr)
            conn.finish(_error("rate_limited", f"flooding for {self.flood.window:g} s; closing",
                               ref), "flood")
            return False
        self.link.note_rate_limited()
        if verdict is Flood.NOTICE:
            rate = self.settings.rate_limit
            conn.send(conn.codec.encode(_error(
                "rate_limited", f"over {rate:g} messages/s (burst {self.settings.rate_burst}); "
                "what you send is dropped until you slow down (one notice a second)", ref)))
        return False

    def _oper(self, ev: Oper) -> None:
        """Become an operator: the password is compared in constant time, and
        failures count toward the IP's block like a wrong relay password."""
        conn = self.conn
        assert conn is not None
        expected = self.settings.oper_password
        if not expected:
            self._answer(_error(
                "auth_failed", "this relay has no operators (it was started without "
                "--oper-password)", "oper"))
        elif self._password_ok(ev.password, expected, "oper"):
            self.oper = True
            log.info("%s (%s) is an operator", conn.nick, self.addr)
            self._answer({"t": "notice", "text": "you are an operator"})

    def _password_ok(self, given: str, expected: str, ref: str) -> bool:
        """Compare a password, unless the address is blocked; answer a failure.

        Every attempt checks the relay-wide block first. A wrong password is
        reported to the hub, answered after a growing delay, and the
        auth_tries-th one on this connection closes it.
        """
        conn = self.conn
        assert conn is not None
        ip = peer_ip(self.addr)
        blocked = self.admission.auth_blocked(ip)
        if blocked:
            conn.finish(_error("auth_failed", f"{blocked}; closing", ref), "auth_blocked")
            return False
        if check_password(given, expected):
            return True
        self.auth_failures += 1
        log.debug("%s: wrong %s password (%d on this connection)", self.addr, ref,
                  self.auth_failures)
        self.admission.auth_failed(ip, self.auth_failures)
        what = "operator password" if ref == "oper" else "password"
        tries = self.settings.auth_tries
        if self.auth_failures >= tries:
            conn.finish(_error("auth_failed", f"wrong {what} {tries} times; closing", ref),
                        "auth_failed")
        else:
            self._answer(_error("auth_failed", f"wrong {what}", ref))
        return False

    def _moderate(self, ev: ClientEvent) -> m.Request | None:
        """An operator's kick/ban/mute goes to the hub as its op; others get not_operator."""
        conn = self.conn
        assert conn is not None
        if not self.oper:
            self._answer(_error(
                "not_operator", f"{ev.T} is for operators: send oper with the operator "
                "password first", ev.T))
            return None
        req = moderation_for(ev)
        log.info("operator %s (%s): %r", conn.nick, self.addr, req)
        return req

    def _hello(self, ev: Hello) -> None:
        conn = self.conn
        assert conn is not None
        if conn.ready:
            self._answer(_error("bad_field", "you already said hello", "hello"))
            return
        password = self.settings.password
        if password and not self._password_ok(ev.password or "", password, "hello"):
            return
        conn.hello_done.clear()
        self.link.submit(conn, m.Hello(ev.nick, list(ev.rooms), ev.resume or {},
                                       peer_ip(self.addr)))
        # Wait for the hub's answer so frames pipelined after hello see its outcome.
        conn.hello_done.wait(self.settings.hello_timeout)
        if conn.ready:
            self._handshake_over()


def check_password(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
