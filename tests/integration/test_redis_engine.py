"""The Redis engine against a real redis-server we start (and stop by PID).

Lua sequencing (seq +1 per message, the stream as history, a new epoch when
the seq key is lost) and two relay hosts sharing one Redis (one order per
room, nicks unique across hosts, whispers across hosts).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.relayproc import RelayProcess

redis = pytest.importorskip("redis", reason="the redis client (pip install redis) is missing")
REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS is None, reason="redis-server missing: sh tests/ensure_apt.sh redis redis-server "
    "redis-server (make test does it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url() -> Iterator[str]:
    port = _free_port()
    assert REDIS is not None
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def _sequence(client: redis.Redis, room: str, bodies: list[bytes], floor: int = 0) -> list[int]:
    from relay.hub import redis_scripts as lua

    script = client.register_script(lua.SEQUENCE)
    res = script(keys=[lua.room_key(room, "seq"), lua.room_key(room, "epoch"),
                       lua.room_key(room, "log")],
                 args=[lua.room_key(room, "ch"), 1000, floor, 1_700_000_000_000, b"x",
                       *bodies])
    return [int(v) for v in res]


def test_lua_seq_counts_one_per_message_and_stream_is_history(redis_url: str) -> None:
    from relay.bus.wire import pack
    from relay.hub import redis_scripts as lua
    from relay.hub.redis_traffic import entry_body

    client = redis.Redis.from_url(redis_url)
    assert _sequence(client, "lobby", [pack({"t": "msg", "text": "a"})]) == [1, 1, 0]
    assert _sequence(client, "lobby", [pack({"t": "msg", "text": t}) for t in "bcd"])[0] == 2
    page = [entry_body(e) for e in client.xrange(lua.room_key("lobby", "log"), "3-0", "+")]
    assert [(b["seq"], b["text"]) for b in page] == [(3, "c"), (4, "d")]


def test_lua_lost_seq_key_starts_new_epoch_never_reusing_seqs(redis_url: str) -> None:
    from relay.bus.wire import pack
    from relay.hub import redis_scripts as lua

    client = redis.Redis.from_url(redis_url)
    _sequence(client, "r", [pack({"t": "msg"})] * 5)
    client.delete(lua.room_key("r", "seq"), lua.room_key("r", "log"))  # a failover lost it
    first, epoch, fresh = _sequence(client, "r", [pack({"t": "msg"})])
    assert fresh == 1 and epoch == 2
    assert first > 5  # the clock's floor: never a seq handed out before
    client.delete(lua.room_key("r", "seq"))
    first2, _, _ = _sequence(client, "r", [pack({"t": "msg"})], floor=3)
    assert first2 == first + 1  # continues from the stream's newest entry


def _text(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(0.2)
    return s


def _until(s: socket.socket, want: str, timeout: float = 10.0) -> str:
    buf, deadline = b"", time.monotonic() + timeout
    while want.encode() not in buf:
        assert time.monotonic() < deadline, f"no {want!r} in {buf.decode(errors='replace')!r}"
        try:
            buf += s.recv(65536)
        except TimeoutError:
            pass
    return buf.decode()


def _said(s: socket.socket, n: int, timeout: float = 15.0) -> list[str]:
    """The first `n` chat lines a text client gets, in the order it got them."""
    buf, deadline = b"", time.monotonic() + timeout
    while True:
        said = [line.split("> ", 1)[1] for line in buf.decode().splitlines() if "> m" in line]
        if len(said) >= n:
            return said[:n]
        assert time.monotonic() < deadline, f"only {said} arrived"
        try:
            buf += s.recv(65536)
        except TimeoutError:
            pass


def test_two_hosts_share_a_room_in_one_order_with_unique_nicks(redis_url: str) -> None:
    args = ["--engine", redis_url, "--no-mdns"]
    with RelayProcess(workers=1, args=args).start() as one, \
            RelayProcess(workers=1, args=args).start() as two:
        a, b = _text(one.port), _text(two.port)
        _until(a, "welcome")
        _until(b, "welcome")
        a.sendall(b"/nick alice\n")
        _until(a, "known as alice")
        b.sendall(b"/nick alice\n")
        _until(b, "alice is taken")  # unique across hosts
        b.sendall(b"/nick bob\n")
        _until(b, "known as bob")
        c, d = _text(one.port), _text(two.port)  # one watcher on each host
        _until(c, "welcome")
        _until(d, "welcome")
        for i in range(20):
            (a if i % 2 else b).sendall(f"m{i}\n".encode())
        views = [_said(s, 20) for s in (c, d)]
        assert sorted(views[0], key=lambda m: int(m[1:])) == [f"m{i}" for i in range(20)]
        assert views[0] == views[1]  # one order on every host
        b.sendall(b"/msg alice psst\n")
        _until(a, "*bob* psst")  # a whisper crosses hosts
        for s in (a, b, c, d):
            s.close()


def test_room_names_hold_no_braces_so_the_hash_tag_is_the_room() -> None:
    from relay.hub import redis_scripts as lua
    from transports.validate import is_valid_room

    for bad in ("a{b", "a}b", "{lobby}", "x{}"):
        assert not is_valid_room(bad)  # a brace would move or split the hash tag
    name = "A-z_0.9#" + "x" * 56
    assert is_valid_room(name)
    key = lua.room_key(name, "seq")
    start = key.index("{")
    assert key[start + 1:key.index("}", start)] == name
