"""SSE stream actor: one ``GET /{ns}/sse`` response, for as long as it lasts.

Contract
--------
Mailbox
    None from the client: it only reads. Its socket is watched for EOF (anything it sends
    is ignored) by the parking (``actors.parking``), where the stream waits without a task
    between its keep-alives. Commands for its session arrive through its command room
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
    Never on its socket: it parks until the socket is readable, its next keep-alive or
    its token's expiry. On the bus while reading history for a resume, and on its own
    outbound queue draining between history pages. Never on other connections.
"""

from __future__ import annotations


import trio

from actors.connection import CONNECTION_LOST, HttpSession
from actors.websocket import CLOSE_TIMEOUT_S
from actors.writer import OutboundQueue
from protocol.errors import CloseCode, Disconnect
from protocol.httpstreams import SSE_KEEPALIVE, sse_close, sse_head
from protocol.wires import SSE_JSON
from rtserver.backends.sockets import Sock


class SseStream(HttpSession):
    transport = "sse"
    __slots__ = ("_head", "_keepalive_at")

    def __init__(self, sock: Sock, *, response_headers: list[tuple[bytes, bytes]] = (), **session) -> None:
        """``response_headers``: more headers of the response (CORS)."""
        super().__init__(sock, wire=SSE_JSON, **session)
        cfg = self._s.config.connection
        self.out = OutboundQueue(sock, self._s.writer, max_frames=cfg.outbound_max_frames,
                                 max_bytes=cfg.outbound_max_bytes, owner=self)
        self._head = sse_head(cfg.sse_retry_ms, [*response_headers, (b"connection", b"close")])
        self._keepalive_at = trio.current_time() + cfg.sse_keepalive_s

    async def _start(self) -> None:
        self.out.push(self._head)
        await super()._start()

    @property
    def deadline(self) -> float:
        """Its token's expiry, or its next keep-alive if sooner (it runs then, parked or not)."""
        return min(self._deadline, self._keepalive_at)

    async def _serve(self) -> bool:
        now = trio.current_time()
        if now >= self._keepalive_at:
            if not self.out.frames:
                self.out.push(SSE_KEEPALIVE)
            self._keepalive_at = now + self._s.config.connection.sse_keepalive_s
        return self._receive(4096) != b""  # anything a client sends is ignored; EOF ends it

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
