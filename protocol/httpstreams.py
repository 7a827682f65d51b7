"""The HTTP fallback transports as bytes: Server-Sent Events and long-poll answers (docs/protocol.md, Server-Sent Events and Long-polling).

SSE: one ``200`` response with ``Transfer-Encoding: chunked`` that never ends on its own.
Each server frame is one SSE message in one chunk: ``data:`` is the same JSON frame a
WebSocket client gets, and a frame with a cursor (a durable ``evt``; the ``hello``, whose
cursor is the stream position the stream starts at) also sets ``id:``, so that
``Last-Event-ID`` always resumes every room of the stream from where the client is. A
close is the message ``event: close`` (its ``data`` the code, reason and client action)
followed by the last chunk. Comments (``: keep-alive``) keep proxies from timing out an
idle stream.

Long-poll: one JSON object per answer, ``{"events":[…],"cursor":"…","session":"…"}``,
with ``"recovered":false`` when the cursor could not be resumed and ``"close":{…}`` when
the client must reconnect differently (token, drain); the events are the JSON frames.
"""

from __future__ import annotations

import msgspec

from protocol.errors import Disconnect

SSE_CONTENT_TYPE = b"text/event-stream; charset=utf-8"


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk carrying ``data``."""
    return b"%x\r\n%s\r\n" % (len(data), data)


#: The chunk that ends a chunked body.
LAST_CHUNK = b"0\r\n\r\n"
#: A comment that keeps an idle stream open through proxies (clients ignore it).
SSE_KEEPALIVE = chunk(b": keep-alive\n\n")


def sse_message(data: bytes, *, event_id: str | None = None, event: str | None = None) -> bytes:
    """One SSE message (``data`` must hold no newline: a JSON frame never does)."""
    head = b""
    if event is not None:
        head += b"event: %s\n" % event.encode()
    if event_id is not None:
        head += b"id: %s\n" % event_id.encode()
    return chunk(b"%sdata: %s\n\n" % (head, data))


def sse_head(retry_ms: int, extra_headers: list[tuple[bytes, bytes]] = ()) -> bytes:
    """The response head of a stream, and its first chunk (the reconnection hint)."""
    headers = [
        (b"content-type", SSE_CONTENT_TYPE),
        (b"cache-control", b"no-cache, no-transform"),
        (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
        (b"transfer-encoding", b"chunked"),
        *extra_headers,
    ]
    return (
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"%s: %s\r\n" % pair for pair in headers)
        + b"\r\n"
        + chunk(b"retry: %d\n\n" % retry_ms)
    )


def close_payload(disconnect: Disconnect) -> dict:
    """What a close says, in an SSE ``close`` event and a poll answer's ``close``."""
    return {"code": disconnect.code, "reason": disconnect.reason, "action": disconnect.action.value}


_json = msgspec.json.Encoder()


def sse_close(disconnect: Disconnect) -> bytes:
    """The ``close`` event and the end of the stream."""
    return sse_message(_json.encode(close_payload(disconnect)), event="close") + LAST_CHUNK


def poll_body(
    frames: list[bytes], cursor: str, session: str, *,
    recovered: bool | None = None, close: Disconnect | None = None,
) -> bytes:
    """A long-poll answer around ``frames`` (JSON frames, already encoded once for all)."""
    fields = b'"cursor":%s,"session":%s' % (_json.encode(cursor), _json.encode(session))
    if recovered is not None:
        fields += b',"recovered":%s' % (b"true" if recovered else b"false")
    if close is not None:
        fields += b',"close":%s' % _json.encode(close_payload(close))
    return b'{"events":[%s],%s}' % (b",".join(frames), fields)
