"""What nodes tell each other about an Engine.IO long-polling session one of them holds
(docs/socketio.md, No sticky sessions), sans-IO: the messages and the cursor of a packet.

The node that answered a session's handshake holds it. A request of that session that
lands on another node (a balancer without affinity) is relayed there through the bus as
an ephemeral event to the session's room, and answered by one to the asking node's reply
room; both rooms live under ``RELAY_TENANT``, which no client's tenant can be:

* ``GET`` — the holder answers with the packets its GET took (``body``);
* ``POST`` — the holder handles ``body``'s packets and answers ``ok``;
* ``PROBE`` — a WebSocket opened on the asking node probes: the holder ends its pending
  GET with a noop;
* ``UPGRADE`` — the client moved to that WebSocket: the holder ends its session quietly
  and hands it over (``Handover``), and the asking node carries it on.

A request the session refuses is answered with status 400 and why.
"""

from __future__ import annotations

import enum

import msgspec

from protocol import socketio

#: The tenant of the relay's rooms: not an identifier (``protocol.rooms``), so never a
#: client's tenant.
RELAY_TENANT = "~socketio"
#: The event a relayed request travels as, and the event of its reply.
REQUEST_EVENT = "socketio.request"
REPLY_EVENT = "socketio.reply"


class Method(enum.StrEnum):
    GET = "GET"
    POST = "POST"
    PROBE = "PROBE"
    UPGRADE = "UPGRADE"


class Relayed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A request of session ``sid``, relayed to the room of the node holding it."""

    method: Method
    #: The id of the asking node's reply room.
    reply: str
    #: A POST's body (Engine.IO payloads are text).
    body: str = ""


class NamespaceState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A Socket.IO namespace session as it moves to another node."""

    namespace: str
    #: Its Socket.IO session id (``socket.id`` to the client) and its recovery pid.
    session: str
    pid: str
    #: The token it was admitted with: the new node admits it again.
    token: str
    #: Where its durable events resume: the cursor of the last one a GET took (or of its
    #: connect's answer when none did).
    cursor: str
    #: The rooms subscribed beyond the token's own.
    rooms: list[str]


class Handover(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A session handed to the node its client upgraded on."""

    #: Packets queued and not taken, durable events left out (they resume from the cursor).
    packets: list[str]
    namespaces: list[NamespaceState]


class RelayReply(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    status: int
    body: str = ""
    handover: Handover | None = None


def event_cursor(packet: bytes) -> tuple[str, str] | None:
    """The namespace and cursor of a durable event's packet as the server encodes it (an
    Engine.IO ``message`` holding a Socket.IO ``EVENT`` whose last argument is its
    cursor: ``protocol.socketio_events.event_args``); None for any other packet."""
    if not packet.startswith(b"42"):
        return None
    decoded = socketio.decode(packet[1:].decode())
    args = decoded.data
    if len(args) == 4 and isinstance(args[3], str):
        return decoded.namespace, args[3]
    return None
