"""Cross-origin access (CORS) to the HTTP transports, governed by ``server.allowed_origins``.

A browser page of another origin may open an SSE stream (a native ``EventSource``), poll,
catch up and send commands when its origin is allowed: every answer then names it in
``Access-Control-Allow-Origin``, and a preflight (``OPTIONS`` with
``Access-Control-Request-Method``) is answered with the methods and headers these
endpoints take. A request from an origin that is not allowed is refused (403), as a
WebSocket upgrade from it is. Tokens travel in headers or the query, never in cookies, so
rt.v1's transports offer no credentials mode; Socket.IO's long-polling allows credentials
(``Access-Control-Allow-Credentials``) to the origins it serves, as Socket.IO servers
configured with ``credentials: true`` do, since clients written for them may send
``withCredentials`` requests (a cookie is never read).
"""

from __future__ import annotations

from urllib.parse import urlsplit

#: Request headers a cross-origin page may send to the HTTP transports.
ALLOWED_REQUEST_HEADERS = frozenset({"authorization", "content-type", "last-event-id", "x-rt-session", "traceparent"})
#: Seconds a browser may cache a preflight's answer.
PREFLIGHT_MAX_AGE_S = 600


def origin_allowed(origin: str | None, host: str, allowed: list[str]) -> bool:
    """Whether a request with this ``Origin`` (None: not a browser's cross-origin request)
    may be served: ``allowed`` names it, holds ``*``, or is empty and the origin is the
    server's own (its host is the request's ``Host``)."""
    if origin is None or "*" in allowed or origin in allowed:
        return True
    return not allowed and urlsplit(origin).netloc == host


def cors_headers(origin: str | None, *, credentials: bool = False) -> list[tuple[bytes, bytes]]:
    """The headers that let the page of ``origin`` (already allowed) read an answer (one
    to a request made with credentials too, with ``credentials``)."""
    if origin is None:
        return []
    headers = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"origin")]
    if credentials:
        headers.append((b"access-control-allow-credentials", b"true"))
    return headers


def preflight_headers(origin: str, requested_headers: str, *,
                      credentials: bool = False) -> list[tuple[bytes, bytes]] | None:
    """The answer's headers to a preflight of an allowed ``origin``; None when it asks to
    send a header these endpoints do not take."""
    asked = {name.strip().lower() for name in requested_headers.split(",") if name.strip()}
    if not asked <= ALLOWED_REQUEST_HEADERS:
        return None
    return [*cors_headers(origin, credentials=credentials), (b"access-control-allow-methods", b"GET, POST"),
            (b"access-control-allow-headers", ", ".join(sorted(asked)).encode()),
            (b"access-control-max-age", b"%d" % PREFLIGHT_MAX_AGE_S)]
