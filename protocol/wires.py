"""Wire formats: how a server frame becomes the bytes one transport writes.

A broadcast is encoded once per wire and the same bytes go to every connection using it.
"""

from __future__ import annotations

import fnmatch

from protocol import socketio
from protocol.frames import JSON, MSGPACK, Codec, Evt, ServerFrame
from protocol.httpstreams import sse_message
from protocol.socketio_events import event_args
from protocol.wsframes import DEFLATE_MIN_BYTES, data_frame, deflate_payload


class Wire:
    """A codec plus the transport framing around each encoded frame."""

    __slots__ = ("name", "codec")
    #: Whether its messages may come compressed (permessage-deflate negotiated).
    deflate = False

    def __init__(self, name: str, codec: Codec) -> None:
        self.name = name
        self.codec = codec

    def frame(self, frame: ServerFrame) -> bytes:
        raise NotImplementedError


class WebSocketWire(Wire):
    __slots__ = ()

    def frame(self, frame: ServerFrame) -> bytes:
        return data_frame(self.codec.encode(frame), binary=self.codec.binary)


def deflated_frame(payload: bytes, *, binary: bool = False) -> bytes:
    """The frame of a message on a permessage-deflate connection: compressed on its own
    when it is ``DEFLATE_MIN_BYTES`` or more and that makes it shorter, else as it is."""
    compressed = deflate_payload(payload) if len(payload) >= DEFLATE_MIN_BYTES else None
    if compressed is None:
        return data_frame(payload, binary=binary)
    return data_frame(compressed, binary=binary, compressed=True)


class DeflateWebSocketWire(WebSocketWire):
    """A WebSocket wire with permessage-deflate negotiated (``protocol.upgrade.offers_deflate``):
    each message is compressed once per broadcast (``deflated_frame``), and the same
    compressed frame serves every recipient on this wire."""

    __slots__ = ()
    deflate = True

    def frame(self, frame: ServerFrame) -> bytes:
        return deflated_frame(self.codec.encode(frame), binary=self.codec.binary)


class SseWire(Wire):
    """One SSE message per frame; a frame's cursor is its ``id:`` (``protocol.httpstreams``)."""

    __slots__ = ()

    def frame(self, frame: ServerFrame) -> bytes:
        return sse_message(self.codec.encode(frame), event_id=getattr(frame, "cursor", None))


class PollWire(Wire):
    """The bare JSON frame: long-poll answers join them into one array."""

    __slots__ = ()

    def frame(self, frame: ServerFrame) -> bytes:
        return self.codec.encode(frame)


WS_JSON = WebSocketWire("ws-json", JSON)
WS_MSGPACK = WebSocketWire("ws-msgpack", MSGPACK)
WS_WIRES = {JSON.name: WS_JSON, MSGPACK.name: WS_MSGPACK}
#: Each WebSocket wire's permessage-deflate twin.
WS_DEFLATE = {WS_JSON: DeflateWebSocketWire("ws-json-deflate", JSON),
              WS_MSGPACK: DeflateWebSocketWire("ws-msgpack-deflate", MSGPACK)}
SSE_JSON = SseWire("sse-json", JSON)
POLL_JSON = PollWire("poll-json", JSON)


class SocketIOWire(Wire):
    """Socket.IO ``EVENT`` packets of one namespace, each an Engine.IO ``message`` in a
    WebSocket text frame (``protocol.socketio_events.event_args``). An event type the
    namespace does not carry (its ``events`` patterns) encodes to nothing. With
    ``deflate``, the frames of Engine.IO WebSockets that negotiated permessage-deflate
    (``deflated_frame``); long-polling sessions take the frames' payloads, so theirs never are."""

    __slots__ = ("namespace", "_patterns", "_carried", "deflate")

    def __init__(self, namespace: str, events: list[str], *, deflate: bool = False) -> None:
        super().__init__(f"socketio{namespace}{'-deflate' if deflate else ''}", JSON)
        self.deflate = deflate
        self.namespace = namespace
        self._patterns = tuple(events)
        self._carried: dict[str, bool] = {}  # event type -> carried (the catalog bounds it)

    def carries(self, event: str) -> bool:
        carried = self._carried.get(event)
        if carried is None:
            carried = self._carried[event] = not self._patterns or any(
                fnmatch.fnmatchcase(event, pattern) for pattern in self._patterns)
        return carried

    def frame(self, frame: ServerFrame) -> bytes:
        if type(frame) is not Evt or not self.carries(frame.event):
            return b""
        message = b"4" + socketio.encode(socketio.PacketType.EVENT, self.namespace, event_args(frame))
        return deflated_frame(message) if self.deflate else data_frame(message)


class FrameWire(Wire):
    """No encoding: each member gets the frame object itself (a connection's own command
    room, whose member acts on the frame instead of writing it)."""

    __slots__ = ()

    def frame(self, frame: ServerFrame) -> ServerFrame:  # type: ignore[override]
        return frame


FRAMES = FrameWire("frames", JSON)
