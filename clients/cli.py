"""chat-client: a terminal chat for the relay, interactive on a TTY, plain in a pipe.

Interactive (stdin is a TTY): a prompt_toolkit prompt keeps the input line
intact while messages print above it; nicks are coloured. Pipe mode: each
stdin line is sent (commands work too), arriving events print as plain
lines, and after EOF the client waits (bounded) until its own messages came
back before it says bye. Both reconnect with backoff and resume rooms.

Nothing is echoed locally: a message shows once, when the relay sends it
back, so the screen shows what the room saw, in the room's order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import ssl
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from clients.aio import AsyncClient, connect
from clients.commands import parse
from clients.errors import CannotConnect, ConnectionClosed, HandshakeError, NotTls
from clients.render import SERVER_STYLE, Line, View, clean, clean_line, clock, plain, render
from clients.state import Incoming, Reconnected
from transports.events import Error, Joined, Parted, Ping, Renamed, Say, Whisper

PASSWORD_ENV = "CHAT_RELAY_PASSWORD"
PASSWORD_TRIES = 3  # prompts before giving up (the relay blocks an IP after 5 failures)

# After stdin ends, how long pipe mode waits for its own messages to come back.
ACK_WAIT = 5.0
CLOSE_WAIT = 2.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chat-client",
        description="Chat on a chat-relay. On a terminal: interactive; in a pipe: "
        "each input line is sent and what arrives is printed.",
    )
    p.add_argument("host", nargs="?", help="relay address, e.g. 127.0.0.1 (on a terminal, "
                   "leave HOST and PORT out to pick a relay found on the LAN)")
    p.add_argument("port", nargs="?", type=int, help="relay port, e.g. 8081")
    p.add_argument("--discover", action="store_true",
                   help="list the relays advertised on the LAN (mDNS, 2 s) and exit")
    p.add_argument("--nick", help="your nick (default: a guest nick)")
    p.add_argument("--room", default="lobby", help="room to join first (default: lobby)")
    p.add_argument(
        "--password",
        help="the relay's password, if it has one. A flag is visible to every local user "
        f"(ps): prefer ${PASSWORD_ENV}, or leave it out to be asked on the terminal",
    )
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument("--ca", metavar="FILE", help="CA bundle to trust for TLS (implies --tls)")
    p.add_argument(
        "--transport",
        choices=("native", "ws"),
        default="native",
        help="dialect to speak: native msgpack frames, or WebSocket (JSON on /ws, the "
        "web page's way in: works through HTTP proxies) (default: native)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="connect timeout in seconds")
    return p


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.tls or args.ca):
        return None
    return ssl.create_default_context(cafile=args.ca)


class Ui:
    """Shows events and carries out input lines; the same for both modes."""

    def __init__(self, client: AsyncClient, room: str, out: Callable[[Line], None]) -> None:
        self.client = client
        # Every line passes clean_line() on its way out: relay text cannot reach
        # the terminal raw, whichever path printed it.
        self.out: Callable[[Line], None] = lambda line: out(clean_line(line))
        self.view = View(client.nick_name, room, dict.fromkeys(client.joined_rooms))
        self._rooms = self.view.rooms
        self._before_join: str | None = room
        self._pings: set[asyncio.Task[None]] = set()  # /ping round trips in flight

    def note(self, text: str) -> None:
        """A local line (or block, such as /help), shown like the relay's `* ` lines.

        Only "\n" breaks lines here; relay text in `text` must be clean()ed by
        the caller first, so that its own newlines show as ^J.
        """
        first, *rest = text.split("\n")
        self.out([(SERVER_STYLE, f"{clock()} * {first}")])
        for line in rest:
            self.out([(SERVER_STYLE, line)])

    def show(self, ev: Incoming) -> None:
        # The view follows the events as shown, not the client's state, which
        # may already be further along.
        view = self.view
        if isinstance(ev, (Renamed, Reconnected)):
            view.nick = ev.nick
        if isinstance(ev, Reconnected):
            view.resuming = set(self._rooms)
        elif isinstance(ev, Joined):
            self._rooms[ev.room] = None
        elif isinstance(ev, Parted):
            self._rooms.pop(ev.room, None)
            if ev.room == view.room:
                view.room = next(iter(self._rooms), None)
        elif isinstance(ev, Error) and ev.ref == "join" and ev.room == view.room:
            view.room = self._before_join  # the join failed: back where we were
        for line in render(ev, view):
            self.out(line)

    async def pump(self) -> str | None:
        """Show events until the connection is gone; returns why, if not by us."""
        async for ev in self.client:
            self.show(ev)
        return self.client.closed_reason

    async def handle(self, line: str) -> bool:
        """Carry out one input line; False when it asks to quit."""
        action = parse(line, self.view.room)
        if action.local:
            self.note(action.local)
        if action.quit:
            return False
        event = action.send
        if event is None:
            return True
        if action.switch_to is not None:
            # Like the text dialect: the room is current at once, so the next
            # line goes there (the relay handles our frames in order).
            self._before_join = self.view.room
            self.view.room = action.switch_to
            if action.switch_to in self._rooms:
                return True
        if isinstance(event, Ping):
            # Measured in the background: a slow relay must not hold up typing.
            task = asyncio.create_task(self._ping())
            self._pings.add(task)
            task.add_done_callback(self._pings.discard)
            return True
        try:
            if isinstance(event, Say):
                await self.client.say(event.room, event.text, action=bool(event.action))
            elif isinstance(event, Whisper):
                await self.client.whisper(event.to, event.text, action=bool(event.action))
            else:
                await self.client.send(event)
        except (ConnectionClosed, TimeoutError) as exc:
            self.note(f"error: not sent: {clean(str(exc))}")
        return True

    async def _ping(self) -> None:
        try:
            rtt = await self.client.ping()
        except (ConnectionClosed, TimeoutError) as exc:
            self.note(f"error: ping: {clean(str(exc))}")
            return
        self.note(f"pong: {rtt * 1000:.1f} ms round trip")

    async def finish(self, pump: asyncio.Task[str | None], wait_acks: bool) -> None:
        """Wait (bounded) for our messages to come back, then say bye."""
        if wait_acks and self.client.closed_reason is None:
            await self.client.flush(ACK_WAIT)
            with contextlib.suppress(Exception):
                await self.client.ping(CLOSE_WAIT)  # answers to earlier commands are in
        if self._pings:  # a /ping just typed shows its round trip before we go
            await asyncio.wait(self._pings, timeout=CLOSE_WAIT)
        await self.client.close(CLOSE_WAIT)
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(pump, CLOSE_WAIT)


def _stdin_lines(stream: TextIO) -> asyncio.Queue[str | None]:
    """Lines of `stream` from a daemon thread (None at EOF): works for any pipe or file."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            for line in stream:
                loop.call_soon_threadsafe(lines.put_nowait, line)
        except (OSError, ValueError):
            pass
        with contextlib.suppress(RuntimeError):  # the loop may be gone already
            loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, name="chat-client-stdin", daemon=True).start()
    return lines


def _on_ctrl_c() -> asyncio.Event:
    """An event set by SIGINT: Ctrl-C is how people leave, so it ends the run like
    /quit (bye, exit 0) instead of raising KeyboardInterrupt through the tasks."""
    pressed = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, pressed.set)
    return pressed


async def run_pipe(client: AsyncClient, room: str) -> int:
    def out(line: Line) -> None:
        print(plain(line), flush=True)

    ui = Ui(client, room, out)
    pump = asyncio.create_task(ui.pump())
    interrupted = asyncio.create_task(_on_ctrl_c().wait())
    lines = _stdin_lines(sys.stdin)
    while True:
        get = asyncio.create_task(lines.get())
        await asyncio.wait({get, pump, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        if not get.done():
            get.cancel()
            break  # the connection is gone for good, or Ctrl-C
        line = get.result()
        if line is None or not await ui.handle(line):
            break
    interrupted.cancel()
    lost = pump.done() and client.closed_reason is not None
    await ui.finish(pump, wait_acks=not lost and not interrupted.done())
    if lost:
        print(f"* disconnected: {clean(client.closed_reason or '')}", file=sys.stderr)
        return 1
    return 0


async def run_interactive(client: AsyncClient, room: str) -> int:
    from prompt_toolkit import PromptSession, print_formatted_text
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
    from prompt_toolkit.patch_stdout import patch_stdout

    def out(line: Line) -> None:
        print_formatted_text(FormattedText(line))

    ui = Ui(client, room, out)
    keys = KeyBindings()

    @keys.add("c-c")
    def _leave(event: KeyPressEvent) -> None:
        # prompt_toolkit's own Ctrl-C raises KeyboardInterrupt inside the prompt's
        # task, which asyncio re-raises out of the loop with a traceback.
        event.app.exit(exception=EOFError)

    session: PromptSession[str] = PromptSession(erase_when_done=True, key_bindings=keys)

    def prompt() -> str:
        return clean(f"[{ui.view.room or '-'}] {ui.view.nick}> ")

    ui.note(f"connected to {client.host}:{client.port} as {clean(client.nick_name)}; "
            "/help for commands")
    lost = False
    # Ctrl-C while no prompt holds the terminal in raw mode (before the first,
    # between two) is a SIGINT, not a key: ours, for the whole run, so it leaves
    # too. prompt_toolkit's own handler would take it only while a prompt runs,
    # and one arriving as a prompt starts was lost (the client stayed).
    interrupted = asyncio.create_task(_on_ctrl_c().wait())
    with patch_stdout(raw=True):
        pump = asyncio.create_task(ui.pump())
        while True:
            ask = asyncio.create_task(session.prompt_async(prompt, handle_sigint=False))
            await asyncio.wait({ask, pump, interrupted}, return_when=asyncio.FIRST_COMPLETED)
            if not ask.done():
                ask.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ask
                lost = not interrupted.done()
                break
            try:
                line = ask.result()
            except (EOFError, KeyboardInterrupt):
                break
            if not await ui.handle(line):
                break
        interrupted.cancel()
        await ui.finish(pump, wait_acks=False)
    if lost:
        print(f"* disconnected: {clean(client.closed_reason or '')}", file=sys.stderr)
        return 1
    return 0


class NeedPassword(Exception):
    """The relay wants a password, none was given and there is no terminal to ask on."""


def ask_password(host: str, port: int) -> str | None:
    """The password typed on the controlling terminal, or None without one.

    /dev/tty, not stdin: in pipe mode stdin carries the messages.
    """
    try:
        with open("/dev/tty", "rb"):
            pass
    except OSError:
        return None
    try:
        return getpass.getpass(f"password for {host}:{port}: ") or None
    except EOFError:
        return None


async def _connect(args: argparse.Namespace) -> AsyncClient:
    """Connect; with no password given, ask for one on the terminal if the relay wants it.

    Raises what `connect` raises; a refused password as HandshakeError(auth_failed).
    """
    password = args.password or os.environ.get(PASSWORD_ENV) or None
    asked = 0
    while True:
        try:
            return await connect(
                args.host,
                args.port,
                args.nick,
                rooms=(args.room,),
                password=password,
                timeout=args.timeout,
                tls=tls_context(args),
                reconnect=True,
                transport=args.transport,
            )
        except HandshakeError as exc:
            if exc.code != "auth_failed" or (password and not asked) or asked >= PASSWORD_TRIES:
                raise
            if asked:
                print("wrong password", file=sys.stderr)
            password = ask_password(args.host, args.port)
            if password is None:
                if asked:
                    raise
                raise NeedPassword from None
            asked += 1


async def run(args: argparse.Namespace) -> int:
    try:
        client = await _connect(args)
    except (CannotConnect, HandshakeError, ConnectionClosed, TimeoutError, ValueError,
            NeedPassword) as exc:
        print(clean(_connect_error(args, exc)), file=sys.stderr)
        return 1
    if sys.stdin.isatty():
        return await run_interactive(client, args.room)
    return await run_pipe(client, args.room)


def _connect_error(args: argparse.Namespace, exc: BaseException) -> str:
    if isinstance(exc, NotTls):
        flags = " and ".join(f for f, on in (("--tls", args.tls), ("--ca", args.ca)) if on)
        return (f"cannot connect to {args.host}:{args.port}: this relay does not use TLS "
                f"({exc.how}); drop {flags}")
    if isinstance(exc, NeedPassword):
        return (f"{args.host}:{args.port} needs a password: set ${PASSWORD_ENV} (or give "
                "--password, which other local users can see)")
    if isinstance(exc, CannotConnect):
        return str(exc)
    if isinstance(exc, HandshakeError):
        return f"{args.host}:{args.port} refused us: {exc}"
    if isinstance(exc, ValueError):
        return f"bad argument: {exc}"
    return f"cannot connect to {args.host}:{args.port}: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.host is not None and args.port is None:
        parser.error("give PORT after HOST (the relay's banner shows it; its default is 8081)")
    try:
        if args.discover or args.host is None:
            from clients.discover import discover_or_pick

            code = discover_or_pick(args)
            if code is not None:
                return code
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0  # Ctrl-C before the loop took over SIGINT: leaving, not failing
    except BrokenPipeError:
        # Our reader went away (`chat-client ... | head`): nothing left to do.
        with contextlib.suppress(OSError):
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - silence the exit flush
        return 0


if __name__ == "__main__":
    sys.exit(main())
