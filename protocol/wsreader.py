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
and four empty slots. No extension is negotiated, so every RSV bit must be 0.
"""

from __future__ import annotations

import codecs
import struct
from dataclasses import dataclass

from protocol.errors import CloseCode, Disconnect
from protocol.wsframes import OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG

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

    __slots__ = ("max_message", "_pending", "_fragments", "_fragments_size", "_utf8")

    def __init__(self, max_message: int, received: bytes = _NO_BYTES) -> None:
        """``received``: bytes that came before (after the upgrade request, on its socket);
        read with the next ``receive``."""
        self.max_message = max_message
        self._pending = bytes(received)  # the start of a frame not whole yet
        self._fragments: list[bytes] | None = None  # a message arriving in fragments
        self._fragments_size = 0
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
            if first & 0x70:
                raise Violation(CloseCode.PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)")
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
            event = self._frame(opcode, fin, payload)
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

    def _frame(self, opcode: int, fin: int, payload: bytes) -> Message | PingFrame | CloseFrame | None:
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
            message = Message(b"".join(self._fragments), self._utf8 is None)
            self._fragments, self._fragments_size, self._utf8 = None, 0, None
            return message
        if self._fragments is not None:
            raise Violation(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
        binary = opcode == OP_BINARY
        if not fin:
            self._fragments, self._fragments_size = [payload], len(payload)
            if not binary:
                self._utf8 = codecs.getincrementaldecoder("utf-8")()
                _check_utf8(self._utf8, payload, False)
            return None
        if not binary:
            _check_utf8(None, payload, True)
        return Message(payload, binary)


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
