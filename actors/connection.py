"""What every client connection is, whatever its transport: one token's session.

The transports are actors of their own, each file opening with its contract:
``actors.websocket`` (WebSocket), ``actors.sse`` (a Server-Sent Events stream) and
``actors.poll`` (one long-poll request). This base holds what they share:

* the token's claims and expiry (one cancel scope whose deadline is the earlier of the
  token's ``exp`` and the transport's idle timeout);
* the rooms it is in, joined with resumption from a cursor and with snapshots
  (``_join``), delivering to an outbound ``out`` whose ``push`` never blocks;
* presence (a hub connection of a user with presence groups is tracked while it lives),
  liveness (with push on, every connection counts its user as connected) and, for the
  HTTP transports, the session's *command room*: ``POST /{ns}/commands`` on any node
  forwards presence commands to ``session:{id}`` (``rtserver.commands``), and the stream
  or poll serving that session applies them here;
* the run skeleton: ``_start`` (join, answer), ``_serve`` (the transport's own loop),
  and in ``finally`` leaving the rooms, presence and typing, then ``_finish`` (the
  transport's close: a close frame, an SSE ``close`` event, a poll answer). A session a
  transport drives from its own task (a Socket.IO namespace) takes the same steps without
  a task of its own: ``open``, ``carry_out`` of each command, ``end``.

Failure: an unexpected exception is logged with a correlation id, counted
(``rt_internal_errors_total{where=<transport>}``) and ends this connection with 1011,
never the node; a temporary ``ReplyError`` of the start (Redis unreachable, or refusing
with an error reply) ends it with 1013.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Hashable
from dataclasses import dataclass

import structlog
import trio

from actors.liveness import Liveness
from actors.parking import Parking
from actors.presence import Presence
from actors.registry import Registry
from actors.room import Recovery, Room
from actors.typing import Typing
from actors.writer import Writer
from protocol.catalog import Catalog, Namespace
from protocol.cursors import Cursor, shard_of
from protocol.envelope import Inbound
from protocol.errors import CloseCode, Disconnect, ReplyCode, ReplyError
from protocol.frames import ClientFrame, Emit, Evt, Hello, Ping, ServerFrame, Sub, Unsub, error_frame
from protocol.presence import PresenceState
from protocol.rooms import RoomKind, parse_room, room_key
from protocol.session import (
    Answer, Join, Lost, ReadHead, ReadHistory, ReadSnapshots, RoomHistory, RoomSnapshot, Send,
)
from protocol.states import CONNECTION_TRANSITIONS, ConnectionState, advance
from protocol.wires import FRAMES, Wire
from rtserver.backends.auth import Claims, authorize_room, auto_rooms
from rtserver.backends.boundary import contained
from rtserver.backends.bus import HISTORY_PAGE, Bus, read_rooms
from rtserver.backends.config import Config
from rtserver.backends.metrics import Metrics
from rtserver.backends.recovery import RecoveryStore
from rtserver.backends.schedules import ScheduleStore
from rtserver.backends.sockets import Sock, recv_nowait

#: Presence switches a staff client may emit.
SWITCHES = {"presence:online": PresenceState.ONLINE, "presence:away": PresenceState.AWAY}
#: Typing indicators a client may emit in a thread it may use (True: typing).
TYPING = {"typing:start": True, "typing:stop": False}
#: Client events handed to the backbone on its inbound stream (docs/protocol.md).
HANDED_TO_BACKBONE = frozenset({"mark_alert_read"})
#: Presence commands of an SSE / long-poll session, forwarded to where it is served.
SESSION_COMMANDS = frozenset({"heartbeat", *SWITCHES})
#: Not a close frame: the TCP connection ended without one (never sent, only logged).
CONNECTION_LOST = Disconnect(1006, "connection lost", CloseCode.GOING_AWAY.action)

log = structlog.get_logger("rtserver.connection")


def session_room(session: str) -> str:
    """The internal room the HTTP commands of ``session`` are forwarded to."""
    return f"{RoomKind.SESSION.value}:{session}"


async def emit_anywhere(services: ConnectionServices, claims: Claims, session: str, frame: Emit) -> None:
    """Carry out an emit that any node can serve alike, whatever the transport: typing
    indicators (through the typing actor; ``session`` is their origin) and commands for
    the backbone (acknowledged once its inbound stream holds them; an error otherwise).
    Presence commands belong to where the session is served and are not handled here."""
    if frame.event in TYPING:
        await services.typing.typing(session, claims.tenant, claims.user, frame.room.partition(":")[2],
                                     TYPING[frame.event])
    elif frame.event in HANDED_TO_BACKBONE:
        await services.bus.hand_in(Inbound(
            event=frame.event, tenant=claims.tenant, user=claims.user, session=session,
            data=frame.data, ts=int(time.time() * 1000)))


@dataclass(frozen=True, slots=True)
class Joining:
    """What a connection's request asks for beyond its token (its URL's query)."""

    #: Rooms to join at the start besides the token's own (``?rooms=a,b``).
    rooms: tuple[str, ...] = ()
    #: Of those, the rooms new to the client (``?fresh=``): their snapshots are sent even
    #: when the cursor resumes, since the client never had their state.
    fresh: frozenset[str] = frozenset()
    #: The presence state the client asks for (``?presence=``; a session's switch outlives
    #: each stream or poll), if any.
    presence: PresenceState | None = None


#: What a connection whose request asks for nothing beyond its token joins (shared).
NOTHING_MORE = Joining()


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
    #: The node's open connections (for draining); each connection adds itself when it
    #: starts and removes itself once its close has been written (or given up on).
    connections: set["Connection"]
    presence: Presence
    typing: Typing
    schedules: ScheduleStore
    #: Where its quiet connections wait without a task.
    parking: Parking
    #: With push on: who is connected (push goes to users who are not).
    liveness: Liveness | None = None
    #: Socket.IO sessions' rooms, for their recovery on any node.
    recovery: RecoveryStore | None = None


class Closable:
    """What anyone may tell an actor that owns a cancel scope while it runs (``_scope``,
    None while it waits in the parking, ``parked``) and a reason (``_disconnect``): to end,
    and why (the first reason given wins); its outbound queue's overflow and broken socket
    end it too."""

    __slots__ = ()

    #: Whether it waits in the parking (``actors.parking``) without a task.
    parked = False

    def close(self, disconnect: Disconnect) -> None:
        """End with ``disconnect`` (the first reason given wins): its run is cancelled, or
        it is woken from the parking to end."""
        if self._disconnect is None:
            self._disconnect = disconnect
        if self._scope is not None:
            self._scope.cancel()
        elif self.parked:
            self._s.parking.wake(self)

    def slow_consumer(self) -> None:
        self.close(CloseCode.SLOW_CONSUMER)

    def connection_lost(self) -> None:
        self.close(CONNECTION_LOST)


class Connection(Closable):
    """The shared part of the connection actors (see the module docstring)."""

    #: The ``transport`` label of the connection metrics.
    transport = ""
    #: Whether the session outlives one request (SSE streams and polls reopened with
    #: ``?session=``): presence then follows the session, not each request.
    session_spans_requests = False
    __slots__ = (
        "id", "session", "claims", "ns", "out", "_sock", "_s", "_wire", "_since", "_rooms", "_scope", "_deadline",
        "alarm", "_disconnect", "_peer_closed", "_expires_at", "_idle_s", "_present", "_typed", "_joining", "_live",
        "state",
    )
    _next_id = 0

    def __init__(
        self,
        sock: Sock,
        *,
        services: ConnectionServices,
        claims: Claims,
        ns: Namespace,
        wire: Wire,
        session: str,
        since: Cursor | None,
        idle_s: float,
        joining: Joining | None = None,
    ) -> None:
        Connection._next_id += 1
        self.id = Connection._next_id
        self.session = session
        self.claims = claims
        self.ns = ns
        self._sock = sock
        self._s = services
        self._wire = wire
        self._since = since
        self._joining = joining or NOTHING_MORE
        self._rooms: dict[str, Room] = {}  # room name -> room
        #: The scope of its current busy spell; None while it has no task (parked).
        self._scope: trio.CancelScope | None = None
        self._expires_at = math.inf  # trio time of the token's exp
        self._idle_s = idle_s or math.inf
        self._deadline = math.inf  # the earlier of the two (``_push_deadline``)
        self.alarm: float | None = None  # the parking's
        self._disconnect: Disconnect | None = None
        self._peer_closed = False
        self._present = False  # tracked by the presence actor
        self._typed = False  # has typed: the typing actor is told when it closes
        self._live = False  # counted by the liveness actor
        self.out = None  # the transport's outbound queue: ``push(bytes)``, or a call, never blocks
        #: Where it is in its life; moved only along ``CONNECTION_TRANSITIONS``.
        self.state = ConnectionState.OPENING

    def _move(self, state: ConnectionState) -> None:
        self.state = advance(CONNECTION_TRANSITIONS, self.state, state)

    def _push_deadline(self) -> None:
        """One deadline for the token's expiry and the idle timeout (no scope per timer)."""
        self._deadline = min(self._expires_at, trio.current_time() + self._idle_s)
        if self._scope is not None:
            self._scope.deadline = self._deadline

    @property
    def deadline(self) -> float:
        """When it ends if its client says nothing before (trio time; only ever later)."""
        return self._deadline

    @property
    def socket(self) -> Sock:
        return self._sock

    @property
    def parked(self) -> bool:
        return self.state is ConnectionState.PARKED

    def _receive(self, max_bytes: int, flags: int = 0) -> bytes | None:
        """Read the readable socket: its bytes; None when it had nothing after all; ``b""``
        when the client is gone (EOF or a broken socket), which is then the disconnect."""
        data = recv_nowait(self._sock, max_bytes, flags)
        if data == b"":
            self._peer_closed = True
            self._disconnect = self._disconnect or CONNECTION_LOST
        return data

    @property
    def presence_id(self) -> Hashable:
        """Who this connection is to the presence actor: itself, or its session."""
        if self.session_spans_requests:
            return (self.claims.tenant, self.claims.user, self.session)
        return self.id

    # -- the actor ---------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Its first busy spell: join, answer, then serve its client until it is quiet (it
        parks: ``actors.parking``) or the connection ends."""
        self._opened()
        task_status.started()
        await self._spell(self._open_and_serve)

    async def resume(self) -> None:
        """A later busy spell, run by the parking: its socket is readable, its deadline
        passed, or it was told to close. What escapes it ends it alone (logged, counted)."""
        with contained(self._s.metrics, self.transport, session=self.session):
            self._move(ConnectionState.OPEN)
            await self._spell(self._serve)

    async def _spell(self, work) -> None:
        """Run ``work`` (True: the client is quiet for now) within the deadline; then park,
        or end."""
        quiet = False
        try:
            if self._disconnect is None:
                with trio.CancelScope(deadline=self._deadline) as self._scope:
                    await trio.lowlevel.checkpoint_if_cancelled()  # resumed for its deadline
                    quiet = await self.carry_out(work)
                if self._disconnect is None and self._scope.cancelled_caught:
                    expired = trio.current_time() >= self._expires_at
                    self._disconnect = CloseCode.TOKEN_EXPIRED if expired else CloseCode.IDLE_TIMEOUT
        finally:
            self._scope = None
            if quiet and self._disconnect is None:
                self._move(ConnectionState.PARKED)
                self._s.parking.park(self)
            else:
                await self.end()

    @property
    def expires_at(self) -> float:
        """When its token expires (trio time; inf without ``exp``)."""
        return self._expires_at

    @property
    def closing(self) -> bool:
        """Whether it was told to end (``close``), or one of its steps ended it."""
        return self._disconnect is not None

    def _opened(self) -> None:
        self._s.metrics.connections.labels(self.ns.value, self.transport).inc()
        self._s.connections.add(self)
        self._log("connect", transport=self.transport, wire=self._wire.name)
        if self.claims.exp is not None:
            self._expires_at = trio.current_time() + max(0.0, self.claims.exp - time.time())
        self._push_deadline()

    async def open(self) -> None:
        """Start a session its transport drives (no task of its own): join and answer.
        It may be ``closing`` after, as after any step."""
        self._opened()
        await self.carry_out(self._begin)

    async def _begin(self) -> None:
        self._move(ConnectionState.JOINING)
        await self._start()
        self._move(ConnectionState.OPEN)

    async def _open_and_serve(self) -> bool:
        await self._begin()
        return await self._serve()

    async def carry_out(self, step, *args):
        """Run one step of its work, ``await step(*args)``, and return what it returns: a
        bug ends this connection alone (1011, logged and counted), a temporary failure of
        the bus at the start with 1013; never its caller (None is returned then)."""
        with contained(self._s.metrics, self.transport, session=self.session) as failure:
            try:
                return await step(*args)
            except ReplyError as err:
                if not err.temporary:
                    raise  # a refusal nobody answered: a bug
                self._log("start_failed", error=err.message)  # the bus, at the start
                self._disconnect = self._disconnect or CloseCode.TRY_AGAIN_LATER
        if failure.id is not None:
            self._disconnect = CloseCode.INTERNAL_ERROR

    async def end(self) -> None:
        """Leave its rooms, presence and typing, then tell the client why (``_finish``)."""
        metrics = self._s.metrics
        self._move(ConnectionState.CLOSING)
        for room in self._rooms.values():
            room.remove(self.session)
        self._rooms.clear()
        if self._present or self._typed or self._live:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                if self._live:
                    await self._s.liveness.closed(self.claims.tenant, self.claims.user)
                if self._present:
                    await self._s.presence.disconnected(self.presence_id)
                if self._typed:
                    await self._s.typing.gone(self.session)
        disconnect = self._disconnect or CloseCode.NORMAL
        metrics.connections.labels(self.ns.value, self.transport).dec()
        metrics.disconnects.labels(disconnect.reason).inc()
        self._log("disconnect", code=disconnect.code, reason=disconnect.reason,
                  by_client=self._peer_closed)
        with trio.CancelScope(shield=True):
            try:
                await self._finish(disconnect)
            finally:  # only now: a drain waits for the close the client is told
                self._move(ConnectionState.CLOSED)
                self._s.connections.discard(self)

    async def _serve(self) -> bool:
        """Serve the client until it is quiet for now (True: the connection parks until its
        socket is readable) or the connection must end (False)."""
        raise NotImplementedError

    async def _finish(self, disconnect: Disconnect) -> None:
        """Tell the client ``disconnect`` as the transport can (shielded, bounded) and
        release the socket."""
        raise NotImplementedError

    def _initial_rooms(self) -> list[str]:
        """The rooms joined at the start: the token's own, then those the request named."""
        return list(dict.fromkeys(auto_rooms(self.claims, self.ns) + list(self._joining.rooms)))

    def _answer(self, answer: Answer, rooms: list[str], sub: Sub | None) -> None:
        """Answer a join before any event of its rooms: the start's ``hello`` here (a
        ``sub``'s answer is the transport's)."""
        self._send(Hello(
            session=self.session,
            rooms=rooms,
            heartbeat_s=self._s.config.connection.heartbeat_s,
            ns=self.ns.value,
            user=self.claims.user,
            expires_at=self.claims.exp,
            recovered=answer.recovered,
            cursor=answer.cursor.encode(),
        ))

    async def _start(self) -> None:
        await self._join(self._initial_rooms(), self._since)
        if self.ns is Namespace.HUB and self.claims.presence_groups:
            self._present = True
            await self._s.presence.connected(self.presence_id, self.claims.tenant, self.claims.user,
                                             self.claims.presence_groups, self._joining.presence)
        if self._s.liveness is not None:
            self._live = True
            await self._s.liveness.opened(self.claims.tenant, self.claims.user)

    @property
    def _shard(self) -> int:
        return shard_of(self.claims.tenant, self._s.bus.shards)

    # -- snapshots ---------------------------------------------------------------------
    async def _snapshot(self, room: str, recovered: bool) -> RoomSnapshot | None:
        """The snapshot a new subscriber of ``room`` gets first, if its kind has one
        (``recovered``: the client's cursor was resumed for this room)."""
        kind = parse_room(room)[0]
        if kind is RoomKind.PRESENCE:
            return await self._presence_snapshot(room, recovered)
        if kind is RoomKind.SCHEDULE:
            return await self._schedule_snapshot(room, recovered)
        return None

    async def _presence_snapshot(self, room: str, recovered: bool) -> RoomSnapshot | None:
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

    # -- the session's command room (HTTP transports) ------------------------------------
    async def _join_command_room(self) -> None:
        """Receive the presence commands ``POST /{ns}/commands`` forwards for this session."""
        name = session_room(self.session)
        room = self._s.registry.open_room(room_key(self.claims.tenant, name))
        room.add(self.session, FRAMES, self._on_session_command)
        self._rooms[name] = room

    def _on_session_command(self, evt: Evt) -> None:
        """Apply a forwarded command (from the room: never blocks); only its own user's."""
        data = evt.data
        if not self._present or data.get("user") != self.claims.user:
            return
        event = data.get("event")
        if event == "heartbeat":
            self._s.presence.heartbeat_nowait(self.presence_id)
        elif event in SWITCHES:
            self._s.presence.switch_nowait(self.presence_id, SWITCHES[event])

    # -- joining, with resumption --------------------------------------------------------
    async def _join(self, names: list[str], since: Cursor | None, sub: Sub | None = None) -> None:
        """Join ``names`` (resuming from ``since``, if given) by carrying out the steps of
        ``protocol.session.Join``: the answer before any event of the rooms (``hello`` at
        the start, the answer to ``sub`` for a ``sub``), the snapshots, the missed events a
        page at a time (the next read once the client's socket took the previous one), and
        the hand-over to the rooms' live delivery."""
        join = Join(names, since, self._joining.fresh)
        rooms = {name: self._s.registry.open_room(room_key(self.claims.tenant, name)) for name in names}
        recoveries: dict[str, Recovery] = {}
        answered = False
        step = join.step
        try:
            while not step.final:
                if type(step) is Send:
                    if step.answer is not None:
                        self._answer(step.answer, names, sub)
                        answered = True
                    for frame in step.frames:
                        self._send(frame)
                    step = join.sent()
                elif type(step) is ReadHistory:
                    if step.flushed_first:
                        await self.out.wait_flushed()
                    step = join.history_read(await self._history_page(names, step.since))
                elif type(step) is ReadHead:
                    step = join.head_read(await self._s.bus.head(self._shard))
                elif type(step) is ReadSnapshots:
                    step = join.snapshots_read(
                        [snap for room, recovered in step.rooms if (snap := await self._snapshot(room, recovered))])
                else:  # Hold
                    limit = self._s.config.bus.max_history
                    for name, room in rooms.items():
                        recoveries[name] = room.begin_recovery(self.session, self._wire, self.out, limit,
                                                               self.slow_consumer)
                        self._rooms[name] = room
                    step = join.holding()
        except BaseException:
            if not answered:  # the rooms must not hold events for a join never answered
                for name, room in recoveries.items():
                    self._rooms.pop(name, None)
                    room.remove(self.session)
            raise
        if join.snapshot_history_lost:
            self._log("snapshot_history_lost", rooms=names)  # live events follow the snapshots
        if type(step) is Lost:
            self._log("history_lost_while_replaying", rooms=names)
            self.slow_consumer()
        elif step.held:
            for name, room in rooms.items():
                room.promote(recoveries[name], step.after)
                self._room_caught_up()
        else:
            for name, room in rooms.items():
                room.add(self.session, self._wire, self.out)
                self._rooms[name] = room
                self._room_caught_up()

    def _room_caught_up(self) -> None:
        """A room of ``_join`` has pushed what it buffered and delivers live from now on."""

    async def _history_page(self, names: list[str], since: Cursor) -> RoomHistory | None:
        """A page of the rooms' events after ``since`` (``more`` when others follow); None
        when the history does not reach back to ``since`` (trimmed, another epoch)."""
        history = await read_rooms(self._s.bus, self.claims.tenant, set(names), since, HISTORY_PAGE)
        return history if history.recovered else None

    def _log(self, message: str, **fields: object) -> None:
        log.info(message, session=self.session, user=self.claims.user, tenant=self.claims.tenant,
                 ns=self.ns.value, **fields)

    # -- writing -----------------------------------------------------------------------
    def _send(self, frame: ServerFrame) -> None:
        self.out.push(self._wire.frame(frame))

    def _send_error(self, err: ReplyError, ref: int | None) -> None:
        self._send(error_frame(err, ref))


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


class CommandConnection(Connection):
    """A connection whose client sends commands over its own socket (``sub``, ``unsub``,
    ``emit``, ``ping``): the WebSocket and Socket.IO transports. Commands run one at a
    time; each is answered by the transport (``_done``, ``_refused``), a ``sub`` before any
    event of its room."""

    __slots__ = ("_bucket",)

    def __init__(self, sock: Sock, **kwargs) -> None:
        super().__init__(sock, **kwargs)
        cfg = self._s.config.connection
        self._bucket = TokenBucket(cfg.inbound_rate, cfg.inbound_burst)

    def _within_rate(self) -> bool:
        """Whether the client may send one more command now; past the limit it is refused,
        and closed after ``rate_limit_close_after`` refusals in a row."""
        if self._bucket.take():
            return True
        self._s.metrics.rate_limited.inc()
        if self._bucket.refused_in_a_row >= self._s.config.connection.rate_limit_close_after:
            self.close(CloseCode.RATE_LIMITED)
        return False

    async def _command(self, frame: ClientFrame) -> None:
        """Carry out one command and answer it (a refusal too)."""
        self._s.metrics.count_inbound(frame, self._s.catalog)
        try:
            if isinstance(frame, Sub):
                await self._on_sub(frame)
            elif isinstance(frame, Unsub):
                self._on_unsub(frame)
            elif isinstance(frame, Emit):
                await self._on_emit(frame)
            elif isinstance(frame, Ping):
                self._done(frame)
        except ReplyError as err:
            self._log("command_refused", op=type(frame).__name__.lower(), code=int(err.code), error=err.message)
            self._refused(err, frame)

    def _done(self, frame: ClientFrame, answer: Answer | None = None) -> None:
        """Answer a command carried out (a ``sub``: with its join's ``answer``, if it joined)."""
        raise NotImplementedError

    def _refused(self, err: ReplyError, frame: ClientFrame | None) -> None:
        """Answer a command refused (None: one that could not be read)."""
        raise NotImplementedError

    def _answer(self, answer: Answer, rooms: list[str], sub: Sub | None) -> None:
        if sub is None:
            super()._answer(answer, rooms, sub)
        else:
            self._done(sub, answer)

    async def _on_sub(self, frame: Sub) -> None:
        authorize_room(self.claims, self.ns, frame.room)
        since = Cursor.parse(frame.since) if frame.since else None
        if frame.room not in self._rooms and len(self._rooms) >= self._s.config.connection.max_rooms:
            raise ReplyError(ReplyCode.TOO_MANY_ROOMS, "too many rooms on this connection")
        if frame.room in self._rooms and since is None:
            self._done(frame)
            return
        if frame.room in self._rooms:
            self._rooms.pop(frame.room).remove(self.session)
        await self._join([frame.room], since, frame)
        self._log("sub", room=frame.room, since=frame.since)

    def _on_unsub(self, frame: Unsub) -> None:
        room = self._rooms.pop(frame.room, None)
        if room is None:
            raise ReplyError(ReplyCode.NOT_SUBSCRIBED, f"not subscribed to {frame.room!r}")
        room.remove(self.session)
        self._done(frame)
        self._log("unsub", room=frame.room)

    def _joined(self, room: str) -> None:
        if room not in self._rooms:
            raise ReplyError(ReplyCode.NOT_SUBSCRIBED, f"{room!r} is not a room you have joined")

    async def _on_emit(self, frame: Emit) -> None:
        self._s.catalog.check_emit(self.ns, frame.event, frame.data, frame.room, self._joined)
        if self._present and frame.event == "heartbeat":
            await self._s.presence.heartbeat(self.presence_id)
        elif self._present and frame.event in SWITCHES:
            await self._s.presence.switch(self.presence_id, SWITCHES[frame.event])
        else:
            self._typed = self._typed or frame.event in TYPING
            await emit_anywhere(self._s, self.claims, self.session, frame)
        self._done(frame)


class HttpSession(Connection):
    """The shared part of the HTTP transports (an SSE stream, a long-poll): the rooms,
    cursor and presence come from the request's query (``Joining``), the session outlives
    each request, there is no idle timeout (the client sends nothing), and the session's
    command room receives what ``POST /{ns}/commands`` forwards."""

    session_spans_requests = True
    __slots__ = ()

    def __init__(
        self,
        sock: Sock,
        *,
        services: ConnectionServices,
        claims: Claims,
        ns: Namespace,
        wire: Wire,
        session: str,
        since: Cursor | None,
        joining: Joining,
    ) -> None:
        super().__init__(sock, services=services, claims=claims, ns=ns, wire=wire, session=session,
                         since=since, idle_s=0, joining=joining)

    async def _start(self) -> None:
        await self._join_command_room()
        await super()._start()
