"""Server-side WebSocket frames (RFC 6455 §5.2), encoded once and shared.

Server frames are never masked, so one encoded frame serves every recipient; that is what
lets a broadcast be framed once. What clients send is read by ``protocol.wsreader``.
"""

from __future__ import annotations

import struct

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_FIN = 0x80


def data_frame(payload: bytes, *, binary: bool = False) -> bytes:
    """One unfragmented, unmasked text (or binary) frame carrying ``payload``."""
    first = _FIN | (OP_BINARY if binary else OP_TEXT)
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """An unmasked close frame; the reason is cut to fit the 125-byte control limit."""
    body = struct.pack("!H", code) + reason.encode()[:123]
    return bytes((_FIN | OP_CLOSE, len(body))) + body


def pong_frame(payload: bytes) -> bytes:
    """The unmasked pong answering a ping of ``payload`` (a control frame: at most 125 bytes)."""
    return bytes((_FIN | OP_PONG, len(payload))) + payload
