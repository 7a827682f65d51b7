"""Presence (docs/protocol.md, Presence), the parts every implementation shares: states, how the views of
several holders combine, and the frames announcing a user's state.

A *holder* is whoever keeps a user present: a node, for the connections of that user it
serves. Each holder records its view of each (tenant, group, user): ``online`` when any of
its connections is online, ``away`` when all are away, and it keeps that view through a
grace period after the last connection closes. The user's state is the best view of all
live holders (online > away > offline); a holder whose lease ran out (a crashed node) no
longer counts.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple


class PresenceState(enum.StrEnum):
    OFFLINE = "offline"
    AWAY = "away"
    ONLINE = "online"


_RANK = {PresenceState.OFFLINE: 0, PresenceState.AWAY: 1, PresenceState.ONLINE: 2}


def best(states: Iterable[PresenceState]) -> PresenceState:
    """The combined state of several views (offline when there is none)."""
    return max(states, key=_RANK.__getitem__, default=PresenceState.OFFLINE)


def better(state: PresenceState, other: PresenceState) -> PresenceState:
    """The combined state of two views."""
    return other if _RANK[other] > _RANK[state] else state


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    """A user's combined presence in a group: since when (ms) in that state, and how many
    connections hold it (0 during a grace period)."""

    user: str
    state: PresenceState
    since: int
    connections: int

    def data(self, group: str) -> dict[str, object]:
        """The payload of ``attendant:<state>`` and of a snapshot's users."""
        return {"userId": self.user, "group": group, "state": self.state.value, "since": self.since,
                "connections": self.connections}

    @property
    def event(self) -> str:
        """The event announcing this entry: ``attendant:online|away|offline``."""
        return f"attendant:{self.state.value}"


class PresenceKey(NamedTuple):
    """A user in a tenant's presence group. A tuple: hashed and ordered in C, as a
    renewal hashes and sorts thousands of them (bench/RESULTS.md §30)."""

    tenant: str
    group: str
    user: str


class View(NamedTuple):
    """A holder's view of one user: its state there, and how many connections hold it. A
    tuple too: a renewal makes one per user, in half a frozen dataclass's time."""

    key: PresenceKey
    state: PresenceState
    connections: int
