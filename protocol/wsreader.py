"""What a WebSocket client sends, read on the server side (RFC 6455 §5): sans-IO and small.

``FrameReader.receive(data)`` takes the bytes a socket gave and returns what they complete:
``Message`` (a text or binary message, reassembled from its fragments; text checked as
UTF-8), ``PingFrame`` (answered with ``protocol.wsframes.pong_frame``) and
``CloseFrame``; pongs are dropped. A violation ends the list as a ``Violation`` with the
close to send: 1002 for a protocol error (an unmasked frame, a reserved bit or opcode, a
fragmented or oversized control frame, a continuation of nothing, a bad close code), 1007
for text (or a close reason) that is not UTF-8, 1009 for a message over ``max_message``
bytes, refused from the frame's header before its payload is buffered.

Why not wsproto, which the project used before: its ``Connection`` costs ~1.7 KB per
connection even between messages (a frame protocol, decoders, a buffer, a generator, an
event queue; ``bench/RESULTS.md`` §19), and it hands text back as ``str``, which the
server encoded again for its JSON decoder. Between messages this reader holds its bound
and a few empty slots. The one extension is permessage-deflate (RFC 7692), with no
context takeover: RSV1 on a message's first frame marks it compressed, and it is inflated
on its own, bounded by ``max_message`` (1009 past it, 1007 when it does not inflate); no
compression window is kept between messages. Any other RSV bit is a 1002.
"""

from __future__ import annotations

import codecs
import struct
import zlib
from dataclasses import dataclass

from protocol.errors import CloseCode, Disconnect
from protocol.wsframes import DEFLATE_TAIL, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, RSV1

#: Close codes a peer may send (RFC 6455 §7.4; 1004-1006 and 1015 are never sent).
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
_NO_BYTES = b""


@dataclass(frozen=True, slots=True)
class Message:
    data: bytes
    binary: bool


@dataclass(frozen=True, slots=True)
class PingFrame:
    payload: bytes


@dataclass(frozen=True, slots=True)
class CloseFrame:
    #: None when the close frame carried no code (the answer is then 1000).
    code: int | None
    reason: str


class Violation(Exception):
    """What the client sent breaks RFC 6455 or the size bound; ``disconnect`` is the close
    to send (1002, 1007 or 1009)."""

    def __init__(self, disconnect: Disconnect, detail: str) -> None:
        super().__init__(detail)
        self.disconnect = disconnect
        self.detail = detail


def unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return _NO_BYTES
    mask = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(n, "little")


class FrameReader:
    """One client's frames (see the module docstring); raise ``Violation`` once, then drop it."""

    __slots__ = ("max_message", "_deflate", "_pending", "_fragments", "_fragments_size", "_binary", "_compressed",
                 "_utf8")

    def __init__(self, max_message: int, received: bytes = _NO_BYTES, *, deflate: bool = False) -> None:
        """``received``: bytes that came before (after the upgrade request, on its socket);
        read with the next ``receive``. ``deflate``: permessage-deflate was negotiated, with
        no context takeover (``protocol.upgrade.offers_deflate``)."""
        self.max_message = max_message
        self._deflate = deflate
        self._pending = bytes(received)  # the start of a frame not whole yet
        self._fragments: list[bytes] | None = None  # a message arriving in fragments
        self._fragments_size = 0
        self._binary = self._compressed = False  # the fragmented message's
        self._utf8: codecs.IncrementalDecoder | None = None  # a fragmented text's, as it arrives

    def receive(self, data: bytes) -> list[Message | PingFrame | CloseFrame | Violation]:
        """What ``data`` (after what came before) completes, in order. A ``CloseFrame`` or a
        ``Violation`` is last: nothing is read after either, and the reader is done."""
        events: list[Message | PingFrame | CloseFrame | Violation] = []
        try:
            self._read(self._pending + data if self._pending else data, events)
        except Violation as violation:
            events.append(violation)
        return events

    def _read(self, buf: bytes, events: list) -> None:
        at, end = 0, len(buf)
        while end - at >= 2:
            first, second = buf[at], buf[at + 1]
            if first & 0x70 and not (first & 0x70 == RSV1 and self._deflate and first & 0x0F in (OP_TEXT, OP_BINARY)):
                raise Violation(CloseCode.PROTOCOL_ERROR, "reserved bits set (only RSV1, on a message's first frame, "
                                                          "with permessage-deflate)")
            if not second & 0x80:
                raise Violation(CloseCode.PROTOCOL_ERROR, "client frames must be masked")
            opcode, fin, length, head = first & 0x0F, first & 0x80, second & 0x7F, 6
            if length >= 126:  # the length follows in 2 bytes (126) or 8 (127)
                form, head, shortest = ("!H", 8, 126) if length == 126 else ("!Q", 14, 65536)
                if end - at < head - 4:
                    break
                length = struct.unpack_from(form, buf, at + 2)[0]
                if length < shortest:
                    raise Violation(CloseCode.PROTOCOL_ERROR, "payload length not in its shortest form")
            if opcode >= OP_CLOSE:
                self._check_control(opcode, fin, length)
            elif opcode > OP_BINARY:
                raise Violation(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
            elif length + self._fragments_size > self.max_message:
                raise Violation(CloseCode.MESSAGE_TOO_BIG, f"message over {self.max_message} bytes")
            if end - at < head + length:
                break
            payload = unmask(buf[at + head : at + head + length], buf[at + head - 4 : at + head])
            at += head + length
            event = self._frame(opcode, fin, payload, first & RSV1)
            if event is not None:
                events.append(event)
                if type(event) is CloseFrame:
                    return
        self._pending = buf[at:] if at < end else _NO_BYTES

    @staticmethod
    def _check_control(opcode: int, fin: int, length: int) -> None:
        if opcode > OP_PONG:
            raise Violation(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        if not fin:
            raise Violation(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
        if length > 125:
            raise Violation(CloseCode.PROTOCOL_ERROR, "control frame over 125 bytes")

    def _frame(self, opcode: int, fin: int, payload: bytes, compressed: int) -> Message | PingFrame | CloseFrame | None:
        if opcode == OP_PING:
            return PingFrame(payload)
        if opcode == OP_PONG:
            return None
        if opcode == OP_CLOSE:
            return _close(payload)
        if opcode == OP_CONTINUATION:
            if self._fragments is None:
                raise Violation(CloseCode.PROTOCOL_ERROR, "continuation frame without a message")
            if self._utf8 is not None:
                _check_utf8(self._utf8, payload, bool(fin))
            self._fragments.append(payload)
            self._fragments_size += len(payload)
            if not fin:
                return None
            data, binary, compressed = b"".join(self._fragments), self._binary, self._compressed
            self._fragments, self._fragments_size, self._utf8 = None, 0, None
            return self._message(data, binary, compressed, checked=not compressed)
        if self._fragments is not None:
            raise Violation(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
        binary = opcode == OP_BINARY
        if not fin:
            self._fragments, self._fragments_size = [payload], len(payload)
            self._binary, self._compressed = binary, bool(compressed)
            if not binary and not compressed:
                self._utf8 = codecs.getincrementaldecoder("utf-8")()
                _check_utf8(self._utf8, payload, False)
            return None
        return self._message(payload, binary, compressed, checked=False)

    def _message(self, data: bytes, binary: bool, compressed: int, *, checked: bool) -> Message:
        """A whole message: inflated if ``compressed``, its text checked as UTF-8 unless
        ``checked`` already."""
        if compressed:
            data = self._inflate(data)
        if not binary and not checked:
            _check_utf8(None, data, True)
        return Message(data, binary)

    def _inflate(self, data: bytes) -> bytes:
        """A compressed message's bytes, refused past ``max_message`` without inflating
        further (a small message may inflate to gigabytes)."""
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # no context takeover: each message alone
        try:
            inflated = inflater.decompress(data + DEFLATE_TAIL, self.max_message + 1)
        except zlib.error:
            raise Violation(CloseCode.INVALID_PAYLOAD, "compressed message that does not inflate") from None
        if len(inflated) > self.max_message:
            raise Violation(CloseCode.MESSAGE_TOO_BIG, f"message over {self.max_message} bytes once inflated")
        return inflated


def _check_utf8(decoder: codecs.IncrementalDecoder | None, data: bytes, final: bool) -> None:
    """Refuse text that is not UTF-8, a fragment at a time (``decoder``) or whole."""
    try:
        if decoder is None:
            data.decode()
        else:
            decoder.decode(data, final)
    except UnicodeDecodeError:
        raise Violation(CloseCode.INVALID_PAYLOAD, "text message is not UTF-8") from None


def _close(payload: bytes) -> CloseFrame:
    if not payload:
        return CloseFrame(None, "")
    if len(payload) == 1:
        raise Violation(CloseCode.PROTOCOL_ERROR, "close frame with a one-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if code not in _SENDABLE and not 3000 <= code <= 4999:
        raise Violation(CloseCode.PROTOCOL_ERROR, f"close code {code} may not be sent")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise Violation(CloseCode.INVALID_PAYLOAD, "close reason is not UTF-8") from None
    return CloseFrame(code, reason)
