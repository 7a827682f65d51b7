"""Server-side WebSocket frames (RFC 6455 §5.2), encoded once and shared.

Server frames are never masked, so one encoded frame serves every recipient; that is what
lets a broadcast be framed once. wsproto frames per connection (its ``FrameProtocol``),
which is right for replies and control frames but would re-frame a broadcast N times, so
the shared data frames are built here; wsproto still parses everything clients send.
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
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
