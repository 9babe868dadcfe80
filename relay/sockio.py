"""Waiting on client sockets without Python socket timeouts.

A Python socket with a timeout is non-blocking underneath, and its send()
first *waits* for writability up to that timeout, MSG_DONTWAIT or not. The bus
thread must never wait on a client, so client sockets stay in blocking mode
and readers wait for input here instead.
"""

from __future__ import annotations

import select
import socket


def wait_readable(sock: socket.socket, timeout: float) -> bool:
    """True when `sock` has input (or EOF/error) within `timeout` seconds."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(max(0, int(timeout * 1000))))
