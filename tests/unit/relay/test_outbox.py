"""Outbox: order, scatter-gather flushing, and dropping without splitting a frame."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.worker.outbox import IOV_MAX, Outbox
from transports.native import FrameDecoder, frame

DONTWAIT = socket.MSG_DONTWAIT


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    yield a, b
    a.close()
    b.close()


def drain(sock: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = sock.recv(1 << 16, DONTWAIT)
        except BlockingIOError:
            return out
        out += chunk


def fill_kernel(sock: socket.socket) -> None:
    while True:
        try:
            sock.send(b"\x00" * 4096, DONTWAIT)
        except BlockingIOError:
            return


def test_flush_keeps_order_across_many_chunks(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    box = Outbox()
    frames = [frame({"t": "msg", "seq": i}) for i in range(IOV_MAX * 3)]
    for f in frames:
        box.append(f)
    got = b""
    while box:
        try:
            box.send_to(a, DONTWAIT)
        except BlockingIOError:
            pass
        got += drain(b)
    got += drain(b)
    assert got == b"".join(frames) and len(box) == 0


def test_drop_keeps_the_tail_of_a_partly_sent_frame(pair: tuple[socket.socket, socket.socket]
                                                    ) -> None:
    a, b = pair
    fill_kernel(a)
    drain(b)  # the receiver is now empty and the sender's buffer has room again
    big = frame({"t": "msg", "text": "x" * 50000})
    sent = a.send(big, DONTWAIT)
    assert 0 < sent < len(big)
    box = Outbox()
    box.append_after_partial_send(big, sent)
    box.append(frame({"t": "msg", "text": "dropped"}))
    dropped = box.drop_unsent()
    assert dropped == len(frame({"t": "msg", "text": "dropped"}))
    box.append(frame({"t": "error", "code": "slow_consumer"}))
    decoder = FrameDecoder(1 << 20)
    bodies = []
    while box:
        try:
            box.send_to(a, DONTWAIT)
        except BlockingIOError:
            pass
        bodies += decoder.feed(drain(b))
    bodies += decoder.feed(drain(b))
    assert [x["t"] for x in bodies] == ["msg", "error"]  # whole frames, nothing spliced


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=50),
       st.lists(st.integers(min_value=0, max_value=400), max_size=60))
def test_consume_accounts_every_byte(chunks: list[bytes], sends: list[int]) -> None:
    box = Outbox()
    for c in chunks:
        box.append(c)
    expected = b"".join(chunks)
    taken = 0
    for n in sends:
        n = min(n, len(box))
        box._consume(n)
        taken += n
        assert len(box) == len(expected) - taken
    rest = b"".join(bytes(c) for c in box._chunks)[box._head_sent:]
    assert rest == expected[taken:]
