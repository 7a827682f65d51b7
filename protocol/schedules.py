"""A schedule's last-value record (docs/protocol.md, Schedules): what each event changes, and the snapshot.

A record holds, per schedule room (``schedule:{id}`` of a tenant), the newest value of
each item the schedule's events describe, with the offset of the event that set it:

* ``day:<date>`` — ``schedule.slots.generated`` (a day's slots, as generated);
* ``slot:<slotId>`` — ``schedule.slots.changed`` (``day:<date>`` when it names no slot);
* ``appointment:<appointmentId>`` — ``appointment.created`` / ``.status.changed``.

Items are updated only by a newer offset, so applying an event twice, or two events out
of order, leaves the newest value. A snapshot also carries the cursor up to which *every*
event is reflected; events after it may be reflected too (``covers``), so a new
subscriber is sent the snapshot, then the room's history after that cursor minus what the
snapshot covers, then live events: no gap, no duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from protocol.cursors import Cursor, Offset
from protocol.envelope import StoredEvent
from protocol.frames import Evt
from protocol.rooms import RoomKind, parse_room

#: The frame that hands a new subscriber a schedule's record.
SNAPSHOT_EVENT = "schedule.snapshot"
_ITEM_OF = {
    "schedule.slots.generated": lambda d: f"day:{d['date']}" if "date" in d else None,
    "schedule.slots.changed": lambda d: (f"slot:{d['slotId']}" if "slotId" in d
                                         else f"day:{d['date']}" if "date" in d else None),
    "appointment.created": lambda d: f"appointment:{d['appointmentId']}" if "appointmentId" in d else None,
    "appointment.status.changed": lambda d: f"appointment:{d['appointmentId']}" if "appointmentId" in d else None,
}
#: Event types that change schedule records.
RECORDED_EVENTS = frozenset(_ITEM_OF)


class Item(msgspec.Struct, frozen=True, array_like=True):
    """One item's newest value: the offset, id and type of the event that set it."""

    offset: str
    id: str
    event: str
    data: dict[str, Any]

    @property
    def at(self) -> Offset:
        return Offset.parse(self.offset)


item_encoder = msgspec.json.Encoder()
decode_item = msgspec.json.Decoder(Item).decode


@dataclass(frozen=True, slots=True)
class Update:
    """Set ``field`` of the record of ``schedule`` (a room name) in ``tenant`` to ``item``."""

    tenant: str
    schedule: str
    field: str
    item: Item


def updates(event: StoredEvent) -> list[Update]:
    """What ``event`` changes in schedule records (one update per schedule room it names)."""
    env = event.envelope
    item_of = _ITEM_OF.get(env.event)
    if item_of is None or event.offset is None:
        return []
    field = item_of(env.data)
    if field is None:
        return []
    item = Item(str(event.offset), event.id, env.event, env.data)
    out = []
    for room in env.rooms:
        kind, _ = parse_room(room)
        if kind is RoomKind.SCHEDULE:
            out.append(Update(env.tenant, room, field, item))
    return out


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A record as read: its items, and the cursor up to which every event is in it."""

    room: str
    items: dict[str, Item]
    cursor: Cursor

    def covers(self, event: StoredEvent) -> bool:
        """Whether the snapshot already reflects ``event`` (or something newer of its item)."""
        for update in updates(event):
            if update.schedule == self.room:
                item = self.items.get(update.field)
                return item is not None and item.at >= event.offset
        return False

    def frame(self, event_id: str, ts: int) -> Evt:
        days, slots, appointments = {}, {}, {}
        for field, item in self.items.items():
            kind, _, key = field.partition(":")
            target = days if kind == "day" else slots if kind == "slot" else appointments
            target[key] = {"event": item.event, "id": item.id, "data": item.data}
        data = {"scheduleId": self.room.partition(":")[2], "days": days, "slots": slots,
                "appointments": appointments}
        return Evt(event=SNAPSHOT_EVENT, room=self.room, id=event_id, ts=ts, data=data,
                   cursor=self.cursor.encode())
