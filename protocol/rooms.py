"""Room names as clients write them (``kind:id``) and their tenant-scoped internal keys.

A client never names a tenant in a room except through ``tenant:{healthUnitTaxId}``;
internally every room is keyed by ``{tenant}/{kind}:{id}``, so two tenants that both
have a ``schedule:42`` never share a room.
"""

from __future__ import annotations

import enum
import re

from protocol.errors import ReplyCode, ReplyError

#: Tenants, room ids and user ids: printable, URL-safe, bounded.
_IDENT = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")


class RoomKind(enum.StrEnum):
    TENANT = "tenant"
    SPECIALITY = "speciality"
    SCHEDULE = "schedule"
    PROFESSIONAL = "professional"
    PATIENT = "patient"
    USER = "user"
    THREAD = "thread"
    PRESENCE = "presence"
    PROBE = "probe"
    #: Internal: the commands sent over HTTP for one SSE / long-poll session (never
    #: subscribed to by clients; see ``rtserver.commands``).
    SESSION = "session"


def is_identifier(value: str) -> bool:
    """Whether ``value`` may be a tenant, a room id or a user id."""
    return bool(_IDENT.match(value))


def parse_room(name: str) -> tuple[RoomKind, str]:
    """Split ``kind:id``; raises ``ReplyError(BAD_ROOM)`` on anything else."""
    kind, sep, ident = name.partition(":")
    if not sep or not is_identifier(ident):
        raise ReplyError(ReplyCode.BAD_ROOM, f"room {name!r} is not 'kind:id'")
    try:
        return RoomKind(kind), ident
    except ValueError:
        raise ReplyError(ReplyCode.BAD_ROOM, f"unknown room kind {kind!r}") from None


def room_key(tenant: str, name: str) -> str:
    """The internal, tenant-scoped key of a room that a client of ``tenant`` names ``name``."""
    return f"{tenant}/{name}"


def room_name(key: str) -> str:
    """The client-facing name of an internal room key."""
    return key.partition("/")[2]
