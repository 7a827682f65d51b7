"""Closing plain non-blocking sockets politely (listener and connection actor)."""

from __future__ import annotations

import socket

import trio


async def half_close_and_wait_eof(sock: socket.socket) -> None:
    """Half-close, then read and discard until the peer closes its side.

    Closing a socket with unread input resets the connection, and a reset can destroy the
    last frames we sent (a close frame, a refusal) before the peer reads them. Bound the
    wait with a cancel scope.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            if not sock.recv(65536):
                return
        except BlockingIOError:
            continue
        except OSError:
            return
