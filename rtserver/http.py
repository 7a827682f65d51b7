"""The HTTP side, served by hypercorn's connection handler.

``POST /v1/publish`` (the ingest hot path) and ``POST /{ns}/commands`` are answered by the
listener itself with h11 (``post_handlers``). Everything else is a quart-trio app: ``GET /{ns}/events``,
``GET /{ns}/presence``, ``POST /{ns}/push/devices`` and ``DELETE /{ns}/push/devices/<token>``
(with push on), ``/healthz``, ``/readyz``, ``/metrics``, the index page ``/``, the protocol's
documents (``/docs/protocol.md``, ``/docs/socketio.md``), and the browser client and the two
pages (``/rtclient.js``, ``/console/``, ``/wall/``).

Hypercorn answers each connection handed to it with ``Connection: close``: the listener
hands a connection over for good, so a browser's next request on it (a poll, a stream)
would otherwise never come back to the listener's fast paths.

Every answer that is not a success is JSON, ``{"error": <code>, "message": "..."}``: the
documented refusals (``STATUS_OF_REPLY``), Quart's own (404, 405, 408 for a body that did
not arrive within ``server.handshake_timeout_s``, 413), and 500 with the correlation id
(``"id"``) of a logged, counted failure (``rtserver.backends.boundary``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import msgspec
import structlog
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app
from quart import Response, redirect, request, send_from_directory
from quart.wrappers.base import ClientDisconnectedError
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from protocol.catalog import Namespace
from protocol.cors import cors_headers, origin_allowed
from protocol.cursors import Cursor
from protocol.envelope import decode_publish
from protocol.errors import CloseCode, ReplyCode, ReplyError
from protocol.frames import JSON, Error, error_frame
from protocol.limits import decode_bounded
from protocol.push import Registration
from rtserver.backends.auth import AuthError, Claims, admission, authorize_room, personal_rooms
from rtserver.backends.boundary import contained, internal_error_body, record_failure
from rtserver.commands import decode_commands, run_command

if TYPE_CHECKING:
    from rtserver.backends.metrics import Metrics
    from rtserver.gateway import Gateway

log = structlog.get_logger("rtserver.http")

#: The HTTP status of each reply error.
STATUS_OF_REPLY = {
    ReplyCode.BAD_FRAME: 400,
    ReplyCode.BAD_ROOM: 422,
    ReplyCode.FORBIDDEN: 403,
    ReplyCode.UNKNOWN_EVENT: 422,
    ReplyCode.BAD_PAYLOAD: 422,
    ReplyCode.UNAVAILABLE: 503,
    ReplyCode.NOT_SUBSCRIBED: 422,
    ReplyCode.TOO_MANY_ROOMS: 422,
    ReplyCode.RATE_LIMITED: 429,
}
_json = msgspec.json.Encoder()


def error_body(code: int, message: str) -> bytes:
    """The JSON body of every refusal: ``{"error": code, "message": message}``."""
    return _json.encode({"error": code, "message": message})


def refusal(exc: AuthError | ReplyError, metrics: Metrics) -> tuple[int, bytes]:
    """The status and JSON body that refuse a request, on every transport and endpoint
    (an authentication failure is counted)."""
    if isinstance(exc, AuthError):
        metrics.auth_failures.labels(exc.disconnect.reason).inc()
        return exc.status, error_body(exc.disconnect.code, exc.message)
    return STATUS_OF_REPLY.get(exc.code, 400), error_body(int(exc.code), exc.message)


def _refused(exc: AuthError | ReplyError, metrics: Metrics) -> Response:
    status, body = refusal(exc, metrics)
    return Response(body, status=status, content_type="application/json")


def _answer(body: object, status: int = 200) -> Response:
    return Response(_json.encode(body), status=status, content_type="application/json")


def _error(status: int, code: int, message: str) -> Response:
    return Response(error_body(code, message), status=status, content_type="application/json")


class _UnknownNamespace(Exception):
    pass


class _PushOff(Exception):
    pass


def create_app(gateway: Gateway) -> QuartTrio:
    app = QuartTrio("rtserver")
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = gateway.config.server.handshake_timeout_s
    app.config["MAX_CONTENT_LENGTH"] = MAX_POST_BYTES

    @app.errorhandler(AuthError)
    async def auth_error(exc: AuthError):
        return _refused(exc, gateway.metrics)

    @app.errorhandler(_UnknownNamespace)
    async def unknown_namespace(_exc: _UnknownNamespace):
        return _error(404, 404, "unknown namespace")

    @app.errorhandler(ReplyError)
    async def reply_error(exc: ReplyError):
        return _refused(exc, gateway.metrics)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException):
        return _error(exc.code or 500, exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception):
        """The boundary of every route: logged with a correlation id, counted, a 500."""
        failure_id = record_failure(gateway.metrics, f"http:{request.endpoint or 'unrouted'}", exc, path=request.path)
        return Response(internal_error_body(failure_id), status=500, content_type="application/json")

    @app.after_request
    async def cross_origin(response: Response) -> Response:
        """Catch-up and presence answer a page of an allowed origin (``protocol.cors``)."""
        origin = request.headers.get("origin")
        if request.endpoint in ("events", "presence") and origin_allowed(
                origin, request.headers.get("host", ""), gateway.config.server.allowed_origins):
            for name, value in cors_headers(origin):
                response.headers[name.decode()] = value.decode("latin-1")
        return response

    @app.get("/healthz")
    async def healthz():
        return _answer({"status": "ok"})

    @app.get("/readyz")
    async def readyz():
        ready = gateway.ready()
        return _answer({"ready": ready, **gateway.readiness()}, 200 if ready else 503)

    @app.get("/metrics")
    async def metrics():
        return Response(gateway.metrics.render(), content_type="text/plain; version=0.0.4")

    def admitted(ns: str) -> tuple[Claims, Namespace]:
        """The request's claims, admitted to namespace ``ns`` (404 for an unknown one)."""
        try:
            namespace = Namespace(ns)
        except ValueError:
            raise _UnknownNamespace from None
        headers = {k.lower(): v for k, v in request.headers.items()}
        return admission(gateway.verifier, headers, dict(request.args), [], namespace), namespace

    @app.get("/<ns>/presence")
    async def presence(ns: str):
        claims, namespace = admitted(ns)
        group = request.args.get("group", "")
        authorize_room(claims, namespace, f"presence:{group}")
        entries = await gateway.presence.snapshot(claims.tenant, group)
        return _answer({"group": group, "users": [entry.data(group) for entry in entries]})

    @app.get("/<ns>/events")
    async def events(ns: str):
        claims, namespace = admitted(ns)
        names = [r for r in request.args.get("rooms", "").split(",") if r]
        if not names:
            raise ReplyError(ReplyCode.BAD_ROOM, "name the rooms with ?rooms=a,b")
        for name in names:
            authorize_room(claims, namespace, name)
        since_text = request.args.get("since")
        if not since_text:
            raise ReplyError(ReplyCode.BAD_FRAME, "?since=<cursor> is required")
        since = Cursor.parse(since_text)
        limit = _int_param("limit", 1, gateway.config.bus.max_history)
        page = await gateway.catch_up(claims.tenant, names, since, limit)
        if not page.recovered:
            return _answer({"recovered": False, "cursor": page.cursor.encode(), "events": []}, 410)
        return Response(
            b'{"recovered":true,"cursor":"%s","more":%s,"events":[%s]}'
            % (page.cursor.encode().encode(), b"true" if page.more else b"false",
               b",".join(JSON.encode(evt) for evt in page.events)),
            content_type="application/json",
        )

    def device_store():
        if gateway.devices is None:
            raise _PushOff
        return gateway.devices

    @app.errorhandler(_PushOff)
    async def push_off(_exc: _PushOff):
        return _error(404, 404, "push notifications are not enabled on this server ([push] enabled)")

    @app.post("/<ns>/push/devices")
    async def register_device(ns: str):
        """Register (or renew: apps do at each start) the caller's device token."""
        claims, namespace = admitted(ns)
        devices = device_store()
        try:
            registration = decode_bounded(_decode_registration, await request.get_data())
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ReplyError(ReplyCode.BAD_PAYLOAD, f"invalid device registration: {exc}") from None
        forgotten = await devices.register(claims.tenant, claims.user, personal_rooms(claims, namespace),
                                           registration)
        return _answer({"platform": registration.platform, "expires_in_s": gateway.config.push.device_ttl_s,
                        "forgotten": len(forgotten)}, 201)

    @app.delete("/<ns>/push/devices/<token>")
    async def unregister_device(ns: str, token: str):
        """Forget the caller's device (sign-out); 404 if it is not the caller's."""
        claims, namespace = admitted(ns)
        if not await device_store().unregister(claims.tenant, claims.user, personal_rooms(claims, namespace), token):
            return _error(404, 404, "no such device of this user")
        return Response(b"", status=204)

    @app.get("/")
    async def index():
        return await send_from_directory(WEB_DIR, "index.html")

    @app.get("/docs/<name>")
    async def doc(name: str):
        """The protocol's documents, as plain text (``web/docs`` links them from ``docs/``)."""
        response = await send_from_directory(WEB_DIR / "docs", name)
        response.content_type = "text/plain; charset=utf-8"
        return response

    @app.get("/rtclient.js")
    @app.get("/rtclient.d.ts")
    async def browser_client():
        return await send_from_directory(WEB_DIR, request.path.lstrip("/"))

    @app.get("/console")
    @app.get("/wall")
    async def page_root():
        return redirect(request.path + "/")

    @app.get("/console/")
    @app.get("/wall/")
    async def page():
        return await send_from_directory(WEB_DIR, request.path.strip("/") + ".html")

    @app.get("/web/<path:name>")
    async def web_asset(name: str):
        return await send_from_directory(WEB_DIR, name)

    return app


def _int_param(name: str, lowest: int, highest: int) -> int:
    """The integer query parameter ``name`` (``highest`` when absent); ``ReplyError``
    (400) naming it when it is not an integer from ``lowest`` to ``highest``."""
    text = request.args.get(name)
    if text is None:
        return highest
    if not (text.isascii() and text.isdigit() and len(text) <= 12 and lowest <= int(text) <= highest):
        raise ReplyError(ReplyCode.BAD_FRAME, f"?{name}= must be an integer from {lowest} to {highest}")
    return int(text)


_decode_registration = msgspec.json.Decoder(Registration).decode

#: The browser client and the pages (plain files, no build step).
WEB_DIR = Path(__file__).parent / "web"

#: Largest body of a fast POST (publish, commands), bytes.
MAX_POST_BYTES = 1 << 20

#: A fast POST handler: (query string, headers by lower-case name, body) -> (status, JSON body).
PostHandler = Callable[[str, dict[str, str], bytes], Awaitable[tuple[int, bytes]]]


def post_handlers(gateway: Gateway) -> dict[str, PostHandler]:
    """The POST paths answered without Quart, by path."""

    async def publish(query: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        return await publish_answer(gateway, headers, body)

    def commands(ns: Namespace) -> PostHandler:
        async def answer(query: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
            return await commands_answer(gateway, ns, dict(parse_qsl(query)), headers, body)
        return answer

    return {"/v1/publish": publish, **{f"/{ns.value}/commands": commands(ns) for ns in Namespace}}


async def commands_answer(
    gateway: Gateway, ns: Namespace, query: dict[str, str], headers: dict[str, str], body: bytes,
) -> tuple[int, bytes]:
    """``POST /{ns}/commands`` (``rtserver.commands``): the reply frame (status of its
    error), or an array of replies (200) for an array of frames."""
    try:
        claims = admission(gateway.verifier, headers, query, [], ns)
        frames, many = decode_commands(body)
    except AuthError as exc:
        return refusal(exc, gateway.metrics)
    except ReplyError as exc:  # a commands client reads reply frames
        return 400, JSON.encode(error_frame(exc, None))
    session = query.get("session") or headers.get("x-rt-session")
    replies = []
    for frame in frames:
        gateway.metrics.count_inbound(frame, gateway.catalog)
        replies.append(await run_command(gateway.services, claims, ns, session, frame))
    if many:
        return 200, b"[%s]" % b",".join(JSON.encode(reply) for reply in replies)
    reply = replies[0]
    status = STATUS_OF_REPLY.get(ReplyCode(reply.code), 400) if isinstance(reply, Error) else 200
    return status, JSON.encode(reply)


async def publish_answer(gateway: Gateway, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """``POST /v1/publish``: (status, JSON body). Needs a service token (in the
    ``Authorization`` header); a service token that names a tenant may only publish to
    it. Nothing is appended unless it is valid."""
    try:
        claims = admission(gateway.verifier, headers, {}, [], None)
        if not claims.is_service:
            raise AuthError(CloseCode.FORBIDDEN, "publishing needs a service token", 403)
        try:
            envelope = decode_publish(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ReplyError(ReplyCode.BAD_FRAME, f"invalid publish body: {exc}") from None
        if claims.tenant and envelope.tenant != claims.tenant:
            raise ReplyError(ReplyCode.FORBIDDEN, "this service token may only publish to its own tenant")
        if envelope.traceparent is None and "traceparent" in headers:
            envelope = msgspec.structs.replace(envelope, traceparent=headers["traceparent"])
        return 200, _json.encode(await gateway.publish(envelope))
    except (AuthError, ReplyError) as exc:
        return refusal(exc, gateway.metrics)


def create_asgi(app: QuartTrio, metrics: Metrics):
    """The ASGI entry of ``app``: every response closes its connection (see the module
    docstring); a failure before Quart answered (its own request parsing) is answered as
    any other (500 JSON, counted under ``http``)."""

    async def asgi(scope, receive, send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = False

        async def send_closing(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        with contained(metrics, "http", path=scope.get("raw_path", b"")[:100]) as failure:
            try:
                await app(scope, receive, send_closing)
            except* ClientDisconnectedError:
                pass  # the client left (or half-closed) before its answer: nobody to answer
        if failure.id is not None and not started:
            body = internal_error_body(failure.id)
            await send_closing({"type": "http.response.start", "status": 500, "headers": [
                (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})

    return asgi


class HttpFrontend:
    """Runs the app's lifespan and serves connections handed over by the listener."""

    def __init__(self, asgi) -> None:
        self.config = HypercornConfig()
        self.config.accesslog = None
        self.config.keep_alive_timeout = 75
        self.config.graceful_timeout = 5
        self._app = wrap_app(asgi, self.config.wsgi_max_body_size, "asgi")
        self._context = WorkerContext(None)
        self._state: dict = {}

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        lifespan = Lifespan(self._app, self.config, self._state)
        async with trio.open_nursery() as nursery:
            await nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                await self._context.terminated.set()
                with trio.CancelScope(shield=True), trio.move_on_after(self.config.graceful_timeout):
                    await lifespan.wait_for_shutdown()
                nursery.cancel_scope.cancel()

    async def serve(self, stream: trio.abc.HalfCloseableStream) -> None:
        await TCPServer(self._app, self.config, self._context, ConnectionState(self._state.copy()), stream)

