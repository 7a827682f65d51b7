"""Engine.IO v4, the transport under Socket.IO v5 (docs/socketio.md), sans-IO: packets,
long-polling payloads and the handshake.

A packet is a type digit and its data. On WebSocket each packet is one frame: a text frame
``<type><text>``, or a binary frame carrying a ``message`` packet's bytes. On long-polling
a payload joins packets with the record separator ``\\x1e``, binary ones as ``b<base64>``.
Untrusted input is bounded before it is decoded: a payload longer than ``max_payload``
bytes, or holding more than ``MAX_PACKETS_PER_PAYLOAD`` packets, is refused.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass

import msgspec

#: Packets one long-polling payload may hold (a client batches what it emitted meanwhile).
MAX_PACKETS_PER_PAYLOAD = 1000
SEPARATOR = "\x1e"


class EngineIOError(ValueError):
    """Input that breaks the protocol: the session ends (400 on polling, close on WebSocket)."""


class PacketType(enum.IntEnum):
    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


@dataclass(frozen=True, slots=True)
class Packet:
    type: PacketType
    #: Text for a text packet, bytes for a binary ``message``.
    data: str | bytes = ""


def decode_packet(data: str | bytes) -> Packet:
    """One packet as a WebSocket frame carries it: text (``str``) or a binary message (``bytes``)."""
    if isinstance(data, bytes):
        return Packet(PacketType.MESSAGE, data)
    if not data or not ("0" <= data[0] <= "6"):
        raise EngineIOError("an Engine.IO packet starts with its type (0-6)")
    return Packet(PacketType(int(data[0])), data[1:])


def encode_text(packet_type: PacketType, text: str = "") -> bytes:
    """A text packet as UTF-8 (a WebSocket text frame's payload, or one packet of a payload)."""
    return f"{packet_type.value}{text}".encode()


def decode_payload(body: bytes, max_payload: int) -> list[Packet]:
    """The packets of a long-polling POST body (UTF-8 text)."""
    if len(body) > max_payload:
        raise EngineIOError(f"payload over {max_payload} bytes")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise EngineIOError("a payload is UTF-8 text") from None
    parts = text.split(SEPARATOR, MAX_PACKETS_PER_PAYLOAD)
    if len(parts) > MAX_PACKETS_PER_PAYLOAD:
        raise EngineIOError(f"more than {MAX_PACKETS_PER_PAYLOAD} packets in one payload")
    packets = []
    for part in parts:
        if part.startswith("b"):
            try:
                packets.append(Packet(PacketType.MESSAGE, base64.b64decode(part[1:], validate=True)))
            except binascii.Error:
                raise EngineIOError("a binary packet is b<base64>") from None
        else:
            packets.append(decode_packet(part))
    return packets


def encode_payload(packets: list[bytes]) -> bytes:
    """A long-polling GET answer: encoded packets (``encode_text``, or ``b<base64>`` for
    binary ones) joined by the record separator."""
    return SEPARATOR.encode().join(packets)


class Handshake(msgspec.Struct, frozen=True):
    """The ``open`` packet's payload."""

    sid: str
    upgrades: list[str]
    pingInterval: int  # noqa: N815 (the protocol's names)
    pingTimeout: int  # noqa: N815
    maxPayload: int  # noqa: N815


def open_packet(handshake: Handshake) -> bytes:
    return encode_text(PacketType.OPEN, msgspec.json.encode(handshake).decode())
