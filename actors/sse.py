"""SSE stream actor: one ``GET /{ns}/sse`` response, for as long as it lasts.

Contract
--------
Mailbox
    None from the client: it only reads. Its socket is watched for EOF (anything it sends
    is ignored). Commands for its session arrive through its command room
    (``session:{id}``, forwarded from ``POST /{ns}/commands`` on any node) and are applied
    without waiting. ``close(disconnect)`` may be called by anyone.
Owns
    Its socket (the response: a head, then chunks), its outbound queue (frames and bytes
    budget, flushed by the writer actor like a WebSocket's), its rooms (the token's own and
    those of ``?rooms=``, fixed for the stream's life: changing them means reopening with
    the last cursor) and its token's expiry.
Replies
    The ``retry:`` hint, the ``hello`` frame (its ``id:`` is the position the stream starts
    at), then the events of its rooms, each an SSE message whose ``id:`` is its cursor
    (ephemeral events have none), all encoded once per broadcast; a ``: keep-alive``
    comment after ``connection.sse_keepalive_s`` without a write.
Failure
    Ends on EOF, a broken socket, or a disconnect (slow consumer, token expired, draining,
    a bus failure at the start); the disconnect is sent as ``event: close`` with its code
    and action, then the last chunk, and the socket is closed. A bug ends this stream with
    1011, never the node.
Blocking
    On its socket's readability (bounded by the keep-alive interval); on the bus while
    reading history for a resume, and on its own outbound queue draining between history
    pages. Never on other connections.
"""

from __future__ import annotations

import socket

import trio

from actors.connection import CONNECTION_LOST, HttpSession
from actors.websocket import CLOSE_TIMEOUT_S
from actors.writer import OutboundQueue
from protocol.errors import CloseCode, Disconnect
from protocol.httpstreams import SSE_KEEPALIVE, sse_close, sse_head
from protocol.wires import SSE_JSON


class SseStream(HttpSession):
    transport = "sse"
    __slots__ = ("_head",)

    def __init__(self, sock: socket.socket, *, response_headers: list[tuple[bytes, bytes]] = (), **session) -> None:
        """``response_headers``: more headers of the response (CORS)."""
        super().__init__(sock, wire=SSE_JSON, **session)
        cfg = self._s.config.connection
        self.out = OutboundQueue(sock, self._s.writer, max_frames=cfg.outbound_max_frames,
                                 max_bytes=cfg.outbound_max_bytes, owner=self)
        self._head = sse_head(cfg.sse_retry_ms, [*response_headers, (b"connection", b"close")])

    async def _start(self) -> None:
        self.out.push(self._head)
        await super()._start()

    async def _serve(self) -> None:
        sock, out = self._sock, self.out
        keepalive_s = self._s.config.connection.sse_keepalive_s
        while True:
            with trio.move_on_after(keepalive_s) as idle:
                await trio.lowlevel.wait_readable(sock)
            if idle.cancelled_caught:
                if not out.frames:
                    out.push(SSE_KEEPALIVE)
                continue
            if self._receive(4096) == b"":  # anything else a client sends is ignored
                return

    async def _finish(self, disconnect: Disconnect) -> None:
        out, sock = self.out, self._sock
        if disconnect is CloseCode.SLOW_CONSUMER:
            out.discard()
        if disconnect is not CONNECTION_LOST:
            out.push_final(sse_close(disconnect))
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await out.wait_flushed()
        out.detach()
        trio.lowlevel.notify_closing(sock)
        sock.close()
