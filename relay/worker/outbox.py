"""A client's bounded outbox: whole chunks, in order, flushed with scatter-gather.

Every chunk put here is a run of whole frames (or lines), so chunk boundaries
are message boundaries. That is what lets a slow consumer's queue be dropped
safely: only the unsent tail of a chunk the kernel already took part of must
stay, or the peer would read half a frame followed by the next one.
"""

from __future__ import annotations

import socket
from collections import deque

IOV_MAX = 512  # buffers per sendmsg(); Linux allows 1024


class Outbox:
    def __init__(self) -> None:
        self._chunks: deque[memoryview] = deque()
        self._size = 0
        self._head_sent = 0  # bytes of _chunks[0] already in the kernel

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def append(self, data: bytes | memoryview) -> None:
        if data:
            view = memoryview(data)
            self._chunks.append(view)
            self._size += len(view)

    def append_after_partial_send(self, data: bytes, sent: int) -> None:
        """Queue `data` of which the kernel already took `sent` bytes (outbox empty)."""
        assert not self._chunks
        self._chunks.append(memoryview(data))
        self._head_sent = sent
        self._size = len(data) - sent

    def drop_unsent(self) -> int:
        """Drop every queued chunk except the tail of a partially sent one.

        Returns:
            How many bytes were dropped.
        """
        keep: list[memoryview] = []
        if self._head_sent and self._chunks:
            keep.append(self._chunks[0][self._head_sent:])
        dropped = self._size - sum(len(k) for k in keep)
        self._chunks = deque(keep)
        self._size -= dropped
        self._head_sent = 0
        return dropped

    def send_to(self, sock: socket.socket, flags: int) -> int:
        """Send as much as the kernel takes now, in one sendmsg(); returns bytes sent.

        Raises:
            BlockingIOError: the kernel buffer is full.
            OSError: the connection is broken.
        """
        if not self._chunks:
            return 0
        buffers = []
        for i, chunk in enumerate(self._chunks):
            if i == IOV_MAX:
                break
            buffers.append(chunk[self._head_sent:] if i == 0 else chunk)
        sent = sock.sendmsg(buffers, (), flags)
        self._consume(sent)
        return sent

    def _consume(self, sent: int) -> None:
        self._size -= sent
        while sent:
            head = self._chunks[0]
            left = len(head) - self._head_sent
            if sent < left:
                self._head_sent += sent
                return
            sent -= left
            self._chunks.popleft()
            self._head_sent = 0

    def clear(self) -> None:
        self._chunks.clear()
        self._size = 0
        self._head_sent = 0
