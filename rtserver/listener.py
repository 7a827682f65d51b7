"""The single port: WebSocket upgrades, streams, polls, publishes and commands stay on the fast path, the rest goes to hypercorn.

Each accepted socket is read request by request (heads parsed by h11, bounded in size
and time):

* a WebSocket upgrade to ``/hub/ws`` or ``/portal/ws`` is authenticated here and becomes
  a ``WebSocketConnection`` actor on the plain non-blocking socket (wsproto parses what
  the client sends; broadcasts are framed once, see ``protocol.wsframes``);
* ``GET /{ns}/sse`` is authenticated and checked here and becomes an ``SseStream`` actor
  on the socket (its frames go through the same writer as WebSocket frames);
  ``GET /{ns}/poll`` becomes a ``PollRequest``, answered here with h11, and the
  connection stays here for the next request;
* ``POST /v1/publish`` and ``POST /{ns}/commands`` with a Content-Length body are framed
  by h11 and answered here (``rtserver.http.post_handlers``), and
  the connection stays here for the next request (keep-alive). Measured: hypercorn
  spends ~650 µs of CPU per request on this machine, h11 alone a small fraction, and
  ingest is the path every event takes (bench/RESULTS.md);
* anything else is handed, from that request's first byte on and with the rest of the
  connection, to hypercorn's own connection handler serving the quart-trio app, so
  every other HTTP feature (chunking, ``Expect``, errors, the routes) is hypercorn's.
"""

from __future__ import annotations

import errno
import secrets
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit

import h11
import msgspec
import structlog
import trio
import wsproto.handshake
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request

from actors.connection import ConnectionServices, Joining
from actors.poll import PollRequest
from actors.sse import SseStream
from actors.websocket import WebSocketConnection
from protocol.catalog import Namespace
from protocol.cursors import Cursor
from protocol.errors import CloseCode, ReplyCode, ReplyError
from protocol.presence import PresenceState
from protocol.rooms import is_identifier
from protocol.wires import WS_JSON, WS_WIRES
from protocol.wsframes import close_frame
from rtserver.auth import AuthError, Claims, TokenVerifier, admit, authorize_room, bearer_token
from rtserver.config import ServerConfig
from rtserver.http import MAX_POST_BYTES, STATUS_OF_REPLY, PostHandler
from rtserver.sockets import half_close_and_wait_eof

log = structlog.get_logger("rtserver.listener")

WS_PATHS = {f"/{ns.value}/ws": ns for ns in Namespace}
SSE_PATHS = {f"/{ns.value}/sse": ns for ns in Namespace}
POLL_PATHS = {f"/{ns.value}/poll": ns for ns in Namespace}
#: Longest session id a client may give back (``?session=``).
MAX_SESSION_ID = 64
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
HEAD_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_json = msgspec.json.Encoder()


class ReplayStream(trio.abc.HalfCloseableStream):
    """A socket stream that first returns bytes already read from the socket."""

    def __init__(self, sock: socket.socket, prefix: bytes) -> None:
        self.socket = trio.socket.from_stdlib_socket(sock)
        self._stream = trio.SocketStream(self.socket)
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            await trio.lowlevel.checkpoint()
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class Listener:
    def __init__(
        self,
        config: ServerConfig,
        services: ConnectionServices,
        verifier: TokenVerifier,
        serve_http: Callable[[trio.abc.HalfCloseableStream], Awaitable[None]],
        post_handlers: dict[str, PostHandler],
    ) -> None:
        self._config = config
        self._services = services
        self._verifier = verifier
        self._serve_http = serve_http
        self._post_handlers = post_handlers
        self._nursery: trio.Nursery | None = None
        self._sock: socket.socket | None = None
        self._accepting = trio.CancelScope()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen and accept until ``stop_accepting``; reports the bound port."""
        sock = socket.socket(socket.AF_INET6 if ":" in self._config.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._config.host, self._config.port))
        sock.listen(self._config.backlog)
        sock.setblocking(False)
        self._sock = sock
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(sock.getsockname()[1])
                with self._accepting:
                    await self._accept_loop(sock, nursery)
        finally:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    def stop_accepting(self) -> None:
        self._accepting.cancel()
        if self._sock is not None:
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()

    async def _accept_loop(self, sock: socket.socket, nursery: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(sock)
            while True:
                try:
                    client, _ = sock.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        log.warning("accept_failed", error=str(exc))
                        await trio.sleep(0.1)
                        break
                    raise
                nursery.start_soon(self._handle, client)

    async def _handle(self, sock: socket.socket) -> None:
        """Serve requests at their boundaries: posts and polls here, upgrades and streams as connections,
        anything else (with the rest of the connection) by hypercorn."""
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = bytearray()  # received, not yet served: always starts at a request
        timeout = self._config.handshake_timeout_s
        while True:
            head_end = None
            with trio.move_on_after(timeout):
                head_end = await self._read_head(sock, pending)
            if head_end is None or head_end < 0:
                if head_end is not None:
                    _send_quietly(sock, HEAD_TOO_LARGE)
                await _linger_close(sock)
                return
            parser = h11.Connection(h11.SERVER, max_incomplete_event_size=self._config.max_request_head_bytes)
            parser.receive_data(bytes(pending[:head_end]))
            try:
                request = parser.next_event()
            except h11.RemoteProtocolError:
                _send_quietly(sock, BAD_REQUEST)
                await _linger_close(sock)
                return
            path = urlsplit(request.target.decode("latin-1")).path
            if path in WS_PATHS and _is_upgrade(request):
                await self._websocket(sock, bytes(pending), WS_PATHS[path])
                return
            length = _plain_body_length(request)
            if request.method == b"GET" and not length and (path in SSE_PATHS or path in POLL_PATHS):
                del pending[:head_end]
                if path in SSE_PATHS:
                    await self._sse(sock, parser, request, SSE_PATHS[path])
                    return
                if not await self._poll(sock, parser, request, POLL_PATHS[path]):
                    sock.close()
                    return
                timeout = self._config.keep_alive_s
                continue
            handler = self._post_handlers.get(path) if request.method == b"POST" else None
            if handler is None or length is None or length > MAX_POST_BYTES:
                await self._serve_http(ReplayStream(sock, bytes(pending)))
                return
            if not await self._post(sock, parser, request, pending, head_end, length, handler):
                sock.close()
                return
            timeout = self._config.keep_alive_s

    async def _read_head(self, sock: socket.socket, pending: bytearray) -> int | None:
        """Receive until ``pending`` holds a whole request head: its length; -1 for a head
        over ``max_request_head_bytes``; None when the client went away."""
        limit = self._config.max_request_head_bytes
        while (end := pending.find(b"\r\n\r\n", 0, limit + 4)) < 0:
            if len(pending) > limit:
                return -1
            if not await _receive_into(sock, pending):
                return None
        return end + 4

    async def _post(
        self, sock: socket.socket, parser: h11.Connection, request: h11.Request,
        pending: bytearray, head_end: int, length: int, handler: PostHandler,
    ) -> bool:
        """Serve one fast POST (h11 frames it); False when the connection must close."""
        body_end = head_end + length
        with trio.move_on_after(self._config.handshake_timeout_s):
            while len(pending) < body_end:
                if not await _receive_into(sock, pending):
                    return False
        if len(pending) < body_end:
            return False
        parser.receive_data(bytes(pending[head_end:body_end]))
        del pending[:body_end]
        body = bytearray()
        while type(event := parser.next_event()) is not h11.EndOfMessage:
            body += event.data
        query = urlsplit(request.target.decode("latin-1")).query
        return await self._respond(sock, parser, *await handler(query, _headers(request), bytes(body)))

    async def _respond(self, sock: socket.socket, parser: h11.Connection, status: int, body: bytes,
                       extra_headers: list[tuple[bytes, bytes]] = ()) -> bool:
        """Send one JSON response (bounded); False when the connection must close."""
        response = parser.send(h11.Response(status_code=status, headers=[
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *extra_headers]))
        response += parser.send(h11.Data(data=body)) + parser.send(h11.EndOfMessage())
        with trio.move_on_after(self._config.handshake_timeout_s):
            if await _send_all(sock, response):
                return parser.our_state is h11.DONE
        return False

    # -- SSE and long-poll -----------------------------------------------------------------
    def _http_session(self, request: h11.Request, ns: Namespace) -> tuple[Claims, Cursor | None, str, Joining]:
        """Check an SSE or poll request: its claims, cursor, session id and what it joins.

        Raises ``AuthError`` (401/403) or ``ReplyError`` (4xx) naming what is wrong: nothing
        is started for a request that cannot be served as asked."""
        headers = _headers(request)
        query = dict(parse_qsl(urlsplit(request.target.decode("latin-1")).query))
        token = bearer_token(headers, query, [])
        if token is None:
            raise AuthError(CloseCode.UNAUTHENTICATED, "no token")
        claims = self._verifier.verify(token)
        admit(claims, ns)
        since_text = query.get("since") or headers.get("last-event-id")
        since = Cursor.parse(since_text) if since_text else None
        session = query.get("session", "")
        if not (session and len(session) <= MAX_SESSION_ID and is_identifier(session)):
            session = secrets.token_urlsafe(12)
        return claims, since, session, self._joining(query, claims, ns)

    def _joining(self, query: dict[str, str], claims: Claims, ns: Namespace) -> Joining:
        """The rooms (each authorized), fresh rooms and presence a request's query asks for;
        raises ``ReplyError``."""
        rooms = tuple(dict.fromkeys(r for r in query.get("rooms", "").split(",") if r))
        if len(rooms) > self._services.config.connection.max_rooms:
            raise ReplyError(ReplyCode.TOO_MANY_ROOMS, "too many rooms")
        for room in rooms:
            authorize_room(claims, ns, room)
        fresh = frozenset(r for r in query.get("fresh", "").split(",") if r)
        if not fresh <= set(rooms):
            raise ReplyError(ReplyCode.BAD_ROOM, "?fresh= names rooms that ?rooms= does not")
        presence = query.get("presence")
        if presence not in (None, PresenceState.ONLINE, PresenceState.AWAY):
            raise ReplyError(ReplyCode.BAD_FRAME, "?presence= is online or away")
        return Joining(rooms, fresh, PresenceState(presence) if presence else None)

    def _refuse(self, exc: AuthError | ReplyError, ns: Namespace) -> tuple[int, bytes]:
        """The status and JSON body of a refused SSE or poll request."""
        if isinstance(exc, AuthError):
            self._services.metrics.auth_failures.labels(exc.disconnect.reason).inc()
            log.info("request_refused", code=exc.disconnect.code, reason=exc.message, ns=ns.value)
            return exc.status, _json.encode({"error": exc.disconnect.code, "message": exc.message})
        return STATUS_OF_REPLY.get(exc.code, 400), _json.encode({"error": int(exc.code), "message": exc.message})

    async def _sse(self, sock: socket.socket, parser: h11.Connection, request: h11.Request, ns: Namespace) -> None:
        try:
            claims, since, session, joining = self._http_session(request, ns)
        except (AuthError, ReplyError) as exc:
            await self._respond(sock, parser, *self._refuse(exc, ns), [(b"connection", b"close")])
            await _linger_close(sock)
            return
        stream = SseStream(sock, services=self._services, claims=claims, ns=ns, session=session,
                           since=since, joining=joining)
        self._nursery.start_soon(stream.run)

    async def _poll(self, sock: socket.socket, parser: h11.Connection, request: h11.Request, ns: Namespace) -> bool:
        """Serve one long-poll request; False when the connection must close."""
        try:
            claims, since, session, joining = self._http_session(request, ns)
        except (AuthError, ReplyError) as exc:
            return await self._respond(sock, parser, *self._refuse(exc, ns))
        poll = PollRequest(sock, services=self._services, claims=claims, ns=ns, session=session,
                           since=since, joining=joining)
        await poll.run()
        if poll.answer is None:
            return False
        return await self._respond(sock, parser, 200, poll.answer, [(b"cache-control", b"no-store")])

    # -- WebSocket -------------------------------------------------------------------------
    async def _websocket(self, sock: socket.socket, received: bytes, ns: Namespace) -> None:
        connection = self._accept_websocket(sock, received, ns)
        if isinstance(connection, WebSocketConnection):
            # The connection runs as a task of its own: nothing of the handshake (this
            # frame, the request, the parsers) stays referenced while it lives.
            self._nursery.start_soon(connection.run)
        elif connection is not None:
            await _linger_close(sock)

    def _accept_websocket(
        self, sock: socket.socket, received: bytes, ns: Namespace,
    ) -> WebSocketConnection | AuthError | None:
        """Answer the upgrade: a ``WebSocketConnection`` to run, an ``AuthError`` already sent as a
        close frame (the caller lingers, then closes), or None when refused and closed."""
        head_end = received.find(b"\r\n\r\n") + 4
        handshake = wsproto.handshake.H11Handshake(ConnectionType.SERVER)
        handshake.receive_data(received[:head_end])
        request = next((e for e in handshake.events() if isinstance(e, Request)), None)
        if request is None:
            _send_quietly(sock, BAD_REQUEST)
            sock.close()
            return None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.extra_headers}
        query = dict(parse_qsl(urlsplit(request.target).query))
        if not self._origin_allowed(headers.get("origin"), request.host):
            self._reject(sock, handshake, 403, "origin not allowed")
            return None
        wire_name = next((p for p in request.subprotocols if p in WS_WIRES), None)
        wire = WS_WIRES[wire_name] if wire_name else WS_JSON
        try:
            since = Cursor.parse(query["since"]) if query.get("since") else None
        except ReplyError as err:
            self._reject(sock, handshake, 400, err.message)
            return None
        accept = handshake.send(AcceptConnection(subprotocol=wire_name))
        metrics = self._services.metrics
        try:
            token = bearer_token(headers, query, request.subprotocols)
            if token is None:
                raise AuthError(CloseCode.UNAUTHENTICATED, "no token")
            claims = self._verifier.verify(token)
            admit(claims, ns)
            try:
                joining = self._joining(query, claims, ns)
            except ReplyError as err:  # the rooms asked for: a close frame the client can read
                forbidden = err.code is ReplyCode.FORBIDDEN
                raise AuthError(CloseCode.FORBIDDEN if forbidden else CloseCode.PROTOCOL_ERROR, err.message) from None
        except AuthError as exc:
            metrics.auth_failures.labels(exc.disconnect.reason).inc()
            log.info("handshake_refused", code=exc.disconnect.code, reason=exc.message, ns=ns.value)
            _send_quietly(sock, accept + close_frame(exc.disconnect.code, exc.message))
            return exc
        ws = handshake.connection
        trailing = received[head_end:]
        if trailing:
            ws.receive_data(trailing)
        if not _send_quietly(sock, accept):
            sock.close()
            return None
        return WebSocketConnection(
            sock, ws, services=self._services, claims=claims, ns=ns, wire=wire,
            session=secrets.token_urlsafe(12), since=since, joining=joining,
        )

    def _origin_allowed(self, origin: str | None, host: str) -> bool:
        allowed = self._config.allowed_origins
        if origin is None or "*" in allowed or origin in allowed:
            return True
        return not allowed and urlsplit(origin).netloc == host

    def _reject(self, sock: socket.socket, handshake, status: int, message: str) -> None:
        body = ('{"error":%d,"message":"%s"}' % (status, message.replace('"', "'"))).encode()
        data = handshake.send(RejectConnection(
            status_code=status,
            headers=[(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                     (b"connection", b"close")],
            has_body=True,
        ))
        data += handshake.send(RejectData(data=body, body_finished=True))
        _send_quietly(sock, data)
        sock.close()


def _plain_body_length(request: h11.Request) -> int | None:
    """The Content-Length of a request whose body needs no more than that to frame it
    (no chunking, no ``Expect: 100-continue``); None otherwise."""
    length = None
    for name, value in request.headers:
        if name == b"content-length":
            length = int(value)
        elif name in (b"transfer-encoding", b"expect"):
            return None
    return length


def _headers(request: h11.Request) -> dict[str, str]:
    """The request's headers by lower-case name (h11 lower-cases them)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers}


def _is_upgrade(request: h11.Request) -> bool:
    return any(k == b"upgrade" and v.lower() == b"websocket" for k, v in request.headers)


async def _receive_into(sock: socket.socket, pending: bytearray) -> bool:
    """Append what the socket has to ``pending``; False at EOF or on an error."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            return False
        pending += data
        return bool(data)


async def _send_all(sock: socket.socket, data: bytes) -> bool:
    """Write all of ``data`` (bound it with a cancel scope); False if the socket broke."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
        except OSError:
            return False
    return True


def _send_quietly(sock: socket.socket, data: bytes) -> bool:
    """Best-effort non-blocking write of a small handshake answer."""
    try:
        return sock.send(data) == len(data)
    except OSError:
        return False


async def _linger_close(sock: socket.socket) -> None:
    """Close after the peer has read our answer (bounded)."""
    with trio.move_on_after(2):
        await half_close_and_wait_eof(sock)
    sock.close()
