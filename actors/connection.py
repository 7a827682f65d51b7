"""Connection actor: one WebSocket client, from its first frame to its close.

Contract
--------
Mailbox
    The client's socket (read with ``wait_readable`` + non-blocking ``recv``, parsed by
    wsproto), so inbound commands are processed one at a time: a client that sends faster
    than it is served waits in its own TCP window. ``close(disconnect)`` may be called by
    anyone (drain, the writer, a room) and only cancels this actor's scope.
Owns
    Its socket, its wsproto state, its outbound queue (frames and bytes budget), its room
    memberships, its inbound token bucket and its token's expiry (the scope deadline).
Replies
    ``ack`` / ``error`` to ``sub``, ``unsub`` and ``emit``; ``pong`` to ``ping``; events of
    its rooms as ``evt`` frames (queued by the rooms, written by the writer actor).
Failure
    Ends on the client's close or EOF, on a broken socket, or on a disconnect: slow
    consumer (outbound budget exceeded), rate limited (sustained refusals), token expired,
    idle timeout, message too big, protocol error, draining. An unexpected exception is
    logged and closes this connection with 1011; it never ends the node. Its ``finally`` leaves its rooms, sends the
    close frame with the code (best effort, bounded) and closes the socket.
Blocking
    On its socket's readability; on the bus while reading history for a resume (and on its
    own outbound queue draining between history pages). Never on other connections.
"""

from __future__ import annotations

import math
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
import trio
import wsproto.connection
import wsproto.events as ws_events

from actors.presence import Presence
from actors.typing import Typing
from actors.registry import Registry
from actors.room import Promote, Room
from actors.writer import OutboundQueue, Writer
from protocol.catalog import Catalog, Namespace
from protocol.cursors import Cursor, shard_of
from protocol.envelope import Inbound, StoredEvent
from protocol.errors import CloseCode, Disconnect, ReplyCode, ReplyError
from protocol.frames import Ack, Emit, Evt, Hello, Ping, Pong, ServerFrame, Sub, Unsub, error_frame
from protocol.presence import PresenceState
from protocol.rooms import RoomKind, parse_room, room_key
from protocol.wires import Wire
from protocol.wsframes import close_frame
from rtserver.auth import Claims, authorize_room, auto_rooms
from rtserver.bus import Bus, RoomHistory, read_rooms
from rtserver.config import Config
from rtserver.metrics import Metrics
from rtserver.schedules import ScheduleStore
from rtserver.sockets import half_close_and_wait_eof

#: Seconds the close handshake may take before the socket is closed anyway.
CLOSE_TIMEOUT_S = 2.0
#: Presence switches a staff client may emit.
_SWITCHES = {"presence:online": PresenceState.ONLINE, "presence:away": PresenceState.AWAY}
#: Typing indicators a client may emit in a thread it joined (True: typing).
_TYPING = {"typing:start": True, "typing:stop": False}
#: Client events handed to the backbone on its inbound stream (docs/protocol.md).
HANDED_TO_BACKBONE = frozenset({"mark_alert_read"})
#: Not a close frame: the TCP connection ended without one (never sent, only logged).
CONNECTION_LOST = Disconnect(1006, "connection lost", CloseCode.GOING_AWAY.action)


@dataclass(frozen=True, slots=True)
class RoomSnapshot:
    """What a room hands a new subscriber first: a frame, and for a record of durable
    events the cursor up to which it reflects every event and which later events it
    already reflects."""

    frame: Evt
    cursor: Cursor | None = None
    covers: Callable[[StoredEvent], bool] = lambda event: False


def _snapshot_id() -> str:
    """A fresh id for a snapshot frame (clients drop repeated ids)."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class ConnectionServices:
    """What a connection needs from its node."""

    config: Config
    bus: Bus
    registry: Registry
    writer: Writer
    metrics: Metrics
    catalog: Catalog
    #: The node's open connections (for draining); each connection adds and removes itself.
    connections: set["Connection"]
    presence: Presence
    typing: Typing
    schedules: ScheduleStore


class TokenBucket:
    """Inbound rate limit: ``rate`` tokens per second, at most ``burst`` saved."""

    __slots__ = ("rate", "burst", "tokens", "stamp", "refused_in_a_row")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = trio.current_time()
        self.refused_in_a_row = 0

    def take(self) -> bool:
        now = trio.current_time()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.refused_in_a_row = 0
            return True
        self.refused_in_a_row += 1
        return False


log = structlog.get_logger("rtserver.connection")


class Connection:
    __slots__ = (
        "id", "session", "claims", "ns", "out", "_sock", "_ws", "_s", "_wire", "_since",
        "_bucket", "_rooms", "_scope", "_disconnect", "_peer_closed", "_partial",
        "_partial_size", "_expires_at", "_present", "_typed",
    )
    _next_id = 0

    def __init__(
        self,
        sock: socket.socket,
        ws: wsproto.connection.Connection,
        *,
        services: ConnectionServices,
        claims: Claims,
        ns: Namespace,
        wire: Wire,
        session: str,
        since: Cursor | None = None,
    ) -> None:
        Connection._next_id += 1
        self.id = Connection._next_id
        self.session = session
        self.claims = claims
        self.ns = ns
        self._sock = sock
        self._ws = ws
        self._s = services
        self._wire = wire
        self._since = since
        cfg = services.config.connection
        self._bucket = TokenBucket(cfg.inbound_rate, cfg.inbound_burst)
        self._rooms: dict[str, Room] = {}  # room name -> room
        self._scope = trio.CancelScope()
        self._expires_at = math.inf  # trio time of the token's exp
        self._disconnect: Disconnect | None = None
        self._peer_closed = False
        self._partial: list[bytes | str] | None = None  # a message arriving in fragments
        self._partial_size = 0
        self._present = False  # tracked by the presence actor
        self._typed = False  # has typed: the typing actor is told when it closes
        self.out = OutboundQueue(
            sock,
            services.writer,
            max_frames=cfg.outbound_max_frames,
            max_bytes=cfg.outbound_max_bytes,
            owner=self,
        )

    # -- control from outside ------------------------------------------------------------
    def close(self, disconnect: Disconnect) -> None:
        """End this connection with ``disconnect`` (the first reason given wins)."""
        if self._disconnect is None:
            self._disconnect = disconnect
        self._scope.cancel()

    def _push_deadline(self) -> None:
        """One deadline for the token's expiry and the idle timeout (no scope per timer)."""
        idle = self._s.config.connection.idle_timeout_s or math.inf
        self._scope.deadline = min(self._expires_at, trio.current_time() + idle)

    def slow_consumer(self) -> None:
        self.close(CloseCode.SLOW_CONSUMER)

    def connection_lost(self) -> None:
        self.close(CONNECTION_LOST)

    # -- the actor ---------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        metrics = self._s.metrics
        metrics.connections.labels(self.ns.value, "websocket").inc()
        self._s.connections.add(self)
        self._log("connect", wire=self._wire.name)
        try:
            with self._scope:
                if self.claims.exp is not None:
                    self._expires_at = trio.current_time() + max(0.0, self.claims.exp - time.time())
                self._push_deadline()
                task_status.started()
                try:
                    await self._start()
                    await self._read_loop()
                except ReplyError as err:  # only the hello's bus calls can raise one here
                    self._log("start_failed", error=err.message)
                    self._disconnect = CloseCode.TRY_AGAIN_LATER if err.temporary else CloseCode.INTERNAL_ERROR
                except Exception:
                    # A bug ends this connection, not the node.
                    log.exception("connection_failed", session=self.session)
                    self._disconnect = CloseCode.INTERNAL_ERROR
            if self._disconnect is None and self._scope.cancelled_caught:
                expired = trio.current_time() >= self._expires_at
                self._disconnect = CloseCode.TOKEN_EXPIRED if expired else CloseCode.IDLE_TIMEOUT
        finally:
            self._s.connections.discard(self)
            for room in self._rooms.values():
                room.remove(self.session)
            self._rooms.clear()
            if self._present or self._typed:
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                    if self._present:
                        await self._s.presence.disconnected(self.id)
                    if self._typed:
                        await self._s.typing.gone(self.session)
            disconnect = self._disconnect or CloseCode.NORMAL
            metrics.connections.labels(self.ns.value, "websocket").dec()
            metrics.disconnects.labels(disconnect.reason).inc()
            self._log("disconnect", code=disconnect.code, reason=disconnect.reason,
                      by_client=self._peer_closed)
            with trio.CancelScope(shield=True):
                await self._close_socket(disconnect)

    async def _close_socket(self, disconnect: Disconnect) -> None:
        out, sock = self.out, self._sock
        if disconnect is CloseCode.SLOW_CONSUMER:
            out.discard()
        if disconnect is not CONNECTION_LOST:
            out.push_final(close_frame(disconnect.code, disconnect.reason))
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await out.wait_flushed()
                if not self._peer_closed:
                    await half_close_and_wait_eof(sock)
        out.detach()
        trio.lowlevel.notify_closing(sock)
        sock.close()

    async def _start(self) -> None:
        names = auto_rooms(self.claims, self.ns)

        def hello(recovered: bool | None, cursor: Cursor) -> None:
            self._send(Hello(
                session=self.session,
                rooms=names,
                heartbeat_s=self._s.config.connection.heartbeat_s,
                ns=self.ns.value,
                user=self.claims.user,
                expires_at=self.claims.exp,
                recovered=recovered,
                cursor=cursor.encode(),
            ))

        await self._join(names, self._since, hello)
        if self.ns is Namespace.HUB and self.claims.presence_groups:
            self._present = True
            await self._s.presence.connected(self.id, self.claims.tenant, self.claims.user,
                                             self.claims.presence_groups)

    @property
    def _shard(self) -> int:
        return shard_of(self.claims.tenant, self._s.bus.shards)

    # -- reading -----------------------------------------------------------------------
    async def _read_loop(self) -> None:
        sock, ws = self._sock, self._ws
        chunk = self._s.config.connection.read_chunk_bytes
        while True:
            await trio.lowlevel.wait_readable(sock)
            self._push_deadline()
            try:
                data = sock.recv(chunk)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self._peer_closed = True
                self._disconnect = self._disconnect or CONNECTION_LOST
                return
            try:
                ws.receive_data(data)
                for event in ws.events():
                    if await self._on_ws_event(event):
                        return
            except wsproto.utilities.RemoteProtocolError as exc:
                self._log("protocol_error", error=str(exc))
                self._disconnect = CloseCode.PROTOCOL_ERROR
                return

    async def _on_ws_event(self, event: ws_events.Event) -> bool:
        """Handle one wsproto event; True when the connection must end."""
        if isinstance(event, ws_events.Message):
            self._partial_size += len(event.data)
            if self._partial_size > self._s.config.server.max_inbound_message_bytes:
                self._disconnect = CloseCode.MESSAGE_TOO_BIG
                return True
            if not event.message_finished:
                self._partial = (self._partial or []) + [event.data]
                return False
            data = event.data
            if self._partial is not None:
                data = type(data)().join([*self._partial, data])  # type: ignore[arg-type]
            self._partial, self._partial_size = None, 0
            await self._on_message(data.encode() if isinstance(data, str) else data)
            return self._disconnect is not None
        if isinstance(event, ws_events.Ping):
            self.out.push(self._ws.send(event.response()))
            return False
        if isinstance(event, ws_events.CloseConnection):
            self._peer_closed = True
            self._disconnect = self._disconnect or Disconnect(int(event.code), "closed by client", CloseCode.NORMAL.action)
            return True
        return False

    async def _on_message(self, data: bytes) -> None:
        metrics = self._s.metrics
        if not self._bucket.take():
            metrics.rate_limited.inc()
            if self._bucket.refused_in_a_row >= self._s.config.connection.rate_limit_close_after:
                self.close(CloseCode.RATE_LIMITED)
                return
            self._send_error(ReplyError(ReplyCode.RATE_LIMITED, "too many commands"), None)
            return
        try:
            frame = self._wire.codec.decode(data)
        except ReplyError as err:
            metrics.messages_in.labels("invalid").inc()
            self._send_error(err, None)
            return
        metrics.messages_in.labels(frame.event if isinstance(frame, Emit) else type(frame).__name__.lower()).inc()
        try:
            if isinstance(frame, Sub):
                await self._on_sub(frame)
            elif isinstance(frame, Unsub):
                self._on_unsub(frame)
            elif isinstance(frame, Emit):
                await self._on_emit(frame)
            elif isinstance(frame, Ping):
                self._send(Pong(ref=frame.ref))
        except ReplyError as err:
            self._log("command_refused", op=type(frame).__name__.lower(), code=int(err.code),
                          error=err.message)
            self._send_error(err, frame.ref)

    # -- commands ----------------------------------------------------------------------
    async def _on_sub(self, frame: Sub) -> None:
        kind = authorize_room(self.claims, self.ns, frame.room)
        since = Cursor.parse(frame.since) if frame.since else None
        if frame.room not in self._rooms and len(self._rooms) >= self._s.config.connection.max_rooms:
            raise ReplyError(ReplyCode.TOO_MANY_ROOMS, "too many rooms on this connection")
        if frame.room in self._rooms and since is None:
            self._send(Ack(ref=frame.ref, room=frame.room))
            return
        if frame.room in self._rooms:
            self._rooms.pop(frame.room).remove(self.session)

        def ack(recovered: bool | None, cursor: Cursor) -> None:
            self._send(Ack(ref=frame.ref, room=frame.room, recovered=recovered, cursor=cursor.encode()))

        snapshot = {RoomKind.PRESENCE: self._presence_snapshot, RoomKind.SCHEDULE: self._schedule_snapshot}.get(kind)
        await self._join([frame.room], since, ack, snapshot)
        self._log("sub", room=frame.room, since=frame.since)

    async def _presence_snapshot(self, room: str, recovered: bool) -> RoomSnapshot:
        """``presence:snapshot``: the users of the room's group who are not offline
        (always: presence changes are never in a history)."""
        group = room.partition(":")[2]
        entries = await self._s.presence.snapshot(self.claims.tenant, group)
        return RoomSnapshot(Evt(event="presence:snapshot", room=room, id=_snapshot_id(), ts=int(time.time() * 1000),
                                data={"group": group, "users": [e.data(group) for e in entries]}))

    async def _schedule_snapshot(self, room: str, recovered: bool) -> RoomSnapshot | None:
        """``schedule.snapshot``: the schedule's last-value record, and its cursor (none
        needed when the client's own cursor was resumed)."""
        if recovered:
            return None
        snap = await self._s.schedules.snapshot(self.claims.tenant, room)
        return RoomSnapshot(snap.frame(_snapshot_id(), int(time.time() * 1000)), snap.cursor, snap.covers)

    def _on_unsub(self, frame: Unsub) -> None:
        room = self._rooms.pop(frame.room, None)
        if room is None:
            raise ReplyError(ReplyCode.NOT_SUBSCRIBED, f"not subscribed to {frame.room!r}")
        room.remove(self.session)
        self._send(Ack(ref=frame.ref, room=frame.room))
        self._log("unsub", room=frame.room)

    async def _on_emit(self, frame: Emit) -> None:
        etype = self._s.catalog.get(frame.event)
        if self.ns not in etype.emitters:
            raise ReplyError(ReplyCode.FORBIDDEN, f"{frame.event!r} cannot be emitted here")
        self._s.catalog.check_fields(etype, frame.data)
        if etype.rooms:
            if frame.room is None or frame.room not in self._rooms:
                raise ReplyError(ReplyCode.NOT_SUBSCRIBED, f"{frame.event!r} needs a room you have joined")
            if parse_room(frame.room)[0] not in etype.rooms:
                raise ReplyError(ReplyCode.BAD_ROOM, f"{frame.event!r} goes to {sorted(k.value for k in etype.rooms)} rooms")
        if self._present and frame.event == "heartbeat":
            await self._s.presence.heartbeat(self.id)
        elif self._present and frame.event in _SWITCHES:
            await self._s.presence.switch(self.id, _SWITCHES[frame.event])
        elif frame.event in _TYPING:
            self._typed = True
            await self._s.typing.typing(self.session, self.claims.tenant, self.claims.user,
                                        frame.room.partition(":")[2], _TYPING[frame.event])
        elif frame.event in HANDED_TO_BACKBONE:
            # Acknowledged once the backbone's inbound stream holds it (an error otherwise).
            await self._s.bus.hand_in(Inbound(
                event=frame.event, tenant=self.claims.tenant, user=self.claims.user, session=self.session,
                data=frame.data, ts=int(time.time() * 1000)))
        self._send(Ack(ref=frame.ref, room=frame.room, event=frame.event))

    # -- joining, with resumption --------------------------------------------------------
    async def _join(
        self,
        names: list[str],
        since: Cursor | None,
        answer: Callable[[bool | None, Cursor], None],
        snapshot: Callable[[str, bool], Awaitable[RoomSnapshot | None]] | None = None,
    ) -> None:
        """Join ``names`` and ``answer`` (hello or ack) before any event of them.

        Without ``since``, live events follow the answer. With ``since``, the answer says
        whether the history reached back to it, the missed events follow, and the rooms
        then deliver what arrived meanwhile (``Promote``) and go live, with no gap and no
        duplicate. With ``snapshot`` (given the room's name and whether the history reached
        back; it may answer None), each room's snapshot frame follows the answer, read
        after the room began holding live events for this connection; when a snapshot has
        a cursor, the history after it that the snapshot does not already cover follows,
        so snapshot and live events join with no gap and no duplicate.
        """
        rooms: dict[str, Room] = {}
        for name in names:
            rooms[name] = await self._s.registry.open_room(room_key(self.claims.tenant, name))
        if since is None and snapshot is None:
            head = await self._s.bus.head(self._shard)
            for name, room in rooms.items():
                room.add(self.session, self._wire, self.out.push)
                self._rooms[name] = room
            answer(None, head)  # no await since add: the answer precedes every live event
            return
        buffers = {}
        for name, room in rooms.items():
            buffers[name] = room.begin_recovery(self.session, self._s.config.bus.max_history)
            self._rooms[name] = room
        try:
            recovered, history = None, None
            if since is not None:
                history = await self._history(names, since)
                recovered = history is not None
            snapshots: list[RoomSnapshot] = []
            if snapshot is not None:
                snapshots = [snap for name in rooms if (snap := await snapshot(name, bool(recovered)))]
                start = next((snap.cursor for snap in snapshots if snap.cursor is not None), None)
                if start is not None:
                    history = await self._history(names, start)
                    if history is None:
                        self._log("snapshot_history_lost", rooms=names)  # live events follow
            head = history.cursor if history is not None else await self._s.bus.head(self._shard)
        except BaseException:  # nothing was answered: the rooms must not hold events for it
            for name, room in rooms.items():
                self._rooms.pop(name, None)
                room.remove(self.session)
            raise
        answer(recovered, head)
        for snap in snapshots:
            self._send(snap.frame)
        replay = [(event, name) for event, name in history.events if not any(snap.covers(event) for snap in snapshots)] \
            if history is not None else []
        if len(rooms) > 1:  # in stream order across the rooms, so that no cursor passes a missed event
            for event, name in replay:
                self._send(event.frame(name))
            replay = []
        after = head.offset if history is not None else None
        for name, room in rooms.items():
            await room.promote(Promote(
                self.session, buffers[name], self._wire, self.out.push, after,
                on_overflow=self.slow_consumer, replay=tuple(event for event, _ in replay),
            ))

    async def _history(self, names: list[str], since: Cursor) -> RoomHistory | None:
        """The rooms' events after ``since``; None when the history does not reach back
        (more than ``bus.max_history`` events to replay counts as not reaching)."""
        history = await read_rooms(self._s.bus, self.claims.tenant, set(names), since,
                                   self._s.config.bus.max_history)
        return history if history.recovered and not history.more else None

    def _log(self, message: str, **fields: object) -> None:
        log.info(message, session=self.session, user=self.claims.user, tenant=self.claims.tenant,
                 ns=self.ns.value, **fields)

    # -- writing -----------------------------------------------------------------------
    def _send(self, frame: ServerFrame) -> None:
        self.out.push(self._wire.frame(frame))

    def _send_error(self, err: ReplyError, ref: int | None) -> None:
        self._send(error_frame(err, ref))
