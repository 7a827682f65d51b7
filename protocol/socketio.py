"""Socket.IO v5 packets (docs/socketio.md), sans-IO: decoding what clients send, bounded,
and encoding what the server sends.

A packet travels as an Engine.IO ``message``:
``<type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]``, its binary attachments
(``BINARY_EVENT`` / ``BINARY_ACK``) following as packets of their own, each standing where
the payload holds ``{"_placeholder": true, "num": <n>}``.

Bounded and strict where Socket.IO parsers were not: at most ``MAX_ATTACHMENTS``
attachments, each within the transport's message limit; a placeholder is exactly
``{"_placeholder": true, "num": <int>}`` with ``0 <= num < attachments`` (not a string,
a float, a boolean or an object: the type confusion behind CVE-2022-2421), each used once;
the JSON payload nested at most ``protocol.limits`` deep; an ack id of at most 15 digits; a
namespace of at most ``MAX_NAMESPACE`` characters. A packet that breaks a rule raises
``SocketIOError`` and the connection ends, as the protocol says.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from protocol.errors import ReplyError
from protocol.limits import decode_bounded

#: Binary attachments one packet may announce.
MAX_ATTACHMENTS = 10
#: Longest namespace, in characters.
MAX_NAMESPACE = 128
#: Longest ack id, in digits (JavaScript's safe integers).
MAX_ACK_DIGITS = 15

_NAMESPACE = re.compile(r"/[A-Za-z0-9_.~/-]{0,127}")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class SocketIOError(ValueError):
    """A packet that breaks the protocol: the connection ends."""


class PacketType(enum.IntEnum):
    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


_BINARY = (PacketType.BINARY_EVENT, PacketType.BINARY_ACK)


@dataclass(slots=True)
class Packet:
    type: PacketType
    namespace: str = "/"
    data: Any = None
    id: int | None = None
    #: Binary attachments announced and not received yet (decoding only).
    attachments: int = 0
    received: list[bytes] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.received) >= self.attachments


def decode(text: str) -> Packet:
    """A packet from the text of an Engine.IO ``message``; a binary packet still waits for
    its attachments (``attach``)."""
    if not text or not ("0" <= text[0] <= "6"):
        raise SocketIOError("a packet starts with its type (0-6)")
    packet_type = PacketType(int(text[0]))
    if packet_type is PacketType.CONNECT_ERROR:
        raise SocketIOError("CONNECT_ERROR is sent by servers only")
    i, attachments = 1, 0
    if packet_type in _BINARY:
        dash = text.find("-", 1, 1 + 3)
        if dash < 0 or not text[1:dash].isdigit() or not text[1:dash].isascii():
            raise SocketIOError("a binary packet announces its attachments: <n>-")
        attachments = int(text[1:dash])
        if not 1 <= attachments <= MAX_ATTACHMENTS:
            raise SocketIOError(f"a binary packet has 1 to {MAX_ATTACHMENTS} attachments")
        i = dash + 1
    namespace = "/"
    if text.startswith("/", i):
        comma = text.find(",", i, i + MAX_NAMESPACE + 1)
        end = comma if comma >= 0 else len(text)
        namespace = text[i:end]
        if not _NAMESPACE.fullmatch(namespace):
            raise SocketIOError("malformed namespace")
        i = end + 1
    ack_id = None
    digits = i
    while digits < len(text) and "0" <= text[digits] <= "9":
        digits += 1
    if digits > i:
        if digits - i > MAX_ACK_DIGITS:
            raise SocketIOError(f"an ack id has at most {MAX_ACK_DIGITS} digits")
        ack_id, i = int(text[i:digits]), digits
    data = None
    if i < len(text):
        try:
            data = decode_bounded(_decode, text[i:].encode())
        except (ReplyError, msgspec.DecodeError):
            raise SocketIOError("the payload is not JSON within bounds") from None
    _check_payload(packet_type, data, ack_id)
    return Packet(packet_type, namespace, data, ack_id, attachments)


def _check_payload(packet_type: PacketType, data: Any, ack_id: int | None) -> None:
    if packet_type is PacketType.CONNECT:
        if not (data is None or isinstance(data, dict)):
            raise SocketIOError("a CONNECT payload is an object")
    elif packet_type is PacketType.DISCONNECT:
        if data is not None:
            raise SocketIOError("a DISCONNECT has no payload")
    elif packet_type in (PacketType.EVENT, PacketType.BINARY_EVENT):
        if not (isinstance(data, list) and data and isinstance(data[0], str)):
            raise SocketIOError("an EVENT payload is a non-empty array whose first element is the event's name")
    elif not isinstance(data, list) or ack_id is None:  # ACK, BINARY_ACK
        raise SocketIOError("an ACK has an id and an array payload")


def attach(packet: Packet, attachment: bytes) -> None:
    """Add the next binary attachment; once the last is in, put each where its placeholder stands."""
    if packet.complete:
        raise SocketIOError("an attachment no packet announced")
    packet.received.append(attachment)
    if packet.complete:
        used: set[int] = set()
        packet.data = _fill(packet.data, packet.received, used)
        if len(used) != packet.attachments:
            raise SocketIOError("an announced attachment that no placeholder uses")


def _fill(value: Any, attachments: list[bytes], used: set[int]) -> Any:
    if isinstance(value, list):
        return [_fill(item, attachments, used) for item in value]
    if isinstance(value, dict):
        if "_placeholder" in value:
            num = value.get("num")
            if (value.keys() != {"_placeholder", "num"} or value["_placeholder"] is not True
                    or type(num) is not int or not 0 <= num < len(attachments) or num in used):
                raise SocketIOError("a placeholder is exactly {_placeholder: true, num: <attachment index>}, used once")
            used.add(num)
            return attachments[num]
        return {key: _fill(item, attachments, used) for key, item in value.items()}
    return value


def encode(packet_type: PacketType, namespace: str = "/", data: Any = None, ack_id: int | None = None) -> bytes:
    """A server packet (never binary) as the text of an Engine.IO ``message``, without its
    ``4`` prefix."""
    head = str(packet_type.value)
    if namespace != "/":
        head += namespace + ","
    if ack_id is not None:
        head += str(ack_id)
    if data is None:
        return head.encode()
    return head.encode() + _encode(data)
