"""Socket.IO actors: an Engine.IO v4 session (over one WebSocket, or over long-polling requests),
and a Socket.IO session per namespace it connects.

Contract
--------
Mailbox
    ``EngineIOSocket``: the client's socket (``protocol.wsreader``), read while it has
    something to say; between, the session waits in the parking without a task
    (``actors.parking``), woken by its socket, its heartbeat, its tokens' expiry or a
    close. ``PollingEngine``: the packets of each POST, in order (a GET waits for what is
    queued); its own task keeps the heartbeat and the expiry. Either way (``EngineIO``): a ``pong`` answers the last
    ping, Socket.IO packets are decoded (``protocol.socketio``, bounded), a ``CONNECT``
    opens a ``SocketIOSession``, an ``EVENT`` becomes an rt.v1 command
    (``protocol.socketio_events``) its namespace's session carries out at once, as a
    WebSocket connection carries out its frames, a ``DISCONNECT`` ends that session. The
    sessions have no task of their own: the socket's task (a POST's, on polling) drives
    them (``actors.connection``: ``open``, ``carry_out``, ``end``), so an idle socket has
    no task at all. On a bus spanning nodes, a ``PollingEngine`` also serves the
    requests other nodes relay to its room (``actors.socketio_relay``), and an
    ``AdoptedSocket`` is the WebSocket a session held elsewhere upgrades to.
Owns
    Its transport (the socket and its frame reader, or the polling buffer), its one
    outbound queue (the namespaces share it, so the byte budget and the slow-consumer
    close are per Engine.IO session, as on the rt.v1 WebSocket), the heartbeat, and its
    sessions by namespace. Each session is a ``CommandConnection`` of its own: claims,
    rooms, presence, token expiry.
Replies
    The Engine.IO ``open`` packet first; ``2`` (ping) every ``ping_interval_ms``. Per
    namespace: ``CONNECT {sid, pid}`` (or ``CONNECT_ERROR {message, data: {code, action}}``),
    the events of its rooms as ``EVENT`` packets encoded once per namespace
    (``protocol.wires.SocketIOWire``), ``ACK``s to the client's ack ids.
Failure
    A packet that breaks the protocol, a missed pong, a slow consumer or the client's close
    end the whole Engine.IO session (a WebSocket close, or a close packet to the pending
    GET; socket.io-client reconnects and recovers), and so does a relayed probe or
    upgrade that no node answers in time; a session that must end on its own
    (token expired, a ``DISCONNECT``) leaves the others be. An unexpected exception in a
    session's step ends that session alone (1011); elsewhere, this Engine.IO session alone.
Blocking
    Never on its socket: it parks (an ``AdoptedSocket``, which holds a nursery for its
    relayed requests, and a polling session's upgrade wait on theirs). Polling: a GET on
    its queue. On a session's command while it runs (a resume reads the bus), as an rt.v1
    WebSocket does.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import time
from collections.abc import Iterator

import structlog
import trio

from actors.connection import CONNECTION_LOST, Closable, CommandConnection, ConnectionServices
from actors.socketio_relay import relay, relay_room, relayed_request, reply_to
from actors.websocket import close_websocket
from actors.writer import OutboundQueue
from protocol import engineio, socketio
from protocol.catalog import Namespace
from protocol.cursors import Cursor
from protocol.engineio import EngineIOError
from protocol.errors import CloseCode, Disconnect, ReplyCode, ReplyError
from protocol.frames import ClientFrame, Evt, Sub, Unsub
from protocol.polling_relay import Handover, Method, NamespaceState, Relayed, RelayReply, event_cursor
from protocol.session import Answer
from protocol.socketio import PacketType, SocketIOError
from protocol.socketio_events import ack_answer, client_frame, error_answer
from protocol.states import ConnectionState
from protocol.wires import FRAMES, SocketIOWire
from protocol.wsframes import data_frame, pong_frame
from protocol.wsreader import CloseFrame, FrameReader, Message, PingFrame
from rtserver.backends.auth import AuthError, Claims, TokenVerifier, admission, authorize_room, auto_rooms
from rtserver.backends.boundary import Failure, contained
from rtserver.backends.config import SocketIOConfig
from rtserver.backends.sockets import Sock, recv_nowait, wait_readable

log = structlog.get_logger("rtserver.socketio")

#: While a polling session upgrades, how often a pending GET is ended with a noop, seconds.
NUDGE_S = 0.1
#: How long the rooms of a session whose token never expires are kept, seconds.
KEPT_WITHOUT_EXPIRY_S = 86_400.0
#: Close codes after which the client should reconnect: the whole socket closes, so that
#: socket.io-client reconnects by itself and recovers.
_RECONNECT = frozenset({CloseCode.SERVER_DRAINING, CloseCode.SLOW_CONSUMER, CloseCode.RATE_LIMITED,
                        CloseCode.INTERNAL_ERROR, CloseCode.TRY_AGAIN_LATER, CloseCode.GOING_AWAY})


_PING = data_frame(engineio.encode_text(engineio.PacketType.PING))
NOOP_PACKET = engineio.encode_text(engineio.PacketType.NOOP)


def message(packet: bytes) -> bytes:
    """A Socket.IO packet as an Engine.IO ``message`` in a WebSocket text frame."""
    return data_frame(b"4" + packet)


def new_pid(cursor: Cursor) -> str:
    """A private session id for connection state recovery: random, and the cursor to
    resume from if the client comes back before any event gave it an offset."""
    return f"{secrets.token_urlsafe(9)}~{cursor.encode()}"


def resume_point(auth: dict) -> tuple[str | None, Cursor | None]:
    """The pid a reconnecting client sends and the cursor it resumes from (its offset, or
    the pid's own); (None, None) for a first connection or unreadable ones."""
    pid, offset = auth.get("pid"), auth.get("offset")
    if not isinstance(pid, str) or "~" not in pid:
        return None, None
    text = offset if isinstance(offset, str) and offset else pid.partition("~")[2]
    try:
        return pid, Cursor.parse(text)
    except ReplyError:
        return None, None


class SocketIOSession(CommandConnection):
    """One namespace of an Engine.IO socket (see the module's contract)."""

    transport = "socketio"
    __slots__ = ("_socket", "namespace", "_pid", "_token", "_cursor", "_restored", "_handed_over")

    def __init__(self, sock: Sock | None, *, socket_: EngineIO, namespace: str, wire: SocketIOWire,
                 pid: str | None, token: str, handed_over: list[str] | None = None, **session) -> None:
        """``handed_over``: the rooms of a session another node handed over (its client
        is connected already: no ``CONNECT`` answer; ``pid`` and ``since`` are its own)."""
        super().__init__(sock, wire=wire, idle_s=0, **session)
        self._socket = socket_
        self.namespace = namespace
        self._pid = pid  # as the client sent it; then as answered
        self._token = token  # admitted with, if it may be handed over: admitted again there
        self._cursor = ""  # the connect's answer's
        self._handed_over = handed_over is not None
        self._restored: list[str] | tuple[()] = handed_over or ()  # the rooms recalled for a recovery
        self.out = socket_.namespace_out

    def close(self, disconnect: Disconnect) -> None:
        """End with ``disconnect``; one after which the client should reconnect (a drain, a
        slow consumer) ends its whole Engine.IO session at once."""
        super().close(disconnect)
        if disconnect in _RECONNECT:
            self._socket.close(disconnect)

    async def event(self, name: str, args: list, ack_id: int | None) -> None:
        """A client ``EVENT``: its command carried out and answered, or refused. A client
        past the rate limit is closed."""
        try:
            frame = client_frame(name, args, ack_id)
        except ReplyError as err:
            self._log("command_refused", op=name[:64], code=int(err.code), error=err.message)
            self._refused(err, None, ack_id)
            return
        if not self._within_rate():
            if self._disconnect is None:
                self._refused(ReplyError(ReplyCode.RATE_LIMITED, "too many commands"), frame)
            return
        await self.carry_out(self._carry_out_command, frame)

    async def _carry_out_command(self, frame: ClientFrame) -> None:
        await self._command(frame)
        if isinstance(frame, Sub | Unsub) and self._s.bus.spans_nodes:  # another node recovers it, even if this one dies
            await self._remember_rooms()

    async def end(self) -> None:
        if self.state is ConnectionState.OPEN and not self._s.bus.spans_nodes:
            with trio.CancelScope(shield=True):  # one node: its rooms are kept once it ends, not copied while it lives
                await self._remember_rooms()
        await super().end()

    async def _start(self) -> None:
        """A client that comes back (``pid``) gets the rooms it had subscribed to again,
        authorized anew, resumed from its offset with the token's own."""
        sent = self._pid
        if sent is not None and self._since is not None and not self._handed_over:
            self._restored = await self._s.recovery.recall(sent)
        await super()._start()
        if self._restored and self._pid != sent:  # not recovered: kept under the new pid
            await self._remember_rooms()

    def _initial_rooms(self) -> list[str]:
        rooms = super()._initial_rooms()
        for room in self._restored:
            if room not in rooms and len(rooms) < self._s.config.connection.max_rooms:
                try:
                    authorize_room(self.claims, self.ns, room)
                except ReplyError:
                    continue
                rooms.append(room)
        return rooms

    def _subscribed(self) -> list[str]:
        """The rooms subscribed beyond the token's own."""
        own = set(auto_rooms(self.claims, self.ns))
        return [room for room in self._rooms if room not in own]

    async def _remember_rooms(self) -> None:
        """Keep the rooms subscribed beyond the token's own, for a recovery on any node."""
        lifetime = self.claims.exp - time.time() if self.claims.exp is not None else KEPT_WITHOUT_EXPIRY_S
        try:
            await self._s.recovery.remember(self._pid, self._subscribed(),
                                            lifetime + self._s.config.socketio.recovery_s)
        except ReplyError as err:  # a recovery then resumes the token's rooms only: said in the log
            self._log("socketio_rooms_not_kept", error=err.message)

    async def _finish(self, disconnect: Disconnect) -> None:
        self._socket.session_ended(self, disconnect)

    def handover_state(self, cursor: str | None) -> NamespaceState:
        """What another node needs to carry this session on; ``cursor``: of the last
        durable event a GET took (None: none did, it resumes from the connect's answer)."""
        return NamespaceState(self.namespace, self.session, self._pid or "", self._token, cursor or self._cursor,
                              self._subscribed())

    def _send_packet(self, packet_type: PacketType, data: object = None, ack_id: int | None = None) -> None:
        self.out.push(message(socketio.encode(packet_type, self.namespace, data, ack_id)))

    # -- answers -------------------------------------------------------------------------
    def _answer(self, answer: Answer, rooms: list[str], sub: Sub | None) -> None:
        if sub is not None:
            return super()._answer(answer, rooms, sub)
        self._cursor = answer.cursor.encode()
        if self._handed_over:  # its client is connected: told nothing, unless it must recover by itself
            if not answer.recovered:
                self._socket.close(CloseCode.TRY_AGAIN_LATER)
            return
        if not (answer.recovered and self._pid):
            self._pid = new_pid(answer.cursor)
        self._send_packet(PacketType.CONNECT, {"sid": self.session, "pid": self._pid})

    def _done(self, frame: ClientFrame, answer: Answer | None = None) -> None:
        if frame.ref is not None:
            if answer is None:
                self._send_packet(PacketType.ACK, [ack_answer(frame)], frame.ref)
            else:
                self._send_packet(PacketType.ACK, [ack_answer(frame, answer.recovered, answer.cursor.encode())],
                                  frame.ref)

    def _refused(self, err: ReplyError, frame: ClientFrame | None, ack_id: int | None = None) -> None:
        ack_id = frame.ref if frame is not None else ack_id
        if ack_id is not None:
            self._send_packet(PacketType.ACK, [error_answer(err)], ack_id)


class NamespaceOut:
    """The socket's outbound queue as its sessions push to it: what a namespace does not
    carry encodes to nothing (``SocketIOWire``) and is dropped here."""

    __slots__ = ("queue",)

    def __init__(self, queue: OutboundQueue) -> None:
        #: Where the frames go (a socket's queue, or a polling buffer until an upgrade).
        self.queue = queue

    def push(self, frame: bytes) -> None:
        if frame:
            self.queue.push(frame)

    __call__ = push

    async def wait_flushed(self) -> None:
        await self.queue.wait_flushed()


class EngineIO(Closable):
    """An Engine.IO session and its Socket.IO namespaces, whatever carries its packets (a
    WebSocket, or long-polling requests): the packets it is given, the sessions it starts,
    the heartbeat's schedule."""

    __slots__ = ("sid", "_s", "_verifier", "_config", "_wires", "_token", "out", "namespace_out", "_sessions",
                 "_binary", "_next_ping", "_pong_due", "_scope", "_disconnect")

    def __init__(self, out, *, services: ConnectionServices, verifier: TokenVerifier, config: SocketIOConfig,
                 wires: dict[str, SocketIOWire], token: str | None) -> None:
        self.sid = secrets.token_urlsafe(15)
        self._s = services
        self._verifier = verifier
        self._config = config
        self._wires = wires
        #: The token of the request that opened it (header or query), for a CONNECT without one.
        self._token = token
        self.out = out
        self.namespace_out = NamespaceOut(out)
        self._sessions: dict[str, SocketIOSession] = {}
        self._binary: tuple[socketio.Packet, int] | None = None  # a packet waiting for attachments, its size so far
        self._next_ping = trio.current_time() + config.ping_interval_ms / 1000
        self._pong_due: float | None = None  # when the pong of the last ping is late
        self._scope = trio.CancelScope()
        self._disconnect: Disconnect | None = None

    #: Whether its sessions may move to another node (``Handover``: they keep their tokens).
    hands_over = False

    def handshake(self, upgrades: list[str]) -> bytes:
        """The ``open`` packet."""
        cfg = self._config
        return engineio.open_packet(engineio.Handshake(self.sid, upgrades, cfg.ping_interval_ms, cfg.ping_timeout_ms,
                                                       cfg.max_payload))

    def session_ended(self, session: SocketIOSession, disconnect: Disconnect) -> None:
        """A session's close: tell the client, as its reason asks."""
        if disconnect in _RECONNECT:
            self.close(disconnect)  # the client reconnects and recovers
        elif disconnect is not CloseCode.NORMAL and disconnect is not CONNECTION_LOST and not self.out.closed:
            session.out.push(message(socketio.encode(PacketType.DISCONNECT, session.namespace)))

    def _boundary(self) -> contained:
        """Around the loop that gives this session its packets (and drives the namespace
        sessions): a bug ends this Engine.IO session alone (1011: ``_served``)."""
        return contained(self._s.metrics, "socketio", sid=self.sid)

    async def _served(self, failure: Failure) -> None:
        """After that loop: end the sessions left."""
        if failure.id is not None:
            self._disconnect = CloseCode.INTERNAL_ERROR
        with contained(self._s.metrics, "socketio", sid=self.sid):
            for session in list(self._sessions.values()):
                session.close(self._disconnect or CONNECTION_LOST)
                await self._end_session(session)

    async def _end_session(self, session: SocketIOSession) -> None:
        """Forget ``session`` and end it (once)."""
        if self._sessions.get(session.namespace) is session:
            del self._sessions[session.namespace]
            await session.end()

    async def _settle(self, session: SocketIOSession) -> None:
        """After a step of ``session``: end it if that step closed it."""
        if session.closing:
            await self._end_session(session)

    def _may_end_sessions(self) -> bool:
        """Whether no request is driving a session right now (long-polling: a POST)."""
        return True

    def _wake_at(self) -> float:
        """When the heartbeat or a token's expiry needs this session next."""
        at = self._next_ping if self._pong_due is None else min(self._next_ping, self._pong_due)
        for session in self._sessions.values():
            if not session.closing:
                at = min(at, session.expires_at)
        return at

    async def _expire(self, now: float) -> None:
        """End the sessions whose token expired by ``now`` (a ``DISCONNECT`` the app acts
        on), and those closed meanwhile, unless a request is driving them (it ends them)."""
        for session in list(self._sessions.values()):
            if now >= session.expires_at:
                session.close(CloseCode.TOKEN_EXPIRED)
            if session.closing and self._may_end_sessions():
                await self._end_session(session)

    def _beat(self, now: float) -> bool:
        """The heartbeat's work due at ``now``: a ping every ``ping_interval_ms`` (the client
        expects one within interval + timeout); False when a pong is ``ping_timeout_ms`` late."""
        if self._pong_due is not None and now >= self._pong_due:
            log.info("socketio_ping_timeout", sid=self.sid)
            return False
        if now >= self._next_ping:
            self.out.push(_PING)
            if self._pong_due is None:
                self._pong_due = self._next_ping + self._config.ping_timeout_ms / 1000
            self._next_ping += self._config.ping_interval_ms / 1000
        return True

    async def _on_packet(self, packet: engineio.Packet) -> None:
        if packet.type is engineio.PacketType.PONG:
            self._pong_due = None
        elif packet.type is engineio.PacketType.PING and packet.data == "probe":
            self.out.push(data_frame(engineio.encode_text(engineio.PacketType.PONG, "probe")))
        elif packet.type is engineio.PacketType.CLOSE:
            self._disconnect = CloseCode.NORMAL
        elif packet.type is engineio.PacketType.MESSAGE:
            if isinstance(packet.data, bytes):
                self._on_attachment(packet.data)
            elif self._binary is not None:
                raise SocketIOError("a text packet while attachments are awaited")
            else:
                decoded = socketio.decode(packet.data)
                if decoded.complete:
                    await self._on_socketio(decoded)
                else:
                    self._binary = (decoded, 0)
        elif packet.type is not engineio.PacketType.UPGRADE and packet.type is not engineio.PacketType.NOOP:
            raise EngineIOError(f"unexpected {packet.type.name} packet")
        if self._binary is not None and self._binary[0].complete:
            decoded, self._binary = self._binary[0], None
            await self._on_socketio(decoded)

    def _on_attachment(self, data: bytes) -> None:
        if self._binary is None:
            raise SocketIOError("an attachment no packet announced")
        packet, size = self._binary
        size += len(data)
        if size > self._s.config.server.max_inbound_message_bytes:
            raise SocketIOError("attachments over the message limit")
        socketio.attach(packet, data)
        self._binary = (packet, size)

    # -- Socket.IO -------------------------------------------------------------------------
    async def _on_socketio(self, packet: socketio.Packet) -> None:
        session = self._sessions.get(packet.namespace)
        if packet.type is PacketType.CONNECT:
            if session is None and self._disconnect is None:
                await self._connect(packet.namespace, packet.data or {})
            return
        if session is None:
            return  # a packet for a namespace not (or no longer) connected: dropped, as Socket.IO does
        if packet.type is PacketType.DISCONNECT:
            session.close(CloseCode.NORMAL)  # a CONNECT may follow at once: a new session
        elif packet.type in (PacketType.EVENT, PacketType.BINARY_EVENT):
            await session.event(packet.data[0], packet.data[1:], packet.id)
        await self._settle(session)
        # ACKs from the client answer nothing the server asks: ignored

    async def _connect(self, namespace: str, auth: dict) -> None:
        """A ``CONNECT``: admit its token to the namespace and start its session, or refuse
        with ``CONNECT_ERROR``."""
        token = auth.get("token")
        token = token if isinstance(token, str) and token else self._token
        admitted = self._admit(namespace, token)
        if admitted is not None:
            pid, since = resume_point(auth)
            await self._start_session(namespace, *admitted, token=(token or "") if self.hands_over else "",
                                      pid=pid, since=since, session=secrets.token_urlsafe(12))

    def _admit(self, namespace: str, token: str | None) -> tuple[Namespace, Claims] | None:
        """The audience of ``namespace`` and the token's claims; None once refused (``CONNECT_ERROR``)."""
        settings = self._config.namespaces.get(namespace)
        if settings is None:
            self._connect_error(namespace, "Invalid namespace", None)
            return None
        ns = Namespace(settings.ns)
        try:
            return ns, admission(self._verifier, {}, {"access_token": token} if token else {}, [], ns,
                                 self._s.bus.serves)
        except AuthError as exc:
            self._s.metrics.auth_failures.labels(exc.disconnect.reason).inc()
            self._connect_error(namespace, exc.message, exc.disconnect)
            return None

    async def _start_session(self, namespace: str, ns: Namespace, claims: Claims, **session) -> None:
        started = SocketIOSession(self.session_socket, socket_=self, namespace=namespace, wire=self._wires[namespace],
                                  services=self._s, claims=claims, ns=ns, **session)
        self._sessions[namespace] = started
        await started.open()
        await self._settle(started)

    def _connect_error(self, namespace: str, text: str, disconnect: Disconnect | None) -> None:
        data = {"message": text}
        if disconnect is not None:
            data["data"] = {"code": disconnect.code, "action": disconnect.action.value}
        self.out.push(message(socketio.encode(PacketType.CONNECT_ERROR, namespace, data)))


class WebSocketTransport:
    """An Engine.IO session's WebSocket: its frames read and handed to the session as
    packets, and its close. While ``probing``, the client is upgrading from polling: its
    ``2probe`` is answered ``3probe`` here, and its ``5`` switches the session to it."""

    __slots__ = ("engine", "sock", "reader", "queue", "probing", "peer_closed")

    def __init__(self, engine: EngineIO, sock: Sock, reader: FrameReader,
                 queue: OutboundQueue, *, probing: bool = False) -> None:
        self.engine = engine
        self.probing = probing
        self.sock = sock
        self.reader = reader
        self.queue = queue
        self.peer_closed = False

    async def read(self, *, beating: bool, parks: bool = False) -> Disconnect | None:
        """Until the client goes or the session must end: why. ``beating``: the session's
        heartbeat and its tokens' expiry are the deadline of this reading, and its close
        (``engine._scope``) is the scope of each round: one scope while it waits.
        ``parks``: None instead of waiting, once the socket is read dry and nothing is due
        (the session then waits in the parking, ``actors.parking``)."""
        engine, sock = self.engine, self.sock
        while engine._disconnect is None:
            wake_at = engine._wake_at() if beating else math.inf
            scope = trio.CancelScope(deadline=wake_at)
            if beating:
                engine._scope = scope
            with scope:
                if not parks:
                    await wait_readable(sock)
                scope.deadline = math.inf  # from here on, only a close ends the round
                data = self._recv()
                if data is None and parks and trio.current_time() < wake_at:
                    return None
                ended = None if data is None else await self._on_data(data)
                if ended is not None:
                    return ended
            now = trio.current_time()
            if now >= wake_at:
                if not engine._beat(now):
                    return CONNECTION_LOST
                await engine._expire(now)
        return engine._disconnect

    def _recv(self) -> bytes | None:
        """What the socket holds: None when nothing after all, ``b""`` when the client is gone."""
        data = recv_nowait(self.sock, self.engine._s.config.connection.read_chunk_bytes)
        if data == b"":
            self.peer_closed = True
        return data

    async def _on_data(self, data: bytes) -> Disconnect | None:
        """Act on the messages ``data`` completes; why the session ends, if it must."""
        engine = self.engine
        if not data:
            return CONNECTION_LOST
        try:
            for event in self.reader.receive(data):
                if type(event) is Message:
                    await self._on_packet(engineio.decode_packet(event.data if event.binary else event.data.decode()))
                elif type(event) is PingFrame:
                    self.queue.push(pong_frame(event.payload))
                elif type(event) is CloseFrame:
                    self.peer_closed = True
                    return CloseCode.NORMAL
                else:
                    log.info("socketio_protocol_error", sid=engine.sid, error=event.detail)
                    return event.disconnect
        except (EngineIOError, SocketIOError) as exc:
            log.info("socketio_protocol_error", sid=engine.sid, error=str(exc))
            return CloseCode.PROTOCOL_ERROR
        return engine._disconnect  # a close packet, or the session ended meanwhile

    async def _on_packet(self, packet: engineio.Packet) -> None:
        """One Engine.IO packet; while ``probing``, only the upgrade's."""
        engine = self.engine
        if not self.probing:
            await engine._on_packet(packet)
        elif packet.type is engineio.PacketType.PING and packet.data == "probe":
            await engine.probed()
            self.queue.push(data_frame(engineio.encode_text(engineio.PacketType.PONG, "probe")))
        elif packet.type is engineio.PacketType.UPGRADE:
            await engine.upgraded(self.queue)
            self.probing = False
        else:
            raise EngineIOError(f"{packet.type.name} packet before the upgrade")

    async def finish(self, disconnect: Disconnect) -> None:
        """Tell the client why (a close frame, bounded) and release the socket."""
        with trio.CancelScope(shield=True):
            await close_websocket(self.sock, self.queue, disconnect, peer_closed=self.peer_closed)


def socket_queue(sock: Sock, services: ConnectionServices, owner: EngineIO) -> OutboundQueue:
    cfg = services.config.connection
    return OutboundQueue(sock, services.writer, max_frames=cfg.outbound_max_frames,
                         max_bytes=cfg.outbound_max_bytes, owner=owner)


class EngineIOSocket(EngineIO):
    """An Engine.IO session over one WebSocket (see the module's contract). Between what
    its client sends and what its heartbeat and tokens need, it waits in the parking
    without a task (``parks``)."""

    __slots__ = ("_transport", "_parked", "alarm")

    def __init__(self, sock: Sock, reader: FrameReader, *, services: ConnectionServices,
                 verifier: TokenVerifier, config: SocketIOConfig, wires: dict[str, SocketIOWire],
                 token: str | None) -> None:
        super().__init__(None, services=services, verifier=verifier, config=config, wires=wires, token=token)
        self.out = socket_queue(sock, services, self)
        self.namespace_out = NamespaceOut(self.out)
        self._transport = WebSocketTransport(self, sock, reader, self.out, probing=self.probing)
        self._parked = False
        self.alarm: float | None = None  # the parking's

    @property
    def session_socket(self) -> Sock:
        return self._transport.sock

    #: Whether its client is upgrading from long-polling (``AdoptedSocket``).
    probing = False
    #: Whether it waits in the parking between spells (else its task waits on its socket).
    parks = True

    # -- what the parking needs (``actors.parking.Parkable``) ----------------------------
    @property
    def socket(self) -> Sock:
        return self._transport.sock

    @property
    def deadline(self) -> float:
        """When the heartbeat or a token's expiry needs it next."""
        return self._wake_at()

    @property
    def parked(self) -> bool:
        return self._parked

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Its first spell: the ``open`` packet, then what the client sends until it is
        quiet (it parks) or the session ends."""
        if not self.probing:
            self.out.push(data_frame(self.handshake([])))
        task_status.started()
        await self._spell()

    async def resume(self) -> None:
        """A later spell, run by the parking: its socket is readable, its heartbeat or a
        token is due, or it was told to close."""
        self._parked = False
        await self._spell()

    async def _spell(self) -> None:
        quiet = False
        try:
            with self._boundary() as failure:
                await trio.lowlevel.checkpoint_if_cancelled()  # resumed as the node stops
                ended = await self._transport.read(beating=True, parks=self.parks)
                quiet = ended is None
                self._disconnect = self._disconnect or ended
            if not quiet:
                await self._served(failure)
        finally:
            if quiet:
                self._scope, self._parked = None, True  # a close wakes it
                self._s.parking.park(self)
            else:
                await self._transport.finish(self._disconnect or CloseCode.NORMAL)


class AdoptedSocket(EngineIOSocket):
    """The WebSocket a long-polling session held by another node upgrades to: the probe
    and the upgrade are relayed to that node (``actors.socketio_relay``), which hands the
    session over (``Handover``); from then on it is an ``EngineIOSocket`` like any other.
    No heartbeat before (the polling session keeps it), but the upgrade must be done
    within ``ping_timeout_ms``."""

    __slots__ = ("_held", "_relays")
    probing = True
    parks = False  # its task holds the nursery of its relayed requests

    def __init__(self, sid: str, sock: Sock, reader: FrameReader, **engine) -> None:
        super().__init__(sock, reader, **engine)
        self.sid = sid
        self._next_ping = math.inf
        self._pong_due = trio.current_time() + self._config.ping_timeout_ms / 1000  # the upgrade's deadline
        self._held = None  # its relay room, once it holds the session
        self._relays: trio.Nursery | None = None  # where relayed requests are refused

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as relays:
            self._relays = relays
            try:
                await super().run(task_status=task_status)
            finally:
                if self._held is not None:
                    self._held.remove(self.sid)
                self._relays = None

    def _on_relayed(self, evt: Evt) -> None:
        request = relayed_request(self.sid, evt)
        if request is not None and self._relays is not None:
            self._relays.start_soon(reply_to, self._s, self.sid, request,
                                    RelayReply(400, "this session moved to its WebSocket"))

    async def _relay(self, method: Method) -> RelayReply:
        reply = await relay(self._s, self.sid, method, timeout_s=self._config.ping_timeout_ms / 1000)
        if reply is None or reply.status != 200:
            raise EngineIOError(reply.body if reply is not None else "Session ID unknown")
        return reply

    async def probed(self) -> None:
        """The holder's pending GET ends with a noop (the client then pauses polling)."""
        await self._relay(Method.PROBE)

    async def upgraded(self, queue: OutboundQueue) -> None:
        """The holder hands the session over: its packets leave first, its namespace
        sessions carry on here (the same ids, resumed from their cursors), the heartbeat
        starts; a polling request of the session relayed from now on is refused at once."""
        handover = (await self._relay(Method.UPGRADE)).handover
        self._held = relay_room(self._s, self.sid)
        self._held.add(self.sid, FRAMES, self._on_relayed)
        for packet in handover.packets if handover is not None else ():
            queue.push(data_frame(packet.encode()))
        for state in handover.namespaces if handover is not None else ():
            admitted = self._admit(state.namespace, state.token or None)
            if admitted is not None:
                await self._start_session(state.namespace, *admitted, token=state.token, pid=state.pid,
                                          since=Cursor.parse(state.cursor), session=state.session,
                                          handed_over=state.rooms)
        self._next_ping = trio.current_time() + self._config.ping_interval_ms / 1000
        self._pong_due = None


class PollBuffer:
    """An Engine.IO long-polling session's outbound packets until a GET takes them,
    budgeted as a socket's queue. What is pushed is framed for WebSocket (a broadcast is
    encoded once); the frame's header is dropped here."""

    __slots__ = ("packets", "nbytes", "max_frames", "max_bytes", "closed", "taken_cursors", "_owner", "_arrived",
                 "_taken")

    def __init__(self, *, max_frames: int, max_bytes: int, owner: EngineIO, tracks_cursors: bool) -> None:
        """``tracks_cursors``: whether the session may be handed over (a bus spanning nodes)."""
        self.packets: list[bytes] = []
        #: Per namespace, the cursor of the last durable event a GET took (None: not tracked).
        self.taken_cursors: dict[str, str] | None = {} if tracks_cursors else None
        self.nbytes = 0
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.closed = False
        self._owner = owner
        self._arrived = trio.Event()
        self._taken = trio.Event()

    def push(self, frame: bytes) -> None:
        if self.closed:
            return
        packet = ws_payload(frame)
        self.packets.append(packet)
        self.nbytes += len(packet)
        if len(self.packets) > self.max_frames or self.nbytes > self.max_bytes:
            self.closed = True
            self._owner.slow_consumer()
        self._arrived.set()

    async def wait_flushed(self) -> None:
        """Return once a GET took what is queued (flow control of a resume's pages)."""
        while self.packets and not self.closed:
            await self._taken.wait()

    async def take(self) -> list[bytes]:
        """What is queued, once there is some (or the session ended: nothing)."""
        while not self.packets and not self.closed:
            await self._arrived.wait()
            self._arrived = trio.Event()
        packets, self.packets, self.nbytes = self.packets, [], 0
        if self.taken_cursors is not None:
            for packet in packets:
                if (taken := event_cursor(packet)) is not None:
                    self.taken_cursors[taken[0]] = taken[1]
        self._taken.set()
        self._taken = trio.Event()
        return packets

    def end(self) -> None:
        self.closed = True
        self._arrived.set()
        self._taken.set()


def ws_payload(frame: bytes) -> bytes:
    """The payload of an unmasked WebSocket frame (``protocol.wsframes.data_frame``)."""
    length = frame[1] & 0x7F
    return frame[2:] if length < 126 else frame[4:] if length == 126 else frame[10:]


class PollingEngine(EngineIO):
    """An Engine.IO session over long-polling requests: a GET takes the packets queued
    (waiting for some), a POST gives packets; one of each at a time (else 400, and the
    session ends). Its own task keeps the heartbeat; it ends on a missed pong, a close
    packet, or the node's draining, and is then forgotten by ``registry``. On a bus that
    spans nodes, the requests other nodes relay arrive through its room
    (``protocol.polling_relay``) and are served as if they came here."""

    __slots__ = ("_registry", "_serving", "_posted", "_upgrade", "_upgrading", "_moved", "_relays", "_nudging")

    def __init__(self, *, services: ConnectionServices, verifier: TokenVerifier, config: SocketIOConfig,
                 wires: dict[str, SocketIOWire], token: str | None, registry: dict[str, PollingEngine],
                 sid: str) -> None:
        """``sid``: drawn by the node, which knows its own from any other's (``registry``
        holds the sessions it serves)."""
        cfg = services.config.connection
        out = PollBuffer(max_frames=cfg.outbound_max_frames, max_bytes=cfg.outbound_max_bytes, owner=self,
                         tracks_cursors=services.bus.spans_nodes)
        super().__init__(out, services=services, verifier=verifier, config=config, wires=wires, token=token)
        self.sid = sid
        self._registry = registry
        self._serving: set[str] = set()  # the methods of the requests being served ("GET", "POST")
        self._posted = trio.Event()  # set when a POST was served
        self._upgrade: WebSocketTransport | None = None  # the WebSocket it moved to
        self._upgrading = trio.CancelScope()  # around the WebSocket's reading
        self._moved = False  # handed over to another node
        self._nudging = False  # GETs are ended with noops while an upgrade is under way
        self._relays: trio.Nursery | None = None  # where relayed requests are served
        registry[self.sid] = self

    session_socket = None
    hands_over = True

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve the session; reports once it takes requests (relayed ones too)."""
        room = relay_room(self._s, self.sid) if self._s.bus.spans_nodes else None
        async with trio.open_nursery() as relays:  # outlives the session: a relayed GET answers its end
            self._relays = relays
            if room is not None:
                room.add(self.sid, FRAMES, self._on_relayed)
            try:
                with self._boundary() as failure:
                    task_status.started()
                    await self._keep_beating()
                await self._served(failure)
            finally:
                if room is not None:
                    room.remove(self.sid)
                self._relays = None
                self._registry.pop(self.sid, None)
                self._upgrading.cancel()
                if isinstance(self.out, PollBuffer):
                    self.out.end()

    def close(self, disconnect: Disconnect) -> None:
        super().close(disconnect)
        self._upgrading.cancel()

    # -- the upgrade to WebSocket ----------------------------------------------------------
    def _check_upgradable(self) -> None:
        """One upgrade per session, here or on another node: ``EngineIOError`` for a second."""
        if self._moved or self._upgrade is not None or not isinstance(self.out, PollBuffer):
            raise EngineIOError("this session is upgrading or upgraded")

    async def upgrade(self, sock: Sock, reader: FrameReader) -> None:
        """A WebSocket opened for this session (``?sid=``): it answers the probe, and on
        the client's ``5`` the session moves to it (what was queued for the next GET goes
        first); the session then lives as long as this socket."""
        try:
            self._check_upgradable()
        except EngineIOError:
            trio.lowlevel.notify_closing(sock)
            sock.close()
            return
        transport = self._upgrade = WebSocketTransport(self, sock, reader, socket_queue(sock, self._s, self),
                                                       probing=True)
        ended = CONNECTION_LOST
        try:
            with self._upgrading:
                ended = await transport.read(beating=False)
            if transport.queue is self.out:  # it was the session's transport: the session ends with it
                self.close(ended)
            else:  # the probe failed: the session goes on polling, and may try again
                self._upgrade = None
        finally:
            await transport.finish(self._disconnect or ended)

    async def probed(self) -> None:
        """A WebSocket answers the probe: the pending GET ends with a noop, and so does
        each GET after it until the upgrade is done (the client pauses polling, then
        sends ``5``, only once the GET it has out returns; one may be sent just after the
        first noop), for ``ping_timeout_ms`` at most."""
        self.out.push(data_frame(NOOP_PACKET))
        if not self._nudging and self._relays is not None:
            self._nudging = True
            self._relays.start_soon(self._nudge_polls)

    async def _nudge_polls(self) -> None:
        with trio.move_on_after(self._config.ping_timeout_ms / 1000):
            while isinstance(self.out, PollBuffer) and not self.out.closed and not self._moved:
                if "GET" in self._serving and not self.out.packets:
                    self.out.push(data_frame(NOOP_PACKET))
                await trio.sleep(NUDGE_S)
        self._nudging = False

    async def upgraded(self, queue: OutboundQueue) -> None:
        """The client moved to the WebSocket: what was queued for polling leaves there first."""
        polled = self.out
        for packet in polled.packets:
            if packet != NOOP_PACKET:  # the noop was the pending GET's
                queue.push(data_frame(packet))
        polled.packets.clear()
        polled.end()
        self.out = self.namespace_out.queue = queue

    async def _keep_beating(self) -> None:
        with self._scope:
            await self._beat_until_ended()

    async def _beat_until_ended(self) -> None:
        while True:
            await trio.sleep_until(self._wake_at())
            now = trio.current_time()
            if not self._beat(now):
                self._disconnect = self._disconnect or CONNECTION_LOST
                return
            await self._expire(now)
            if self._disconnect is not None:
                return

    def _may_end_sessions(self) -> bool:
        return "POST" not in self._serving

    @contextlib.contextmanager
    def _alone(self, method: str) -> Iterator[None]:
        """Serve a GET or a POST of this session, one of each at a time: a second one at
        once, or one after the upgrade, is ``EngineIOError`` (the first also ends the session)."""
        if self._moved or not isinstance(self.out, PollBuffer):
            raise EngineIOError("this session moved to its WebSocket")
        if method in self._serving:
            self.close(CloseCode.PROTOCOL_ERROR)
            raise EngineIOError(f"one {method} at a time")
        self._serving.add(method)
        try:
            yield
        finally:
            self._serving.discard(method)
            if method == "POST":
                self._posted.set()

    async def get(self) -> bytes:
        """A GET's answer: the packets queued, once there are some; once the session ended,
        a noop when the client closed it, else a close packet."""
        with self._alone("GET"):
            packets = await self.out.take()
        if not packets:
            closed_by_client = self._disconnect is CloseCode.NORMAL
            return engineio.encode_text(engineio.PacketType.NOOP if closed_by_client else engineio.PacketType.CLOSE)
        return engineio.encode_payload(packets)  # server packets are text

    async def post(self, body: bytes) -> None:
        """The packets of a POST, handled in order; one that breaks the protocol ends the
        session (``EngineIOError`` / ``SocketIOError``)."""
        with self._alone("POST"):
            try:
                for packet in engineio.decode_payload(body, self._config.max_payload):
                    await self._on_packet(packet)
            except (EngineIOError, SocketIOError):
                self.close(CloseCode.PROTOCOL_ERROR)
                raise
        if self._disconnect is not None:
            self.close(self._disconnect)

    # -- requests relayed by other nodes ---------------------------------------------------
    def _on_relayed(self, evt: Evt) -> None:
        """A request of this session another node relayed (from its room: never blocks)."""
        request = relayed_request(self.sid, evt)
        if request is not None and self._relays is not None:
            self._relays.start_soon(self._serve_relayed, request)

    async def _serve_relayed(self, request: Relayed) -> None:
        """Carry out ``request`` as if it came here; its reply to the node that relayed it."""
        reply = RelayReply(200)
        try:
            if request.method is Method.GET:
                reply = RelayReply(200, (await self.get()).decode())
            elif request.method is Method.POST:
                await self.post(request.body.encode())
                reply = RelayReply(200, "ok")
            elif request.method is Method.PROBE:
                self._check_upgradable()
                await self.probed()
            else:
                reply = RelayReply(200, handover=await self._hand_over())
        except (EngineIOError, SocketIOError) as exc:
            reply = RelayReply(400, str(exc))
        await reply_to(self._s, self.sid, request, reply)

    async def _hand_over(self) -> Handover:
        """The client upgraded on another node: end here quietly and hand the session
        over. A POST being served finishes first (within half the ping timeout); the
        packets queued go along, except durable events, which resume from the cursors."""
        self._check_upgradable()
        self._moved = True
        with trio.move_on_after(self._config.ping_timeout_ms / 2000):
            while "POST" in self._serving:
                self._posted = trio.Event()
                await self._posted.wait()
        polled = self.out
        handover = Handover(
            [packet.decode() for packet in polled.packets if packet != NOOP_PACKET and event_cursor(packet) is None],
            [session.handover_state(polled.taken_cursors.get(session.namespace))
             for session in self._sessions.values() if session.state is ConnectionState.OPEN])
        polled.packets.clear()
        polled.end()
        self.close(CONNECTION_LOST)
        return handover
