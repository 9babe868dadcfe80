"""The three inputs that killed a relay process (issue 19), against a real relay.

Each used to reach msgpack on the way to or from the hub and take a process
down with it: a 23-digit number typed in the text dialect and an id past 64
bits in WebSocket JSON (OverflowError in the worker), and a ping whose id
nests 1,000 lists deep (the hub's reply is one level deeper still). Now each
costs its sender one error, the connection stays, and no process changes.
"""

from __future__ import annotations

import json

from websockets.sync.client import connect

from tests.relayproc import UNIT, RelayProcess
from tests.wire import NativePeer, TextPeer


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def _ws_expect(ws: object, t: str) -> dict[str, object]:
    """The next message of type `t` (others skipped), within the deadline."""
    for _ in range(20):
        body = json.loads(ws.recv(timeout=5 * UNIT))  # type: ignore[attr-defined]
        if body["t"] == t:
            return body  # type: ignore[no-any-return]
    raise AssertionError(f"no {t} in 20 messages")


def test_the_three_attacks_cost_only_their_senders(relay: RelayProcess) -> None:
    workers, hub = relay.worker_pids(), relay.hub_pid()

    text = TextPeer(relay.port)
    text.expect_text("welcome")
    text.send_line("/history lobby 99999999999999999999999")
    assert "at most 19 digits" in text.expect_text("* error:")
    text.send_line("/ping")
    text.expect_text("* pong")

    with connect(f"ws://127.0.0.1:{relay.port}/ws", open_timeout=5 * UNIT,
                 compression=None) as ws:
        ws.send(json.dumps({"t": "hello", "v": 1, "nick": "wsbad", "rooms": ["lobby"]}))
        _ws_expect(ws, "welcome")
        ws.send('{"t":"ping","id":18446744073709551616}')
        error = _ws_expect(ws, "error")
        assert (error["code"], error["ref"]) == ("bad_field", "ping")
        ws.send('{"t":"ping","id":-9223372036854775808}')
        assert _ws_expect(ws, "pong")["id"] == -(2**63)

    native = NativePeer.joined(relay.port, "deep")
    native.send({"t": "ping", "id": _nested(1_000)})
    native.expect_error("bad_frame")
    native.send({"t": "ping", "id": "x" * 64})
    assert native.expect(lambda b: b.get("t") == "pong")["id"] == "x" * 64

    assert (relay.worker_pids(), relay.hub_pid()) == (workers, hub)
