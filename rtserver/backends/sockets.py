"""Plain non-blocking sockets: reading what one holds, and closing politely (listener and
connection actors)."""

from __future__ import annotations

import socket

import trio


def recv_nowait(sock: socket.socket, max_bytes: int, flags: int = 0) -> bytes | None:
    """What a readable socket holds: None when it had nothing after all; ``b""`` when the
    peer is gone (EOF, or a broken connection)."""
    try:
        return sock.recv(max_bytes, flags)
    except BlockingIOError:
        return None
    except OSError:
        return b""


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
