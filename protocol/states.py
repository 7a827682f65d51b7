"""Explicit lifecycle states, sans-IO: each a state enum with the transitions it allows
(as h11 and wsproto keep theirs). Moving along a transition that is not allowed raises
``IllegalTransition``: a bug in the caller, never a client's doing."""

from __future__ import annotations

import enum
from collections.abc import Mapping


class IllegalTransition(RuntimeError):
    """A state change its state machine does not allow."""


def advance[S: enum.Enum](transitions: Mapping[S, frozenset[S]], current: S, new: S) -> S:
    """``new``, when ``transitions`` allows going there from ``current``; else raise."""
    if new not in transitions[current]:
        raise IllegalTransition(f"{type(current).__name__}: {current.name} -> {new.name} is not allowed")
    return new


class ConnectionState(enum.Enum):
    """Where a client connection is in its life (``actors.connection``)."""

    #: Accepted and admitted; not started yet.
    OPENING = enum.auto()
    #: Joining its initial rooms; the answer (``hello``) not sent yet.
    JOINING = enum.auto()
    #: Answered; serving the transport's loop.
    OPEN = enum.auto()
    #: Answered, its client quiet for now: no task, waiting in the parking (``actors.parking``).
    PARKED = enum.auto()
    #: Leaving its rooms, presence and typing; telling the client why.
    CLOSING = enum.auto()
    #: Its close written (or given up on); gone from the node.
    CLOSED = enum.auto()


CONNECTION_TRANSITIONS: Mapping[ConnectionState, frozenset[ConnectionState]] = {
    ConnectionState.OPENING: frozenset({ConnectionState.JOINING, ConnectionState.CLOSING}),
    ConnectionState.JOINING: frozenset({ConnectionState.OPEN, ConnectionState.CLOSING}),
    ConnectionState.OPEN: frozenset({ConnectionState.PARKED, ConnectionState.CLOSING}),
    ConnectionState.PARKED: frozenset({ConnectionState.OPEN}),
    ConnectionState.CLOSING: frozenset({ConnectionState.CLOSED}),
    ConnectionState.CLOSED: frozenset(),
}


class MemberState(enum.Enum):
    """Where a member of a room is (``actors.room``)."""

    #: Reading its history: the room buffers its live events.
    RECOVERING = enum.auto()
    #: History read up to an offset: the room skips its live events up to there, since an
    #: event can reach the history before the live feed brings it.
    CATCHING_UP = enum.auto()
    #: Gets every event as the room fans it out.
    LIVE = enum.auto()
    #: Left the room (or started over): nothing more is delivered to it.
    GONE = enum.auto()


MEMBER_TRANSITIONS: Mapping[MemberState, frozenset[MemberState]] = {
    MemberState.RECOVERING: frozenset({MemberState.CATCHING_UP, MemberState.LIVE, MemberState.GONE}),
    MemberState.CATCHING_UP: frozenset({MemberState.LIVE, MemberState.GONE}),
    MemberState.LIVE: frozenset({MemberState.GONE}),
    MemberState.GONE: frozenset(),
}
