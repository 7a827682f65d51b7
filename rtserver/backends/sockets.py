"""Non-blocking sockets, plain or TLS (``rtserver.backends.tls.TlsSocket``): reading what
one holds, waiting for more, writing all of an answer, and closing politely (listener and
connection actors)."""

from __future__ import annotations

import socket

import trio

from rtserver.backends.tls import TlsSocket

#: A connection's socket: plain, or TLS over a plain one.
Sock = socket.socket | TlsSocket


def recv_nowait(sock: Sock, max_bytes: int, flags: int = 0) -> bytes | None:
    """What a readable socket holds: None when it had nothing after all; ``b""`` when the
    peer is gone (EOF, or a broken connection)."""
    try:
        return sock.recv(max_bytes, flags)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def buffered(sock: Sock) -> bool:
    """Whether ``recv`` may have something though the socket is not readable (a TLS
    socket holding records already read)."""
    return type(sock) is TlsSocket and sock.buffered


async def wait_readable(sock: Sock) -> None:
    """Until ``recv`` may have something: the socket is readable, or it holds bytes
    already read (then at once)."""
    if buffered(sock):
        await trio.lowlevel.checkpoint()
    else:
        await trio.lowlevel.wait_readable(sock)


def unsent(sock: Sock) -> int:
    """Bytes a socket accepted that are not on the wire yet (a TLS socket's records)."""
    return sock.unsent if type(sock) is TlsSocket else 0


async def send_all(sock: Sock, data: bytes | memoryview) -> bool:
    """Write all of ``data``, onto the wire (bound it with a cancel scope); False if the
    socket broke."""
    view = memoryview(data)
    try:
        while view:
            try:
                view = view[sock.send(view):]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
        while unsent(sock):
            try:
                sock.flush()
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
    except OSError:
        return False
    return True


async def half_close_and_wait_eof(sock: Sock) -> None:
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
        await wait_readable(sock)
        try:
            if not sock.recv(65536):
                return
        except BlockingIOError:
            continue
        except OSError:
            return
