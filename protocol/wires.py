"""Wire formats: how a server frame becomes the bytes one transport writes.

A broadcast is encoded once per wire and the same bytes go to every connection using it.
"""

from __future__ import annotations

from protocol.frames import JSON, MSGPACK, Codec, ServerFrame
from protocol.wsframes import data_frame


class Wire:
    """A codec plus the transport framing around each encoded frame."""

    __slots__ = ("name", "codec")

    def __init__(self, name: str, codec: Codec) -> None:
        self.name = name
        self.codec = codec

    def frame(self, frame: ServerFrame) -> bytes:
        raise NotImplementedError


class WebSocketWire(Wire):
    __slots__ = ()

    def frame(self, frame: ServerFrame) -> bytes:
        return data_frame(self.codec.encode(frame), binary=self.codec.binary)


WS_JSON = WebSocketWire("ws-json", JSON)
WS_MSGPACK = WebSocketWire("ws-msgpack", MSGPACK)
WS_WIRES = {JSON.name: WS_JSON, MSGPACK.name: WS_MSGPACK}
