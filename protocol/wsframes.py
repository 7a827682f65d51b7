"""Server-side WebSocket frames (RFC 6455 §5.2), encoded once and shared.

Server frames are never masked, so one encoded frame serves every recipient; that is what
lets a broadcast be framed once. What clients send is read by ``protocol.wsreader``.
"""

from __future__ import annotations

import struct
import zlib

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_FIN = 0x80


#: RSV1 on a message's first frame: its payload is compressed (permessage-deflate).
RSV1 = 0x40
#: The empty stored block a sync (or full) flush ends with, left off the wire (RFC 7692 §7.2.1).
DEFLATE_TAIL = b"\x00\x00\xff\xff"
#: Messages shorter than this go uncompressed on a permessage-deflate connection: below it,
#: DEFLATE saves next to nothing and its output may be longer.
DEFLATE_MIN_BYTES = 128
#: zlib's level for what the server compresses: 6, zlib's default (each broadcast is
#: compressed once for all its recipients).
DEFLATE_LEVEL = 6
#: One compressor for every message: a full flush after each leaves nothing of it for the
#: next to refer to (no context takeover), without a new compressor's allocation per message.
_compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)


def deflate_payload(payload: bytes) -> bytes | None:
    """``payload`` compressed as a permessage-deflate message with no context takeover, or
    None when that would not make it shorter."""
    compressed = _compressor.compress(payload) + _compressor.flush(zlib.Z_FULL_FLUSH)
    compressed = compressed[:-len(DEFLATE_TAIL)]
    return compressed if len(compressed) < len(payload) else None


def data_frame(payload: bytes, *, binary: bool = False, compressed: bool = False) -> bytes:
    """One unfragmented, unmasked text (or binary) frame carrying ``payload`` (already
    compressed, with ``compressed``: RSV1 set)."""
    first = _FIN | (OP_BINARY if binary else OP_TEXT) | (RSV1 if compressed else 0)
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
