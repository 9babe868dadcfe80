"""Which codec serves which dialect: the one place a new dialect is plugged in."""

from __future__ import annotations

from transports.codec import ServerCodec
from transports.native import NativeServerCodec

SERVER_CODECS: dict[str, type[ServerCodec]] = {
    "native": NativeServerCodec,
}


def _register_optional() -> None:
    # Dialects live in their own modules; a missing one answers "not supported".
    try:
        from transports.text import TextServerCodec

        SERVER_CODECS["text"] = TextServerCodec
    except ImportError:
        pass
    try:
        from transports.websocket import WebSocketServerCodec

        SERVER_CODECS["ws"] = WebSocketServerCodec
    except ImportError:
        pass
    try:
        from transports.irc import IrcServerCodec

        SERVER_CODECS["irc"] = IrcServerCodec
    except ImportError:
        pass


_register_optional()
