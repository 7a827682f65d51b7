"""Room names as clients write them (``kind:id``) and their tenant-scoped internal keys.

A client never names a tenant in a room except through ``tenant:{healthUnitTaxId}``;
internally every room is keyed by ``{tenant}/{kind}:{id}``, so two tenants that both
have a ``schedule:42`` never share a room.
"""

from __future__ import annotations

import enum
import re

from protocol.errors import ReplyCode, ReplyError

#: Longest tenant, room id or user id, characters.
MAX_ID_LENGTH = 128
#: Tenants and session ids: letters, digits and ``_ . @ -``.
_IDENT = re.compile(r"[A-Za-z0-9_.@-]{1,%d}" % MAX_ID_LENGTH)
#: Room ids (user ids among them, as ``user:{sub}``): also ``+ | : = ~``, which the
#: subjects of common identity providers hold (``auth0|5f7c…``, ``ana+test@example.org``).
#: Never a separator of lists (``,``) or keys (``/``), a space or a control character.
_ROOM_ID = re.compile(r"[A-Za-z0-9_.@+|:=~-]{1,%d}" % MAX_ID_LENGTH)


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
    """Whether ``value`` may be a tenant or a session id."""
    return _IDENT.fullmatch(value) is not None


def is_room_id(value: str) -> bool:
    """Whether ``value`` may be the id of a room (a user id, a patient id, a group...)."""
    return _ROOM_ID.fullmatch(value) is not None


def parse_room(name: str) -> tuple[RoomKind, str]:
    """Split ``kind:id``; raises ``ReplyError(BAD_ROOM)`` on anything else."""
    kind, sep, ident = name.partition(":")
    if not sep or not is_room_id(ident):
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
