"""Cursors: the opaque, URL-safe position of a durable event in its shard's stream.

A cursor names a shard, the stream's *epoch* (a new epoch means the stream was lost or
recreated, so older cursors cannot be resumed) and the entry's offset (``ms-seq``, the
shape of a Redis Streams id). A tenant always maps to one shard, so one cursor covers
every room a connection has. Text form: ``{shard}.{epoch}.{ms}-{seq}``.
"""

from __future__ import annotations

import re
import zlib
from typing import NamedTuple

from protocol.errors import ReplyCode, ReplyError

_CURSOR = re.compile(r"(\d{1,5})\.([A-Za-z0-9]{1,32})\.(\d{1,20})-(\d{1,20})")
#: Largest part of a stream offset (Redis Streams ids are two unsigned 64-bit integers).
MAX_OFFSET_PART = 2**64 - 1


class Offset(NamedTuple):
    """A position in one shard's stream; ordered like the stream."""

    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    @classmethod
    def parse(cls, text: str) -> Offset:
        ms, _, seq = text.partition("-")
        return cls(int(ms), int(seq or 0))


class Cursor(NamedTuple):
    shard: int
    epoch: str
    offset: Offset

    def encode(self) -> str:
        return f"{self.shard}.{self.epoch}.{self.offset.ms}-{self.offset.seq}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """Parse a client-supplied cursor; raises ``ReplyError(BAD_FRAME)`` when malformed or
        when an offset part is beyond 64 bits (no stream can hold it)."""
        m = _CURSOR.fullmatch(text)
        if not m:
            raise ReplyError(ReplyCode.BAD_FRAME, f"malformed cursor {text[:64]!r}")
        ms, seq = int(m[3]), int(m[4])
        if ms > MAX_OFFSET_PART or seq > MAX_OFFSET_PART:
            raise ReplyError(ReplyCode.BAD_FRAME, f"cursor {text[:64]!r} is out of range")
        return cls(int(m[1]), m[2], Offset(ms, seq))


def shard_of(tenant: str, shards: int) -> int:
    """``crc32(tenant) % shards``, with zlib's IEEE CRC-32 over UTF-8 (docs/protocol.md, Publishing)."""
    return zlib.crc32(tenant.encode()) % shards
