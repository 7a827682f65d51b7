"""The single port: WebSocket upgrades, streams, polls, publishes and commands stay on the fast path, the rest goes to hypercorn.

Each accepted socket is read request by request (heads parsed by h11, bounded in size
and time), after its TLS handshake when ``server.tls_cert_file`` is set (a ``TlsSocket``
then stands for the socket everywhere below: ``rtserver.backends.tls``):

* a WebSocket upgrade to ``/hub/ws`` or ``/portal/ws`` is checked (``protocol.upgrade``),
  authenticated and answered here from the head h11 parsed, and becomes a
  ``WebSocketConnection`` actor on the plain non-blocking socket (``protocol.wsreader``
  parses what the client sends; broadcasts are framed once, see ``protocol.wsframes``);
* ``GET /{ns}/sse`` is authenticated and checked here and becomes an ``SseStream`` actor
  on the socket (its frames go through the same writer as WebSocket frames);
  ``GET /{ns}/poll`` becomes a ``PollRequest``, answered here with h11, and the
  connection stays here for the next request;
* ``POST /v1/publish`` and ``POST /{ns}/commands`` are framed by h11 (a Content-Length
  or a chunked body, ``Expect: 100-continue`` answered) and answered here
  (``rtserver.http.post_handlers``), and the connection stays here for the next request
  (keep-alive). Measured: hypercorn spends ~650 µs of CPU per request on this machine,
  h11 alone a small fraction, and ingest is the path every event takes (bench/RESULTS.md);
* anything else is handed, from that request's first byte on and with the rest of the
  connection, to hypercorn's own connection handler serving the quart-trio app.

These paths are the rows of ``Listener.routes`` (a ``Route`` says which method it takes,
whether only without a body, whether it is an upgrade, whether other origins may use it):
a new transport is one more row. A route says what becomes of the connection (``Next``):
it stays for its next request, an actor took the socket, or the listener closes it.

Bounds, before anything is parsed: a request head of ``server.max_request_head_bytes``
(431 over it), read within ``server.handshake_timeout_s`` (then ``keep_alive_s`` between
requests); a body declared over ``MAX_POST_BYTES`` is answered 413 at once, unread; a
fast POST's body must arrive whole within ``handshake_timeout_s`` (408) and stay within
``MAX_POST_BYTES`` however it is chunked (413). A WebSocket path answers only a
well-formed upgrade (``protocol.upgrade``: 400 or 426 otherwise).

Each request, and each connection actor started here, runs inside an error boundary
(``rtserver.backends.boundary``): an unexpected exception is logged, counted and answered (HTTP 500
JSON with a correlation id, close 1011) and ends that request or connection alone; the
socket of a connection no actor took is closed in ``finally``.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import secrets
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import h11
import structlog
import trio

from actors.connection import NOTHING_MORE, Connection, ConnectionServices, Joining
from actors.poll import PollRequest
from actors.socketio import AdoptedSocket, EngineIOSocket, PollingEngine
from actors.socketio_relay import relay
from actors.sse import SseStream
from actors.websocket import WebSocketConnection
from protocol.catalog import Namespace
from protocol.cors import cors_headers, origin_allowed, preflight_headers
from protocol.cursors import Cursor
from protocol.engineio import EngineIOError
from protocol.errors import CloseCode, ReplyCode, ReplyError
from protocol.polling_relay import Method
from protocol.presence import PresenceState
from protocol.rooms import is_identifier
from protocol.socketio import SocketIOError
from protocol.upgrade import UpgradeRefused, accept_response, check_upgrade, offers_deflate, subprotocols
from protocol.wires import WS_DEFLATE, WS_JSON, WS_WIRES, SocketIOWire
from protocol.wsframes import close_frame
from protocol.wsreader import FrameReader
from rtserver.backends.auth import AuthError, Claims, TokenVerifier, admission, authorize_room, bearer_token
from rtserver.backends.boundary import contained, internal_error_body
from rtserver.backends.config import ServerConfig
from rtserver.backends.sockets import Sock, half_close_and_wait_eof, recv_nowait, send_all, unsent, wait_readable
from rtserver.backends.tls import PLAIN_HTTP_REFUSED, HANDSHAKE_RECORD, ServerTls, TlsSocket
from rtserver.http import MAX_POST_BYTES, PostHandler, error_body, refusal

log = structlog.get_logger("rtserver.listener")

#: Longest session id a client may give back (``?session=``).
MAX_SESSION_ID = 64
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
#: Engine.IO's answer to a request of a session no node holds (its client starts a new one).
UNKNOWN_SESSION = b'{"code":1,"message":"Session ID unknown"}'
HEAD_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
#: ``rt_tls_handshake_failures_total``'s reasons, by OpenSSL's (any other: "other").
_TLS_FAILURES = {"PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
                 "TLSV13_ALERT_CERTIFICATE_REQUIRED": "no client certificate",
                 "CERTIFICATE_VERIFY_FAILED": "client certificate refused",
                 "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "server certificate refused",
                 "TLSV1_ALERT_UNKNOWN_CA": "server certificate refused",
                 "SSLV3_ALERT_BAD_CERTIFICATE": "server certificate refused",
                 "UNSUPPORTED_PROTOCOL": "protocol version", "NO_SHARED_CIPHER": "no shared cipher",
                 "WRONG_VERSION_NUMBER": "not TLS", "HTTP_REQUEST": "not TLS"}
#: Reasons of the handshakes that did not fail in OpenSSL.
_TLS_ABANDONED = ("client left", "timeout")
#: Why a fast POST's body was refused, by status.
_BODY_REFUSALS = {400: "malformed request body framing", 408: "the request body did not arrive in time",
                  413: f"body over {MAX_POST_BYTES} bytes"}


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request on the fast path: its socket, h11 parser and head, what was received
    after the head (a POST's body, pipelined requests), and the CORS headers its answer carries."""

    sock: Sock
    parser: h11.Connection
    request: h11.Request
    rest: bytearray
    cors: list[tuple[bytes, bytes]]


class Next(enum.Enum):
    """What becomes of a connection once a request on it was served."""

    #: It stays: the listener reads its next request.
    REQUEST = "request"
    #: An actor (or the HTTP app) owns the socket now.
    HANDED_OVER = "handed over"
    #: Done: the listener closes it.
    CLOSE = "close"


@dataclass(frozen=True, slots=True)
class Route:
    """How the listener serves a path (``Listener.routes``: a new transport is a row)."""

    #: Serves one request, and says what becomes of the connection. None: the HTTP app
    #: serves the path.
    serve: Callable[[Exchange], Awaitable[Next]] | None
    #: The method served here (None: any; the route answers the others itself); a request
    #: of another method goes to the HTTP app.
    method: bytes | None = None
    #: Served here only without a body (else the HTTP app answers).
    bodiless: bool = False
    #: Served on its head alone, before any check of a body (an upgrade).
    upgrade: bool = False
    #: A page of another origin may use it, when ``server.allowed_origins`` lets it.
    cross_origin: bool = False


class ReplayStream(trio.abc.HalfCloseableStream):
    """A connection handed to hypercorn: first the bytes already read from it, then the
    rest of what it sends."""

    def __init__(self, sock: Sock, prefix: bytes) -> None:
        self._sock = sock
        self._prefix = prefix
        #: The TCP socket (hypercorn reads the addresses from it).
        self.socket = sock.raw if type(sock) is TlsSocket else sock

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            await trio.lowlevel.checkpoint()
            return data
        while (data := recv_nowait(self._sock, max_bytes or 65536)) is None:
            await wait_readable(self._sock)
        await trio.lowlevel.checkpoint()
        return data

    async def send_all(self, data) -> None:
        if not await send_all(self._sock, data):
            raise trio.BrokenResourceError("the client's connection broke")

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self._sock)

    async def send_eof(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()
        await trio.lowlevel.checkpoint()


class TlsReplayStream(ReplayStream):
    """A ``ReplayStream`` over TLS, as hypercorn asks of one (scheme ``https``): its
    handshake is done already."""

    async def do_handshake(self) -> None:
        await trio.lowlevel.checkpoint()

    def selected_alpn_protocol(self) -> str:
        return self._sock.selected_alpn_protocol() or "http/1.1"

    @property
    def transport_stream(self) -> ReplayStream:
        return self


class Listener:
    def __init__(
        self,
        config: ServerConfig,
        services: ConnectionServices,
        verifier: TokenVerifier,
        serve_http: Callable[[trio.abc.HalfCloseableStream], Awaitable[None]],
        post_handlers: dict[str, PostHandler],
        tls: ServerTls | None = None,
    ) -> None:
        self._config = config
        #: With TLS on, every connection's (``rtserver.backends.tls``); reloaded on SIGHUP.
        self.tls = tls
        if tls is not None:
            for reason in {*_TLS_FAILURES.values(), *_TLS_ABANDONED, "other"}:
                services.metrics.tls_handshake_failures.labels(reason)
            services.metrics.tls_certificate_expiry.set_function(lambda: tls.not_after)
        self._services = services
        self._verifier = verifier
        self._serve_http = serve_http
        self._nursery: trio.Nursery | None = None
        #: The paths served on the fast path, by path; any other goes to the HTTP app.
        self.routes: dict[str, Route] = {}
        for ns in Namespace:
            self.routes[f"/{ns.value}/ws"] = Route(functools.partial(self._websocket, ns=ns), upgrade=True)
            for path, serve in ((f"/{ns.value}/sse", self._sse), (f"/{ns.value}/poll", self._poll)):
                self.routes[path] = Route(functools.partial(serve, ns=ns), method=b"GET", bodiless=True,
                                          cross_origin=True)
            for endpoint in ("events", "presence"):
                self.routes[f"/{ns.value}/{endpoint}"] = Route(None, cross_origin=True)
        for path, handler in post_handlers.items():
            self.routes[path] = Route(functools.partial(self._post, handler=handler, where=_where(path)),
                                      method=b"POST", cross_origin=path.endswith("/commands"))
        sio = services.config.socketio
        #: One wire per Socket.IO namespace: a broadcast is encoded once per namespace.
        self._sio_wires = {path: SocketIOWire(path, settings.events) for path, settings in sio.namespaces.items()}
        #: The same, for Engine.IO WebSockets that negotiated permessage-deflate.
        self._sio_deflate_wires = {path: SocketIOWire(path, settings.events, deflate=True)
                                   for path, settings in sio.namespaces.items()}
        #: Engine.IO long-polling sessions of this node, by sid.
        self._polling_engines: dict[str, PollingEngine] = {}
        #: Begins the id of every polling session this node opens: a request for one it no
        #: longer serves is answered here, never relayed.
        self._sid_prefix = secrets.token_urlsafe(6)
        if sio.enabled:
            self.routes[sio.path] = Route(self._socketio, upgrade=True)
        self._sock: socket.socket | None = None
        self._accepting = trio.CancelScope()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen and accept until ``stop_accepting``; reports the bound port."""
        sock = socket.socket(socket.AF_INET6 if ":" in self._config.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self._config.workers > 1:  # each worker its own accept queue on the shared port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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
        """Serve one accepted connection (see the module docstring); whatever fails in it
        ends it alone, and its socket is closed unless an actor took it."""
        handed_over = False
        try:
            with contained(self._services.metrics, "request"):
                handed_over = await self._serve(sock)
        finally:
            if not handed_over:
                sock.close()

    async def _serve(self, raw: socket.socket) -> bool:
        """Serve requests at their boundaries: posts and polls here, upgrades and streams as connections,
        anything else (with the rest of the connection) by hypercorn. Whether an actor (or
        hypercorn) took the socket."""
        raw.setblocking(False)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock: Sock = raw
        if self.tls is not None:
            sock = await self._start_tls(raw)
            if sock is None:
                return False
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
                return False
            parser = h11.Connection(h11.SERVER, max_incomplete_event_size=self._config.max_request_head_bytes)
            parser.receive_data(bytes(pending[:head_end]))
            try:
                request = parser.next_event()
            except h11.RemoteProtocolError:
                _send_quietly(sock, BAD_REQUEST)
                await _linger_close(sock)
                return False
            if not request.target.startswith(b"/") and not request.target.lower().startswith((b"http://", b"https://")):
                await self._respond(sock, parser, 400, error_body(400, "the request target must be a path"),
                                    [(b"connection", b"close")])
                await _linger_close(sock)
                return False
            route = self.routes.get(urlsplit(request.target.decode("latin-1")).path)
            if route is not None and route.upgrade:
                return await route.serve(Exchange(sock, parser, request, pending[head_end:], [])) is Next.HANDED_OVER
            length = _declared_length(request)
            if length > MAX_POST_BYTES:  # refused unread, whatever the path
                await self._respond(sock, parser, 413, error_body(413, _BODY_REFUSALS[413]),
                                    [(b"connection", b"close")])
                await _linger_close(sock)
                return False
            bodiless = not length and not _is_chunked(request)
            cors: list[tuple[bytes, bytes]] = []
            if route is not None and route.cross_origin:
                answered = await self._cross_origin(sock, parser, request, bodiless)
                if answered is not None:  # refused (then closed), or a preflight answered
                    if not answered:
                        return False
                    del pending[:head_end]
                    timeout = self._config.keep_alive_s
                    continue
                cors = cors_headers(_headers(request).get("origin"))
            if (route is None or route.serve is None or route.method not in (None, request.method)
                    or (route.bodiless and not bodiless)):
                replay = TlsReplayStream if type(sock) is TlsSocket else ReplayStream
                with contained(self._services.metrics, "http"):
                    await self._serve_http(replay(sock, bytes(pending)))
                return True
            del pending[:head_end]
            after = await route.serve(Exchange(sock, parser, request, pending, cors))
            if after is not Next.REQUEST:
                return after is Next.HANDED_OVER
            timeout = self._config.keep_alive_s

    async def _start_tls(self, raw: socket.socket) -> TlsSocket | None:
        """The TLS side of an accepted socket, its handshake done within
        ``handshake_timeout_s``; None when there is none: a plain HTTP request (answered
        400), or a handshake refused (the client told by its alert), abandoned or too slow
        (logged and counted)."""
        sock = None
        with trio.move_on_after(self._config.handshake_timeout_s):
            while (first := recv_nowait(raw, 1, socket.MSG_PEEK)) is None:
                await trio.lowlevel.wait_readable(raw)
            if not first:
                return None
            if first[0] != HANDSHAKE_RECORD:
                _send_quietly(raw, PLAIN_HTTP_REFUSED)
                await _linger_close(raw)
                return None
            sock = TlsSocket(raw, self.tls.context)
            reason, detail = "timeout", f"not done within {self._config.handshake_timeout_s} s"
            try:
                await sock.handshake()
                return sock
            except ssl.SSLError as exc:
                reason, detail = _TLS_FAILURES.get(exc.reason, "other"), exc.reason or str(exc)
            except OSError as exc:
                reason, detail = "client left", str(exc)
        if sock is None:
            return None  # it did not even begin
        self._services.metrics.tls_handshake_failures.labels(reason).inc()
        log.info("tls_handshake_failed", reason=reason, detail=detail)
        return None

    async def _read_head(self, sock: Sock, pending: bytearray) -> int | None:
        """Receive until ``pending`` holds a whole request head: its length; -1 for a head
        over ``max_request_head_bytes``; None when the client went away."""
        limit = self._config.max_request_head_bytes
        while (end := pending.find(b"\r\n\r\n", 0, limit + 4)) < 0:
            if len(pending) > limit:
                return -1
            if not await _receive_into(sock, pending):
                return None
        return end + 4

    async def _post(self, exchange: Exchange, *, handler: PostHandler, where: str) -> Next:
        """Serve one fast POST (its body in ``exchange.rest``)."""
        sock, parser, request, cors = exchange.sock, exchange.parser, exchange.request, exchange.cors
        body = await self._read_body(sock, parser, exchange.rest)
        if isinstance(body, int):  # refused: answered, then the connection closes
            if body:
                await self._respond(sock, parser, body, error_body(body, _BODY_REFUSALS[body]),
                                    [*cors, (b"connection", b"close")])
                await _linger_close(sock)  # the rest of the body unread must not reset the answer
            return Next.CLOSE
        query = urlsplit(request.target.decode("latin-1")).query
        with contained(self._services.metrics, where, path=request.target.decode("latin-1")[:100]) as failure:
            status, answer = await handler(query, _headers(request), body)
        if failure.id is not None:
            await self._respond(sock, parser, 500, internal_error_body(failure.id), [*cors, (b"connection", b"close")])
            return Next.CLOSE
        return Next.REQUEST if await self._respond(sock, parser, status, answer, cors) else Next.CLOSE

    async def _read_body(self, sock: Sock, parser: h11.Connection, pending: bytearray) -> bytes | int:
        """The body of the request ``parser`` has the head of, framed by h11 (Content-Length
        or chunked; ``100 Continue`` sent when the client waits for it), with ``pending``
        fed to it and left holding what follows the body. Bounded: the status to refuse it
        with when it breaks its framing (400), exceeds ``MAX_POST_BYTES`` (413) or does not
        arrive whole within ``handshake_timeout_s`` (408); 0 when the client went away."""
        body = bytearray()
        with trio.move_on_after(self._config.handshake_timeout_s):
            while True:
                try:
                    event = parser.next_event()
                except h11.RemoteProtocolError:
                    return 400
                if event is h11.NEED_DATA:
                    if parser.they_are_waiting_for_100_continue:
                        _send_quietly(sock, parser.send(h11.InformationalResponse(status_code=100, headers=[])))
                    if not pending and not await _receive_into(sock, pending):
                        return 0
                    parser.receive_data(bytes(pending))
                    pending.clear()
                elif type(event) is h11.Data:
                    body += event.data
                    if len(body) > MAX_POST_BYTES:
                        return 413
                elif type(event) is h11.EndOfMessage:
                    pending[:0] = parser.trailing_data[0]
                    return bytes(body)
        return 408

    async def _respond(self, sock: Sock, parser: h11.Connection, status: int, body: bytes | None,
                       extra_headers: list[tuple[bytes, bytes]] = (), content_type: bytes = b"application/json") -> bool:
        """Send one response, JSON unless said otherwise (None: no body, a 204) (bounded);
        False when the connection must close."""
        content = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))] if body else []
        response = parser.send(h11.Response(status_code=status, headers=[*content, *extra_headers]))
        if body:
            response += parser.send(h11.Data(data=body))
        response += parser.send(h11.EndOfMessage())
        with trio.move_on_after(self._config.handshake_timeout_s):
            if await send_all(sock, response):
                return parser.our_state is h11.DONE
        return False

    async def _cross_origin(self, sock: Sock, parser: h11.Connection, request: h11.Request,
                            bodiless: bool) -> bool | None:
        """Apply ``server.allowed_origins`` to a request of an HTTP transport (``protocol.cors``):
        None when it is to be served; else it was answered here, a preflight (True: the
        connection stays) or a refused origin (False: closed)."""
        headers = _headers(request)
        origin = headers.get("origin")
        if not origin_allowed(origin, headers.get("host", ""), self._config.allowed_origins):
            await self._respond(sock, parser, 403, error_body(403, "origin not allowed"), [(b"connection", b"close")])
            await _linger_close(sock)
            return False
        if request.method != b"OPTIONS" or origin is None or "access-control-request-method" not in headers:
            return None
        allowed = preflight_headers(origin, headers.get("access-control-request-headers", ""))
        if allowed is None or not bodiless:
            await self._respond(sock, parser, 403, error_body(403, "preflight asks for what these endpoints do not take"),
                                [(b"connection", b"close")])
            await _linger_close(sock)
            return False
        return await self._respond(sock, parser, 204, None, allowed)

    # -- SSE and long-poll -----------------------------------------------------------------
    def _http_session(self, request: h11.Request, ns: Namespace) -> tuple[Claims, Cursor | None, str, Joining]:
        """Check an SSE or poll request: its claims, cursor, session id and what it joins.

        Raises ``AuthError`` (401/403) or ``ReplyError`` (4xx) naming what is wrong: nothing
        is started for a request that cannot be served as asked."""
        headers = _headers(request)
        query = dict(parse_qsl(urlsplit(request.target.decode("latin-1")).query))
        claims = admission(self._verifier, headers, query, [], ns, self._services.bus.serves)
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
        if not (rooms or presence):
            return NOTHING_MORE  # one object for every connection that asks for nothing more
        return Joining(rooms, fresh, PresenceState(presence) if presence else None)

    def _refuse(self, exc: AuthError | ReplyError, ns: Namespace) -> tuple[int, bytes]:
        """The status and JSON body of a refused SSE or poll request."""
        if isinstance(exc, AuthError):
            log.info("request_refused", code=exc.disconnect.code, reason=exc.message, ns=ns.value)
        return refusal(exc, self._services.metrics)

    async def _sse(self, exchange: Exchange, *, ns: Namespace) -> Next:
        """Start an SSE stream (its actor takes the socket), or refuse it and close."""
        sock, parser, request, cors = exchange.sock, exchange.parser, exchange.request, exchange.cors
        try:
            claims, since, session, joining = self._http_session(request, ns)
        except (AuthError, ReplyError) as exc:
            await self._respond(sock, parser, *self._refuse(exc, ns), [*cors, (b"connection", b"close")])
            await _linger_close(sock)
            return Next.CLOSE
        stream = SseStream(sock, services=self._services, claims=claims, ns=ns, session=session,
                           since=since, joining=joining, response_headers=cors)
        self._nursery.start_soon(self._run_connection, stream)
        return Next.HANDED_OVER

    async def _poll(self, exchange: Exchange, *, ns: Namespace) -> Next:
        """Answer one long-poll request."""
        sock, parser, request, cors = exchange.sock, exchange.parser, exchange.request, exchange.cors
        try:
            claims, since, session, joining = self._http_session(request, ns)
        except (AuthError, ReplyError) as exc:
            return Next.REQUEST if await self._respond(sock, parser, *self._refuse(exc, ns), cors) else Next.CLOSE

        async def respond(body: bytes) -> bool:
            return await self._respond(sock, parser, 200, body, [*cors, (b"cache-control", b"no-store")])

        poll = PollRequest(sock, services=self._services, claims=claims, ns=ns, session=session,
                           since=since, joining=joining, respond=respond)
        with contained(self._services.metrics, "poll", session=session) as failure:
            await poll.run()
        if failure.id is not None and parser.our_state is h11.SEND_RESPONSE:  # nothing was answered
            await self._respond(sock, parser, 500, internal_error_body(failure.id), [*cors, (b"connection", b"close")])
        return Next.REQUEST if poll.kept_alive and failure.id is None else Next.CLOSE

    async def _run_connection(self, connection: Connection) -> None:
        """Run a connection actor inside its boundary: the actor answers its own failures
        (close 1011); what escapes it still ends it alone."""
        with contained(self._services.metrics, connection.transport, session=connection.session):
            await connection.run()

    # -- WebSocket -------------------------------------------------------------------------
    async def _websocket(self, exchange: Exchange, *, ns: Namespace) -> Next:
        """Answer an upgrade: a ``WebSocketConnection`` actor takes the socket, or it is refused and closed."""
        sock, parser, request = exchange.sock, exchange.parser, exchange.request
        try:
            check_upgrade(request.method, request.http_version, request.headers)
        except UpgradeRefused as refused:
            await self._respond(sock, parser, refused.status, error_body(refused.status, refused.message),
                                [*refused.headers, (b"connection", b"close")])
            await _linger_close(sock)
            return Next.CLOSE
        with contained(self._services.metrics, "handshake") as failure:
            connection = self._accept_websocket(sock, parser, request, bytes(exchange.rest), ns)
        if failure.id is not None:  # nothing was sent yet: every answer is sent at the end
            await self._respond(sock, parser, 500, internal_error_body(failure.id), [(b"connection", b"close")])
            await _linger_close(sock)
        elif isinstance(connection, WebSocketConnection):
            # The connection runs as a task of its own: nothing of the handshake (this
            # frame, the request, the parsers) stays referenced while it lives.
            self._nursery.start_soon(self._run_connection, connection)
            return Next.HANDED_OVER
        elif connection is not None:
            await _linger_close(sock)
        return Next.CLOSE

    def _accept_websocket(
        self, sock: Sock, parser: h11.Connection, request: h11.Request, trailing: bytes, ns: Namespace,
    ) -> WebSocketConnection | AuthError | None:
        """Answer the upgrade (``check_upgrade`` accepted it): a ``WebSocketConnection`` to
        run, an ``AuthError`` already sent as a close frame (the caller lingers, then
        closes), or None when refused and closed."""
        headers = _headers(request)
        query = dict(parse_qsl(urlsplit(request.target.decode("latin-1")).query))
        if not origin_allowed(headers.get("origin"), headers.get("host", ""), self._config.allowed_origins):
            self._reject(sock, parser, 403, "origin not allowed")
            return None
        offered = subprotocols(request.headers)
        wire_name = next((p for p in offered if p in WS_WIRES), None)
        wire = WS_WIRES[wire_name] if wire_name else WS_JSON
        deflate = self._config.permessage_deflate and offers_deflate(request.headers)
        if deflate:
            wire = WS_DEFLATE[wire]
        try:
            since = Cursor.parse(query["since"]) if query.get("since") else None
        except ReplyError as err:
            self._reject(sock, parser, 400, err.message)
            return None
        accept = accept_response(request.headers, wire_name, deflate)
        metrics = self._services.metrics
        try:
            claims = admission(self._verifier, headers, query, offered, ns, self._services.bus.serves)
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
        connection = WebSocketConnection(
            sock, services=self._services, claims=claims, ns=ns, wire=wire,
            session=secrets.token_urlsafe(12), since=since, joining=joining, received=trailing,
        )
        if not _send_quietly(sock, accept):  # the last step: a failure before it sent nothing
            sock.close()
            return None
        return connection

    # -- Socket.IO ---------------------------------------------------------------------------
    async def _socketio(self, exchange: Exchange) -> Next:
        """An Engine.IO v4 WebSocket (``?EIO=4&transport=websocket``): an ``EngineIOSocket``
        actor takes it; its namespaces are admitted one by one, by their CONNECT packets."""
        sock, parser, request = exchange.sock, exchange.parser, exchange.request
        query = dict(parse_qsl(urlsplit(request.target.decode("latin-1")).query))
        if query.get("EIO") == "4" and query.get("transport") == "polling":
            return await self._polling(exchange, query)
        refusal = None
        if query.get("EIO") != "4":
            refusal = (400, "Engine.IO v4 only (EIO=4)")
        elif query.get("transport") != "websocket":
            refusal = (400, "transport is websocket or polling")
        elif "sid" in query and not (query["sid"] in self._polling_engines or self._held_elsewhere(query["sid"])):
            refusal = (400, "Session ID unknown")
        else:
            try:
                check_upgrade(request.method, request.http_version, request.headers)
            except UpgradeRefused as refused:
                refusal = (refused.status, refused.message)
        headers = _headers(request)
        if refusal is None and not origin_allowed(headers.get("origin"), headers.get("host", ""),
                                                  self._config.allowed_origins):
            refusal = (403, "origin not allowed")
        if refusal is not None:
            await self._respond(sock, parser, refusal[0], error_body(*refusal), [(b"connection", b"close")])
            await _linger_close(sock)
            return Next.CLOSE
        sid = query.get("sid")
        polling = self._polling_engines.get(sid or "")
        # The upgrade of a polling session here keeps the wires its namespaces joined with.
        deflate = self._config.permessage_deflate and polling is None and offers_deflate(request.headers)
        reader = FrameReader(self._config.max_inbound_message_bytes, bytes(exchange.rest), deflate=deflate)
        engine_args = dict(services=self._services, verifier=self._verifier, config=self._services.config.socketio,
                           wires=self._sio_deflate_wires if deflate else self._sio_wires,
                           token=bearer_token(headers, query, []))
        if polling is not None:
            engine = None
        elif sid is not None:  # its polling session is held by another node
            engine = AdoptedSocket(sid, sock, reader, **engine_args)
        else:
            engine = EngineIOSocket(sock, reader, **engine_args)
        if not _send_quietly(sock, accept_response(request.headers, None, deflate)):
            sock.close()
            return Next.CLOSE
        if polling is not None:  # the upgrade of a polling session
            self._nursery.start_soon(self._run_upgrade, polling, sock, reader)
        else:
            self._nursery.start_soon(self._run_engine, engine)
        return Next.HANDED_OVER

    async def _run_upgrade(self, polling: PollingEngine, sock: Sock, reader: FrameReader) -> None:
        with contained(self._services.metrics, "socketio"):
            await polling.upgrade(sock, reader)

    async def _run_engine(self, engine: EngineIOSocket | PollingEngine, *,
                          task_status=trio.TASK_STATUS_IGNORED) -> None:
        with contained(self._services.metrics, "socketio"):
            await engine.run(task_status=task_status)

    def _held_elsewhere(self, sid: str) -> bool:
        """Whether a session this node does not hold may be held by another (its requests
        are then relayed there: docs/socketio.md, No sticky sessions): one another node
        opened. One this node opened and no longer serves has ended, or moved to a
        WebSocket: its polling is over either way."""
        return self._services.bus.spans_nodes and is_identifier(sid) and not sid.startswith(self._sid_prefix)

    async def _polling(self, exchange: Exchange, query: dict[str, str]) -> Next:
        """One Engine.IO long-polling request: the handshake (a GET without ``sid``), a GET
        that takes the session's packets, a POST that gives it packets. Each answer closes
        its connection."""
        sock, parser, request = exchange.sock, exchange.parser, exchange.request
        headers = _headers(request)
        close = [(b"connection", b"close")]
        origin = headers.get("origin")
        if not origin_allowed(origin, headers.get("host", ""), self._config.allowed_origins):
            await self._respond(sock, parser, 403, error_body(403, "origin not allowed"), close)
            await _linger_close(sock)
            return Next.CLOSE
        answer_headers = [*cors_headers(origin, credentials=True), *close]
        if request.method == b"OPTIONS":  # a preflight, answered as for the other HTTP transports
            requested = headers.get("access-control-request-headers", "")
            allowed = preflight_headers(origin, requested, credentials=True) if origin else []
            if allowed is None:
                refused = error_body(403, "preflight asks for what this endpoint does not take")
                await self._respond(sock, parser, 403, refused, close)
            else:
                await self._respond(sock, parser, 204, None, [*allowed, *close])
            return Next.CLOSE
        sid = query.get("sid")
        engine = self._polling_engines.get(sid) if sid else None
        if request.method == b"GET" and sid is None:
            engine = PollingEngine(services=self._services, verifier=self._verifier,
                                   config=self._services.config.socketio, wires=self._sio_wires,
                                   token=bearer_token(headers, query, []), registry=self._polling_engines,
                                   sid=self._sid_prefix + secrets.token_urlsafe(12))
            await self._nursery.start(self._run_engine, engine)
            body = engine.handshake(["websocket"])
        elif request.method not in (b"GET", b"POST") or (engine is None and not self._held_elsewhere(sid or "")):
            await self._respond(sock, parser, 400, UNKNOWN_SESSION, answer_headers)
            await _linger_close(sock)
            return Next.CLOSE
        else:
            posted = b""
            if request.method == b"POST":
                posted = await self._read_body(sock, parser, exchange.rest)
                if isinstance(posted, int):
                    await self._respond(sock, parser, posted or 400, error_body(posted or 400, "bad body"),
                                        answer_headers)
                    return Next.CLOSE
            try:
                if engine is None:
                    status, body = await self._relay_polling(sid, request.method, posted)
                    if status != 200:
                        await self._respond(sock, parser, status, body, answer_headers)
                        return Next.CLOSE
                elif request.method == b"GET":
                    body = await engine.get()
                else:
                    await engine.post(posted)
                    body = b"ok"
            except (EngineIOError, SocketIOError) as exc:
                await self._respond(sock, parser, 400, error_body(400, str(exc)), answer_headers)
                return Next.CLOSE
        await self._respond(sock, parser, 200, body, answer_headers, content_type=b"text/plain; charset=UTF-8")
        return Next.CLOSE

    async def _relay_polling(self, sid: str, method: bytes, posted: bytes) -> tuple[int, bytes]:
        """A GET or POST of a session another node may hold, relayed to it: the status and
        body to answer (400 as for an unknown session when no node answers)."""
        cfg = self._services.config.socketio
        if method == b"GET":
            waited_s = (cfg.ping_interval_ms + cfg.ping_timeout_ms) / 1000  # a GET gets a ping within the interval
            reply = await relay(self._services, sid, Method.GET, timeout_s=waited_s)
        else:
            if len(posted) > cfg.max_payload:
                raise EngineIOError(f"payload over {cfg.max_payload} bytes")
            try:
                text = posted.decode()
            except UnicodeDecodeError:
                raise EngineIOError("a payload is UTF-8 text") from None
            reply = await relay(self._services, sid, Method.POST, text, timeout_s=cfg.ping_timeout_ms / 1000)
        if reply is None:
            return 400, UNKNOWN_SESSION
        if reply.status != 200:
            return reply.status, error_body(reply.status, reply.body)
        return 200, reply.body.encode()

    def _reject(self, sock: Sock, parser: h11.Connection, status: int, message: str) -> None:
        body = error_body(status, message)
        response = parser.send(h11.Response(status_code=status, headers=[
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), (b"connection", b"close")]))
        _send_quietly(sock, response + parser.send(h11.Data(data=body)) + parser.send(h11.EndOfMessage()))
        sock.close()


def _where(path: str) -> str:
    """The error boundary a fast POST path is counted under."""
    return "publish" if path == "/v1/publish" else "commands"


def _declared_length(request: h11.Request) -> int:
    """The request's Content-Length (h11 has checked it is one well-formed number); 0 if none."""
    return next((int(value) for name, value in request.headers if name == b"content-length"), 0)


def _is_chunked(request: h11.Request) -> bool:
    return any(name == b"transfer-encoding" for name, _ in request.headers)


def _headers(request: h11.Request) -> dict[str, str]:
    """The request's headers by lower-case name (h11 lower-cases them)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers}


async def _receive_into(sock: Sock, pending: bytearray) -> bool:
    """Append what the socket has to ``pending``; False at EOF or on an error."""
    while (data := recv_nowait(sock, 65536)) is None:
        await wait_readable(sock)
    pending += data
    return bool(data)


def _send_quietly(sock: Sock, data: bytes) -> bool:
    """Best-effort non-blocking write of a small handshake answer: whether it is all on the wire."""
    try:
        return sock.send(data) == len(data) and not unsent(sock)
    except OSError:
        return False


async def _linger_close(sock: Sock) -> None:
    """Close after the peer has read our answer (bounded)."""
    with trio.move_on_after(2):
        await half_close_and_wait_eof(sock)
    sock.close()
