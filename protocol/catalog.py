"""The event catalog (docs/protocol.md, Event catalog): every event type, declared once.

Each type states its payload schema as a field allow-list (each field typed, see
``FIELD_TYPES``), its delivery class (durable
events enter the stream and carry cursors; ephemeral ones never do), its coalescing rule,
the room kinds it may be routed to, and who may send it (the backbone, or clients of which
namespaces). ``Catalog.validate_publish`` is the ingest check: an event that breaks it is
refused (HTTP) or dead-lettered (stream), never forwarded.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from protocol.errors import ReplyCode, ReplyError
from protocol.rooms import RoomKind, is_identifier, parse_room


class Delivery(enum.StrEnum):
    DURABLE = "durable"
    EPHEMERAL = "ephemeral"


class Coalesce(enum.StrEnum):
    NONE = "none"
    LATEST = "latest"  # latest wins per key (and at most one per ``interval_ms`` when set)
    DIGEST = "digest"  # bursts become one digest frame per key per window


class Namespace(enum.StrEnum):
    HUB = "hub"  # staff
    PORTAL = "portal"  # patients


@dataclass(frozen=True, slots=True)
class CoalesceRule:
    kind: Coalesce = Coalesce.NONE
    key: tuple[str, ...] = ()  # payload fields that identify what is coalesced
    interval_ms: int = 0


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    fields: frozenset[str]
    delivery: Delivery = Delivery.DURABLE
    coalesce: CoalesceRule = CoalesceRule()
    rooms: frozenset[RoomKind] = frozenset()
    #: namespaces whose clients may ``emit`` it; empty for server-to-client events.
    emitters: frozenset[Namespace] = frozenset()
    #: made by rtserver itself (snapshots, digests): never published nor emitted.
    internal: bool = False
    #: payload fields that must be present (client events).
    required: frozenset[str] = frozenset()

    @property
    def durable(self) -> bool:
        return self.delivery is Delivery.DURABLE


K = RoomKind
_SCHEDULING_ROOMS = frozenset({K.SCHEDULE, K.PROFESSIONAL, K.SPECIALITY, K.TENANT})
_APPOINTMENT_ROOMS = _SCHEDULING_ROOMS | {K.PATIENT, K.USER}
_CARE_ROOMS = frozenset({K.TENANT, K.PATIENT, K.USER})
_QUEUE_ROOMS = frozenset({K.TENANT, K.PRESENCE, K.USER})
_THREAD_ROOMS = frozenset({K.THREAD, K.USER})
_PRESENCE_ROOMS = frozenset({K.PRESENCE})
_BOTH = frozenset({Namespace.HUB, Namespace.PORTAL})
_STAFF = frozenset({Namespace.HUB})


def _server(name: str, fields: str, rooms: frozenset[RoomKind], **kw) -> EventType:
    return EventType(name, frozenset(fields.split()), rooms=rooms, **kw)


def _client(name: str, fields: str, emitters: frozenset[Namespace], rooms=frozenset(), required="") -> EventType:
    return EventType(
        name, frozenset(fields.split()), Delivery.EPHEMERAL, rooms=rooms, emitters=emitters,
        required=frozenset(required.split()),
    )


_DIGEST_PER_SCHEDULE = CoalesceRule(Coalesce.DIGEST, ("scheduleId",))
_PRESENCE_FIELDS = "userId group state since connections"
_QUEUE_FIELDS = "queueId itemId threadId position size takenBy priority waitingSince"

DEFAULT_EVENTS: tuple[EventType, ...] = (
    # Scheduling (server -> client)
    _server("schedule.slots.generated", "scheduleId date slots from to count version",
            _SCHEDULING_ROOMS, coalesce=_DIGEST_PER_SCHEDULE),
    _server("schedule.slots.changed", "scheduleId date slotId slots status start end version",
            _SCHEDULING_ROOMS, coalesce=_DIGEST_PER_SCHEDULE),
    _server("appointment.created", "appointmentId scheduleId slotId patientTaxId "
            "professionalTaxId specialityId start end status", _APPOINTMENT_ROOMS),
    _server("appointment.status.changed", "appointmentId scheduleId slotId patientTaxId "
            "status previousStatus reasonCode changedAt", _APPOINTMENT_ROOMS),
    _server("forwarding.created", "forwardingId patientTaxId fromSpecialityId toSpecialityId "
            "status priority createdAt", _APPOINTMENT_ROOMS),
    _server("forwarding.status.changed", "forwardingId patientTaxId status previousStatus "
            "changedAt", _APPOINTMENT_ROOMS),
    _server("admin.job.progress", "jobId kind done total percent state",
            frozenset({K.TENANT, K.USER}), coalesce=CoalesceRule(Coalesce.LATEST, ("jobId",))),
    # Care and alerts (server -> client)
    _server("critical_alert", "id patientId type severity timestamp conversationId score "
            "symptomCode", _CARE_ROOMS),
    _server("conversation_update", "conversationId patientId type messageId sender timestamp "
            "isAudio", _CARE_ROOMS),
    _server("priority_update", "patientId oldPriority newPriority category reasonCode",
            _CARE_ROOMS, coalesce=CoalesceRule(Coalesce.LATEST, ("patientId",), 1000)),
    _server("patient_status_change", "patientId status previousStatus timestamp", _CARE_ROOMS),
    _server("new_patient", "patientId priority category timestamp", _CARE_ROOMS),
    # Attendance (server -> client)
    _server("attendant:online", _PRESENCE_FIELDS, _PRESENCE_ROOMS, delivery=Delivery.EPHEMERAL),
    _server("attendant:away", _PRESENCE_FIELDS, _PRESENCE_ROOMS, delivery=Delivery.EPHEMERAL),
    _server("attendant:offline", _PRESENCE_FIELDS, _PRESENCE_ROOMS, delivery=Delivery.EPHEMERAL),
    # The users of a presence group who are not offline, sent on subscribing to it.
    _server("presence:snapshot", "group users", _PRESENCE_ROOMS, delivery=Delivery.EPHEMERAL, internal=True),
    # A schedule's last-value record, sent on subscribing to it (protocol.schedules).
    _server("schedule.snapshot", "scheduleId days slots appointments", frozenset({K.SCHEDULE}), internal=True),
    # Merged schedule.slots.* events of one schedule (protocol.coalesce).
    _server("schedule.digest", "scheduleId changes", _SCHEDULING_ROOMS, internal=True),
    _server("queue:new", _QUEUE_FIELDS, _QUEUE_ROOMS),
    _server("queue:taken", _QUEUE_FIELDS, _QUEUE_ROOMS),
    _server("queue:updated", _QUEUE_FIELDS, _QUEUE_ROOMS),
    _server("thread:message", "threadId messageId senderId senderRole text sentAt attachments",
            _THREAD_ROOMS),
    _server("thread:typing", "threadId userId typing", frozenset({K.THREAD}),
            delivery=Delivery.EPHEMERAL,
            coalesce=CoalesceRule(Coalesce.LATEST, ("userId", "threadId"))),
    _server("chat:accepted", "threadId attendantId acceptedAt", _THREAD_ROOMS | {K.TENANT}),
    _server("chat:ended", "threadId endedBy endedAt reasonCode", _THREAD_ROOMS | {K.TENANT}),
    # A command sent by HTTP for an SSE / long-poll session, forwarded to the node that
    # serves the session's stream or poll (rtserver.commands).
    _server("session.command", "event user", frozenset({K.SESSION}), delivery=Delivery.EPHEMERAL, internal=True),
    # Diagnostics
    _server("rt.probe", "t s p", frozenset({K.PROBE})),
    # Client -> server (``emit``)
    _client("presence:online", "group", _STAFF),
    _client("presence:away", "group", _STAFF),
    _client("heartbeat", "", _BOTH),
    _client("typing:start", "", _BOTH, frozenset({K.THREAD})),
    _client("typing:stop", "", _BOTH, frozenset({K.THREAD})),
    _client("mark_alert_read", "alertId patientId", _STAFF, required="alertId"),
)

# -- payload field types -------------------------------------------------------------
#: An id: a string or an integer, as backbones write them.
_ID = str | int
#: A point in time: ISO 8601 text or a number (epoch seconds or milliseconds).
_TIME = str | int | float
_NUMBER = int | float
#: The type of each payload field, by name: a name means one thing in every event type.
#: Every field may also be ``null``. A field an allow-list override adds is untyped.
FIELD_TYPES: dict[str, Any] = {
    **dict.fromkeys(
        "scheduleId slotId appointmentId patientTaxId professionalTaxId specialityId forwardingId "
        "fromSpecialityId toSpecialityId jobId id patientId conversationId messageId queueId itemId "
        "threadId userId attendantId senderId takenBy alertId".split(), _ID),
    **dict.fromkeys(
        "status previousStatus reasonCode kind state category type severity symptomCode sender "
        "senderRole text group endedBy date p".split(), str),
    **dict.fromkeys(
        "start end from to changedAt createdAt timestamp sentAt acceptedAt endedAt waitingSince "
        "since".split(), _TIME),
    **dict.fromkeys("count version done total percent position size score oldPriority newPriority "
                    "connections t s".split(), _NUMBER),
    "priority": str | _NUMBER,  # a level name or a score
    **dict.fromkeys("isAudio typing".split(), bool),
    #: A day's slots: objects (``slotId``, ``start``, ``status``...) or start times.
    "slots": list[dict[str, Any] | str],
    "attachments": list[dict[str, Any] | str],
    # Made by rtserver itself (snapshots, digests): never published.
    "users": list[dict[str, Any]],
    "changes": list[dict[str, Any]],
    "days": dict[str, Any],
    "appointments": dict[str, Any],
}


@functools.cache
def _payload_type(fields: frozenset[str]) -> type[msgspec.Struct]:
    """A struct that accepts a payload of these fields, each of its type or null."""
    return msgspec.defstruct(
        "Payload", [(name, FIELD_TYPES.get(name, Any) | None, None) for name in sorted(fields)])


#: Most rooms one published event may name, checked at ingest.
MAX_ROOMS_PER_EVENT = 32


@dataclass(frozen=True, slots=True)
class Catalog:
    """The event types by name; tighten or widen allow-lists with ``with_fields``."""

    types: Mapping[str, EventType] = field(default_factory=dict)

    @classmethod
    def default(cls) -> Catalog:
        return cls({t.name: t for t in DEFAULT_EVENTS})

    def with_fields(self, overrides: Mapping[str, Iterable[str]]) -> Catalog:
        """A catalog whose allow-lists are replaced for the named types (configuration)."""
        types = dict(self.types)
        for name, fields in overrides.items():
            if name not in types:
                raise ValueError(f"catalog override names unknown event type {name!r}")
            types[name] = replace(types[name], fields=frozenset(fields))
        return Catalog(types)

    def coalesce_rules(self) -> dict[str, CoalesceRule]:
        """The coalescing rule of every type that has one, by name."""
        return {name: t.coalesce for name, t in self.types.items() if t.coalesce.kind is not Coalesce.NONE}

    def get(self, name: str) -> EventType:
        try:
            return self.types[name]
        except KeyError:
            raise ReplyError(ReplyCode.UNKNOWN_EVENT, f"unknown event type {name!r}") from None

    def check_fields(self, etype: EventType, data: Mapping[str, object]) -> None:
        """Raise ``ReplyError(BAD_PAYLOAD)`` unless ``data`` has the required fields, no
        other field than the allow-list's, and each of its type (``FIELD_TYPES``)."""
        missing = sorted(k for k in etype.required if not data.get(k))
        if missing:
            raise ReplyError(ReplyCode.BAD_PAYLOAD, f"{etype.name!r} needs the fields {missing}")
        extra = sorted(k for k in data if k not in etype.fields)
        if extra:
            raise ReplyError(
                ReplyCode.BAD_PAYLOAD,
                f"fields {extra} are not allowed in {etype.name!r} "
                f"(allowed: {sorted(etype.fields)})",
            )
        try:
            msgspec.convert(data, _payload_type(etype.fields))
        except msgspec.ValidationError as exc:
            raise ReplyError(ReplyCode.BAD_PAYLOAD, f"invalid payload of {etype.name!r}: {exc}") from None

    def check_emit(self, ns: Namespace, event: str, data: Mapping[str, object], room: str | None,
                   room_allowed: Callable[[str], None]) -> EventType:
        """The check of a client's ``emit``: its type may be emitted in ``ns``, its payload
        fits, and its room (``room_allowed`` raises when the client may not use it) is of
        a kind the type goes to."""
        etype = self.get(event)
        if ns not in etype.emitters:
            raise ReplyError(ReplyCode.FORBIDDEN, f"{event!r} cannot be emitted here")
        self.check_fields(etype, data)
        if etype.rooms:
            if room is None:
                raise ReplyError(ReplyCode.NOT_SUBSCRIBED, f"{event!r} needs a room you have joined")
            room_allowed(room)
            if parse_room(room)[0] not in etype.rooms:
                raise ReplyError(ReplyCode.BAD_ROOM, f"{event!r} goes to {sorted(k.value for k in etype.rooms)} rooms")
        return etype

    def validate_publish(
        self, event: str, tenant: str, rooms: list[str], data: Mapping[str, object]
    ) -> EventType:
        """The ingest check of a server-to-client event; raises ``ReplyError`` naming the fault."""
        etype = self.get(event)
        if etype.emitters:
            raise ReplyError(ReplyCode.UNKNOWN_EVENT, f"{event!r} is a client event")
        if etype.internal:
            raise ReplyError(ReplyCode.UNKNOWN_EVENT, f"{event!r} is made by rtserver itself")
        if not tenant or not is_identifier(tenant):
            raise ReplyError(ReplyCode.BAD_PAYLOAD, "missing or malformed tenant")
        if not rooms:
            raise ReplyError(ReplyCode.BAD_ROOM, "an event needs at least one room")
        if len(rooms) > MAX_ROOMS_PER_EVENT:
            raise ReplyError(ReplyCode.BAD_ROOM, f"more than {MAX_ROOMS_PER_EVENT} rooms")
        for name in rooms:
            kind, ident = parse_room(name)
            if kind not in etype.rooms:
                raise ReplyError(
                    ReplyCode.BAD_ROOM,
                    f"{event!r} may not go to {kind.value!r} rooms "
                    f"(allowed: {sorted(k.value for k in etype.rooms)})",
                )
            if kind is RoomKind.TENANT and ident != tenant:
                raise ReplyError(ReplyCode.BAD_ROOM, f"room {name!r} belongs to another tenant")
        self.check_fields(etype, data)
        return etype
