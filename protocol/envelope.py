"""The envelope of an event on the bus, and the body of ``POST /v1/publish``.

The same fields make a stream entry (docs/protocol.md, Publishing): ``event``, ``tenant``, ``rooms`` (a JSON
list of room names as clients write them), ``data`` (a JSON object), optional ``id``,
``ts`` (ms) and ``traceparent``. When a producer gives no ``id``, the entry id stands in.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from protocol.cursors import Offset
from protocol.frames import Evt
from protocol.limits import decode_bounded

#: Longest event ``id`` a publisher may give (it names a Redis key for idempotency).
MAX_EVENT_ID = 200

EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID)]


class Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    event: str
    tenant: str
    rooms: list[str]
    data: dict[str, Any] = {}
    id: EventId | None = None
    ts: int | None = None
    traceparent: str | None = None
    #: The session of the client whose command made this event (``typing:*``): rooms do
    #: not deliver it back to that session. Set by rtserver, never a stream field.
    origin: str | None = None


class StoredEvent(msgspec.Struct, frozen=True):
    """An envelope as read back from the bus: with its offset and its cursor text.

    Ephemeral events are never stored; they travel with ``offset``/``cursor`` set to None.
    """

    envelope: Envelope
    id: str
    ts: int
    offset: Offset | None = None
    cursor: str | None = None

    def frame(self, room: str) -> Evt:
        """The ``evt`` frame of this event as delivered in ``room``."""
        envelope = self.envelope
        return Evt(event=envelope.event, room=room, id=self.id, ts=self.ts,
                   data=envelope.data, cursor=self.cursor)


class Inbound(msgspec.Struct, frozen=True):
    """A client command handed to the backbone (``mark_alert_read``): the fields of an
    entry of the shard's inbound stream ``rt:{<shard>}:inbound`` (docs/protocol.md)."""

    event: str
    tenant: str
    user: str
    session: str
    data: dict[str, Any]
    ts: int


_publish_decoder = msgspec.json.Decoder(Envelope)


def decode_publish(body: bytes) -> Envelope:
    """Decode a publish body; raises ``msgspec.ValidationError``/``DecodeError`` with the
    reason, ``ReplyError(BAD_FRAME)`` when nested too deeply."""
    return decode_bounded(_publish_decoder.decode, body)
