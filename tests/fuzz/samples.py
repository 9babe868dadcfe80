"""Real inputs per dialect: the seeds every mutation starts from.

Random bytes alone rarely get past a decoder's first check (a length prefix,
an HTTP request line, IRC registration), so most fuzz inputs are these valid
conversations with a few bytes changed. Each seed is a whole client session
prefix: registration or handshake first, then the requests a real client sends.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Final

from websockets.frames import Frame, Opcode

from transports.native import frame, pack_body

# Small limits so the fuzzer reaches every bound in a few hundred bytes.
MAX_FRAME: Final = 512
MAX_TEXT: Final = 128

_REQUESTS: Final[list[dict[str, Any]]] = [
    {"t": "join", "room": "dev"},
    {"t": "say", "room": "lobby", "text": "hi there", "id": "m1"},
    {"t": "whisper", "to": "bob", "text": "psst", "id": 7},
    {"t": "nick", "nick": "alice2"},
    {"t": "who", "room": "lobby"},
    {"t": "history", "room": "lobby", "after": 3, "limit": 50},
    {"t": "part", "room": "dev"},
    {"t": "ping", "id": 1},
    {"t": "pong", "id": 1},
    {"t": "rooms"},
    {"t": "bye"},
]
_HELLO: Final = {"t": "hello", "v": 1, "nick": "alice", "rooms": ["lobby", "dev"],
                 "resume": {"lobby": 41}, "password": "pw"}


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# Values at and past the field bounds (transports/validate.py), for every dialect
# that carries bodies: mutations of these reach the range checks.
_EDGES: Final[list[dict[str, Any]]] = [
    {"t": "ping", "id": 2**63 - 1},
    {"t": "ping", "id": 2**64 - 1},
    {"t": "ping", "id": -(2**63)},
    {"t": "ping", "id": "i" * 65},
    {"t": "ping", "id": 1.5},
    {"t": "ping", "id": None},
    {"t": "ping", "id": _nested(40)},
    {"t": "say", "room": "lobby", "text": "x", "id": True},
    {"t": "history", "room": "lobby", "after": 2**63, "limit": 500},
    {"t": "history", "room": "lobby", "after": -1, "limit": 0},
    {"t": "hello", "v": 2**16, "nick": "alice", "resume": {"lobby": 2**63}},
    {"t": "ban", "nick": "bob", "minutes": 2**63},
]


def _native() -> list[bytes]:
    seeds = [frame(_HELLO) + b"".join(frame(r) for r in _REQUESTS)]
    seeds += [frame(_HELLO) + frame(r) for r in _REQUESTS]
    seeds += [
        struct.pack(">I", 0xFFFFFFFF) + b"\x81\xa1t\xa4ping",          # huge length
        struct.pack(">I", MAX_FRAME) + b"\x80" * 10,                 # at the bound, truncated
        struct.pack(">I", 3) + b"\xc1\xc1\xc1",                      # never-used msgpack bytes
        struct.pack(">I", 4) + pack_body({"t": 5})[:4],              # "t" not a string
        frame({"t": "say", "room": "lobby", "text": "x" * (MAX_TEXT + 1)}),
        frame({"t": "hello", "v": 1, "nick": "bad nick!"}),
        frame({"t": "frobnicate", "room": ["lobby"]}),
        b"\x00\x00",                                                 # half a length
    ]
    seeds += [frame(_HELLO) + frame(edge) for edge in _EDGES]
    return seeds


_LINES: Final = (
    "hello everyone\n",
    "/join dev\n",
    "/part\r\n",
    "/msg bob hi there\n",
    "/nick alice\n",
    "/who lobby\n",
    "/rooms\n",
    "/history lobby 3\n",
    "/help\n",
    "/ping\n",
    "//shrug\n",
    "/frob\n",
    "   \n",
    "/quit\n",
)


def _text() -> list[bytes]:
    seeds = ["".join(_LINES).encode()]
    seeds += [line.encode() for line in _LINES]
    seeds += [
        b"x" * (MAX_TEXT + 5) + b"\nafter\n",        # over the line limit
        b"x" * MAX_TEXT + b"\r\n",                   # at it
        b"\xff\xfe bad utf8\n\xed\xa0\x80 surrogate\n",
        "caf\u00e9 \u2603 \U0001f600\n".encode(),
        b"no newline at eof",
        b"/history lobby 9223372036854775807\n/history lobby 9223372036854775808\n",
        b"/history lobby 99999999999999999999999\n/history lobby " + b"9" * 100 + b"\n",
        b"/ban bob 99999999999999999999 spam\n/mute bob 527041 x\n",
    ]
    return seeds


_WS_KEY: Final = "dGhlIHNhbXBsZSBub25jZQ=="


def _ws_request(path: str = "/ws", protocol: str | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: relay.local", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {_WS_KEY}", "Sec-WebSocket-Version: 13"]
    if protocol:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _ws_frame(opcode: Opcode, payload: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, payload, fin=fin).serialize(mask=True)


def _ws() -> list[bytes]:
    def text(body: dict[str, Any]) -> bytes:
        return _ws_frame(Opcode.TEXT, json.dumps(body).encode())

    json_session = _ws_request() + text(_HELLO) + b"".join(text(r) for r in _REQUESTS)
    hello = json.dumps(_HELLO).encode()
    fragmented = (_ws_request() + _ws_frame(Opcode.TEXT, hello[:10], fin=False)
                  + _ws_frame(Opcode.PING, b"hb")
                  + _ws_frame(Opcode.CONT, hello[10:]))
    msgpack_session = (_ws_request(protocol="chat-relay.v1.msgpack")
                       + _ws_frame(Opcode.BINARY, pack_body(_HELLO))
                       + b"".join(_ws_frame(Opcode.BINARY, pack_body(r)) for r in _REQUESTS))
    return [
        json_session,
        fragmented,
        msgpack_session,
        _ws_request() + _ws_frame(Opcode.TEXT, b'{"t":"say","text":"\\ud800"}'),
        _ws_request() + _ws_frame(Opcode.TEXT, b"[" * 200 + b"]" * 200),
        _ws_request() + _ws_frame(Opcode.TEXT, b'{"t":"ping","id":18446744073709551616}'),
        _ws_request() + _ws_frame(Opcode.TEXT, b'{"t":"ping","id":NaN,"x":"[[[["}'),
        _ws_request() + b"".join(_ws_frame(Opcode.TEXT, json.dumps(e).encode()) for e in _EDGES),
        (_ws_request(protocol="chat-relay.v1.msgpack")
         + b"".join(_ws_frame(Opcode.BINARY, pack_body(e)) for e in _EDGES)),
        _ws_request() + _ws_frame(Opcode.TEXT, b"x" * (MAX_FRAME + 1)),
        _ws_request() + _ws_frame(Opcode.BINARY, b"\x81\xa1t\xa5hello"),
        _ws_request() + _ws_frame(Opcode.CLOSE, struct.pack(">H", 1000) + b"bye"),
        _ws_request(protocol="nonsense.v9"),
        b"GET / HTTP/1.1\r\nHost: relay.local\r\n\r\n",
        b"GET /app.js HTTP/1.1\r\nHost: x\r\n\r\nGET /ws HTTP/1.1\r\n\r\n",
        b"GET /nope HTTP/1.0\r\n\r\n",
    ]


_IRC: Final = (
    "CAP LS 302\r\n",
    "PASS secret\r\n",
    "NICK alice\r\n",
    "USER alice 0 * :Alice Liddell\r\n",
    "CAP END\r\n",
    "JOIN #lobby,#dev\r\n",
    "PRIVMSG #lobby :hello there\r\n",
    "PRIVMSG bob :\x01ACTION waves\x01\r\n",
    "NOTICE #dev :quiet\r\n",
    "NAMES #lobby\r\n",
    "WHO #dev\r\n",
    "LIST\r\n",
    "TOPIC #lobby\r\n",
    "MODE #lobby +i\r\n",
    "WHOIS bob\r\n",
    "PING :token\r\n",
    "PONG :relay\r\n",
    "NICK alice_\r\n",
    "PART #dev :later\r\n",
    "@time=2024-01-01T00:00:00Z :alice!a@h PRIVMSG #lobby :tagged\r\n",
    "QUIT :bye\r\n",
)


def _irc() -> list[bytes]:
    whole = "".join(_IRC).encode()
    registration = "".join(_IRC[:5]).encode()
    seeds = [whole, registration]
    seeds += [registration + line.encode() for line in _IRC[5:]]
    seeds += [
        registration + b"PRIVMSG #lobby :" + b"x" * (MAX_TEXT + 600) + b"\r\nPING x\r\n",
        b"NICK \xff\xfe\r\nUSER a 0 * :a\r\n",
        b"NICK a\nUSER a 0 * a\nJOIN lobby\nJOIN #" + b"x" * 70 + b"\n",
        b"USER\r\nNICK\r\nJOIN\r\n:::\r\n\r\n",
        registration + b"PING :" + b"t" * 64 + b"\r\nPING :" + b"t" * 65 + b"\r\n",
    ]
    return seeds


SEEDS: Final[dict[str, list[bytes]]] = {
    "native": _native(),
    "text": _text(),
    "ws": _ws(),
    "irc": _irc(),
}

# Relay -> client bodies, encoded between inputs as the bus thread would: they
# change codec state (nick, rooms, pending IRC requests) that later input meets.
RELAY_BODIES: Final[list[dict[str, Any]]] = [
    {"t": "welcome", "v": 1, "nick": "alice", "server": "chat-relay/fuzz"},
    {"t": "joined", "room": "lobby", "members": ["alice", "bob"], "seq": 3},
    {"t": "joined", "room": "dev", "members": ["alice"], "seq": 0},
    {"t": "msg", "room": "lobby", "seq": 4, "ts": 1, "from": "bob", "text": "hi\r\nPRIVMSG x"},
    {"t": "presence", "room": "lobby", "nick": "bob", "event": "nick", "new": "robert"},
    {"t": "members", "room": "lobby", "members": ["alice", "robert"]},
    {"t": "history", "room": "lobby", "more": False, "messages": [
        {"t": "msg", "room": "lobby", "seq": 1, "ts": 1, "from": "bob", "text": "old"}]},
    {"t": "whisper", "from": "bob", "to": "alice", "text": "psst", "ts": 2},
    {"t": "renamed", "nick": "alice2"},
    {"t": "parted", "room": "dev"},
    {"t": "pong", "id": 1},
    {"t": "ping", "id": 1},
    {"t": "rooms", "rooms": {"lobby": 2, "dev": 1}},
    {"t": "notice", "text": "maintenance at noon"},
    {"t": "error", "code": "not_in_room", "text": "you are not in dev", "ref": "who",
     "room": "dev"},
    {"t": "error", "code": "nick_taken", "text": "taken", "ref": "nick", "nick": "bob"},
    {"t": "error", "code": "no_such_nick", "text": "no one", "ref": "whisper", "nick": "zed"},
    {"t": "error", "code": "rate_limited", "text": "slow down", "ref": "say"},
    {"t": "error", "code": "history_gap", "text": "gone", "ref": "hello", "room": "lobby"},
]
