"""Bounds on untrusted documents: how deeply a JSON or MessagePack document may nest.

A document from a client, a publisher or a stream entry may nest at most ``MAX_DEPTH``
arrays and objects (the document itself is the first level). ``decode_bounded`` decodes
with a msgspec decoder, whose own recursion guard stops a pathological document (12,000
levels in 24 KB) after a bounded amount of work, and refuses anything deeper than
``MAX_DEPTH`` with ``BAD_FRAME``; documents with no more openings than ``MAX_DEPTH`` (the
common case) are not walked at all. Sizes are bounded where the bytes arrive (the
WebSocket message limit, the HTTP body limit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from protocol.errors import ReplyCode, ReplyError

#: Deepest nesting of arrays and objects accepted in a document.
MAX_DEPTH = 32

T = TypeVar("T")

#: Every byte that cannot open a JSON array or object, nor a MessagePack array or map.
_NOT_OPENINGS = bytes(b for b in range(256) if b not in b"[{" and not (0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF))


def _nested_within(value: Any, limit: int) -> bool:
    """Whether ``value`` (decoded: dicts, lists, structs of them) nests at most ``limit``
    levels of containers; walked without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, msgspec.Struct):
            children = (getattr(item, name) for name in item.__struct_fields__)
        else:
            children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list, tuple, msgspec.Struct)))
    return True


def _too_deep() -> ReplyError:
    return ReplyError(ReplyCode.BAD_FRAME, f"document nested deeper than {MAX_DEPTH} levels")


def decode_bounded(decode: Callable[[bytes], T], body: bytes) -> T:
    """``decode(body)`` (a msgspec decoder's ``decode``), refusing a document nested
    deeper than ``MAX_DEPTH`` with ``ReplyError(BAD_FRAME)``; the decoder's own errors
    (``msgspec.DecodeError``, ``msgspec.ValidationError``) pass through."""
    try:
        value = decode(body)
    except RecursionError:
        raise _too_deep() from None
    if len(body.translate(None, _NOT_OPENINGS)) > MAX_DEPTH and not _nested_within(value, MAX_DEPTH):
        raise _too_deep()
    return value
