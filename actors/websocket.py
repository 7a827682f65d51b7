"""WebSocket connection actor: one WebSocket client, from its first frame to its close.

Contract
--------
Mailbox
    The client's socket, read with non-blocking ``recv`` and parsed by
    ``protocol.wsreader`` while it has something to say; read dry, the connection gives up
    its task and waits in the parking (``actors.parking``) until the socket is readable
    again, so an idle connection costs no task. Inbound commands are processed one at a time: a client that sends faster than
    it is served waits in its own TCP window. ``close(disconnect)`` may be called by
    anyone (drain, the writer, a room): it cancels this actor's busy spell, or wakes it
    from the parking to end.
Owns
    Its socket, its frame reader, its outbound queue (frames and bytes budget), its room
    memberships, its inbound token bucket and its token's expiry (the scope deadline).
Replies
    ``hello`` first; ``ack`` / ``error`` to ``sub``, ``unsub`` and ``emit``; ``pong`` to
    ``ping``; events of its rooms as ``evt`` frames (queued by the rooms, written by the
    writer actor).
Failure
    Ends on the client's close or EOF, on a broken socket, or on a disconnect: slow
    consumer (outbound budget exceeded), rate limited (sustained refusals), token expired,
    idle timeout, message too big, protocol error, draining. An unexpected exception is
    logged and closes this connection with 1011; it never ends the node. Its ``finally``
    leaves its rooms, sends the close frame with the code (best effort, bounded) and
    closes the socket.
Blocking
    Never on its socket: it parks instead (its deadline, the token's expiry or the idle
    timeout, is kept by the parking meanwhile). On the bus while reading history for a
    resume (and on its own outbound queue draining between history pages). Never on
    other connections.
"""

from __future__ import annotations


import trio

from actors.connection import CONNECTION_LOST, CommandConnection, ConnectionServices, Joining
from actors.writer import OutboundQueue
from protocol.catalog import Namespace
from protocol.cursors import Cursor
from protocol.errors import CloseCode, Disconnect, ReplyCode, ReplyError
from protocol.frames import Ack, ClientFrame, Emit, Ping, Pong
from protocol.session import Answer
from protocol.wires import Wire
from protocol.wsframes import close_frame, pong_frame
from protocol.wsreader import CloseFrame, FrameReader, Message, PingFrame, Violation
from rtserver.backends.auth import Claims
from rtserver.backends.sockets import Sock, half_close_and_wait_eof

#: Seconds the close handshake may take before the socket is closed anyway.
CLOSE_TIMEOUT_S = 2.0


async def close_websocket(sock: Sock, out: OutboundQueue, disconnect: Disconnect, *, peer_closed: bool) -> None:
    """Tell a WebSocket client ``disconnect`` (a close frame after whole frames; none when
    the connection is already lost), bounded by ``CLOSE_TIMEOUT_S``, and release the socket."""
    if disconnect is CloseCode.SLOW_CONSUMER:
        out.discard()
    if disconnect is not CONNECTION_LOST:
        out.push_final(close_frame(disconnect.code, disconnect.reason))
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            await out.wait_flushed()
            if not peer_closed:
                await half_close_and_wait_eof(sock)
    out.detach()
    trio.lowlevel.notify_closing(sock)
    sock.close()


class WebSocketConnection(CommandConnection):
    transport = "websocket"
    __slots__ = ("_reader",)

    def __init__(
        self,
        sock: Sock,
        *,
        services: ConnectionServices,
        claims: Claims,
        ns: Namespace,
        wire: Wire,
        session: str,
        since: Cursor | None = None,
        joining: Joining | None = None,
        received: bytes = b"",
    ) -> None:
        """``received``: what the client sent after its upgrade request, read first."""
        cfg = services.config.connection
        super().__init__(sock, services=services, claims=claims, ns=ns, wire=wire, session=session, since=since,
                         idle_s=cfg.idle_timeout_s, joining=joining)
        self._reader = FrameReader(services.config.server.max_inbound_message_bytes, received, deflate=wire.deflate)
        self.out = OutboundQueue(sock, services.writer, max_frames=cfg.outbound_max_frames,
                                 max_bytes=cfg.outbound_max_bytes, owner=self)

    async def _finish(self, disconnect: Disconnect) -> None:
        await close_websocket(self._sock, self.out, disconnect, peer_closed=self._peer_closed)

    # -- reading -----------------------------------------------------------------------
    async def _serve(self) -> bool:
        reader = self._reader
        chunk = self._s.config.connection.read_chunk_bytes
        data = b""  # first, what the reader may hold already
        while True:
            for event in reader.receive(data):
                if await self._on_ws_event(event):
                    return False
            data = self._receive(chunk)
            if data is None:
                return True  # read dry: it waits parked until the client sends more
            if not data:
                return False
            self._push_deadline()

    async def _on_ws_event(self, event: Message | PingFrame | CloseFrame | Violation) -> bool:
        """Handle what the client sent; True when the connection must end."""
        if type(event) is Message:
            await self._on_message(event.data)
            return self._disconnect is not None
        if type(event) is PingFrame:
            self.out.push(pong_frame(event.payload))
            return False
        if type(event) is Violation:
            self._log("protocol_error", error=event.detail)
            self._disconnect = self._disconnect or event.disconnect
            return True
        self._peer_closed = True
        self._disconnect = self._disconnect or Disconnect(event.code or 1000, "closed by client",
                                                          CloseCode.NORMAL.action)
        return True

    async def _on_message(self, data: bytes) -> None:
        if not self._within_rate():
            if self._disconnect is None:
                self._send_error(ReplyError(ReplyCode.RATE_LIMITED, "too many commands"), None)
            return
        try:
            frame = self._wire.codec.decode(data)
        except ReplyError as err:
            self._s.metrics.messages_in.labels("invalid").inc()
            self._refused(err, None)
            return
        await self._command(frame)

    # -- answers -----------------------------------------------------------------------
    def _done(self, frame: ClientFrame, answer: Answer | None = None) -> None:
        if isinstance(frame, Ping):
            self._send(Pong(ref=frame.ref))
        elif isinstance(frame, Emit):
            self._send(Ack(ref=frame.ref, room=frame.room, event=frame.event))
        elif answer is not None:
            self._send(Ack(ref=frame.ref, room=frame.room, recovered=answer.recovered, cursor=answer.cursor.encode()))
        else:
            self._send(Ack(ref=frame.ref, room=frame.room))

    def _refused(self, err: ReplyError, frame: ClientFrame | None) -> None:
        self._send_error(err, frame.ref if frame is not None else None)
