"""Frames of the wire contract (docs/protocol.md, Frames) as msgspec structs, and their two codecs.

Client frames are a tagged union on ``op``; server frames are encoded with the same keys
in JSON (text frames, subprotocol ``rt.v1.json``) or MessagePack (binary frames,
``rt.v1.msgpack``). Decoding validates types and refuses unknown keys.
"""

from __future__ import annotations

from typing import Any

import msgspec

from protocol.errors import ReplyCode, ReplyError
from protocol.limits import decode_bounded


class _Frame(msgspec.Struct, tag_field="op", forbid_unknown_fields=True, omit_defaults=True):
    pass


# -- client -> server -------------------------------------------------------------------
class Sub(_Frame, tag="sub"):
    room: str
    since: str | None = None
    ref: int | None = None


class Unsub(_Frame, tag="unsub"):
    room: str
    ref: int | None = None


class Emit(_Frame, tag="emit"):
    event: str
    room: str | None = None
    data: dict[str, Any] = {}
    ref: int | None = None


class Ping(_Frame, tag="ping"):
    ref: int | None = None


ClientFrame = Sub | Unsub | Emit | Ping


# -- server -> client -------------------------------------------------------------------
class Hello(_Frame, tag="hello"):
    session: str
    rooms: list[str]
    heartbeat_s: int
    ns: str
    user: str
    expires_at: int | None = None
    recovered: bool | None = None  # present when the URL carried ``since``
    cursor: str | None = None  # the stream position to resume from if nothing arrives


class Ack(_Frame, tag="ack"):
    ref: int | None = None
    room: str | None = None
    recovered: bool | None = None
    cursor: str | None = None
    event: str | None = None


class Error(_Frame, tag="error"):
    code: int
    message: str
    ref: int | None = None
    temporary: bool = False


class Evt(_Frame, tag="evt"):
    event: str
    room: str
    id: str
    ts: int
    data: dict[str, Any]
    cursor: str | None = None  # durable events only
    merged: int | None = None  # coalesced frames: how many events this one merged


class Pong(_Frame, tag="pong"):
    ref: int | None = None


ServerFrame = Hello | Ack | Error | Evt | Pong


def error_frame(err: ReplyError, ref: int | None) -> Error:
    return Error(code=int(err.code), message=err.message, ref=ref, temporary=err.temporary)


class Codec:
    """Encodes server frames and decodes client frames for one wire format."""

    name: str
    binary: bool

    def __init__(self, encoder: Any, decoder: Any) -> None:
        self._encode = encoder.encode
        self._decode = decoder.decode

    def encode(self, frame: ServerFrame) -> bytes:
        return self._encode(frame)

    def decode(self, data: bytes) -> ClientFrame:
        """Decode one client frame; raises ``ReplyError(BAD_FRAME)`` with the reason
        (nested deeper than ``protocol.limits.MAX_DEPTH`` included)."""
        try:
            return decode_bounded(self._decode, data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ReplyError(ReplyCode.BAD_FRAME, str(exc)) from None


class JsonCodec(Codec):
    name = "rt.v1.json"
    binary = False

    def __init__(self) -> None:
        super().__init__(msgspec.json.Encoder(), msgspec.json.Decoder(ClientFrame))


class MsgpackCodec(Codec):
    name = "rt.v1.msgpack"
    binary = True

    def __init__(self) -> None:
        super().__init__(msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(ClientFrame))


JSON = JsonCodec()
MSGPACK = MsgpackCodec()
