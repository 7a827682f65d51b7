"""Where presence is kept: the store interface, and the in-memory store of a single node.

Each node (a *holder*) puts its view of the users it serves; the store combines the views
of all holders whose lease has not run out (``protocol.presence``) and answers which
users' combined state changed, so that the change is announced once for the whole
cluster. ``sweep`` recombines the users whose holder stopped renewing (a crashed node).
The Redis store (``rtserver.backends.presence.redis``) keeps the same contract across nodes; one
conformance suite proves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import trio

from protocol.presence import PresenceEntry, PresenceKey, PresenceState, View, best


Change = tuple[PresenceKey, PresenceEntry]


class PresenceStore(Protocol):
    async def put(self, views: list[View], holder: str, now_ms: int, lease_ms: int) -> list[Change]:
        """Record ``holder``'s views (an ``offline`` view withdraws it) with a lease until
        ``now_ms + lease_ms``; the users whose combined state changed, as it is now."""
        ...

    async def sweep(self, now_ms: int) -> list[Change]:
        """Drop the views whose lease ran out; the users whose combined state changed."""
        ...

    async def snapshot(self, tenant: str, group: str) -> list[PresenceEntry]:
        """The users of a group who are not offline, by user id."""
        ...


#: Users a sweep of the memory store looks at between two yields to the node's other tasks.
SWEEP_CHUNK = 256


@dataclass(slots=True)
class _Held:
    state: PresenceState
    connections: int
    lease_until: int


def _lapsed(holders: dict[str, _Held], now_ms: int) -> bool:
    """Whether a lease of ``holders`` ran out (a loop: a renewal asks it once per user)."""
    for held in holders.values():
        if held.lease_until < now_ms:
            return True
    return False


class MemoryPresence:
    """The store of a node on the memory bus (every holder lives in this process)."""

    def __init__(self) -> None:
        self._held: dict[PresenceKey, dict[str, _Held]] = {}
        self._entries: dict[tuple[str, str], dict[str, PresenceEntry]] = {}

    async def put(self, views: list[View], holder: str, now_ms: int, lease_ms: int) -> list[Change]:
        changes = []
        for view in views:
            holders = self._held.setdefault(view.key, {})
            held = holders.get(holder)
            if (held is not None and held.state is view.state and held.connections == view.connections
                    and not _lapsed(holders, now_ms)):
                held.lease_until = now_ms + lease_ms  # a renewal: nothing to recombine
                continue
            if view.state is PresenceState.OFFLINE:
                holders.pop(holder, None)
            else:
                holders[holder] = _Held(view.state, view.connections, now_ms + lease_ms)
            changed = self._combine(view.key, now_ms)
            if changed is not None:
                changes.append((view.key, changed))
        return changes

    async def sweep(self, now_ms: int) -> list[Change]:
        """Every user is looked at: ``SWEEP_CHUNK`` at a time, the node's other tasks
        running in between (15,000 users took ~20-30 ms in one step, which a big room's
        broadcast then waited for; bench/RESULTS.md §30)."""
        changes = []
        for i, key in enumerate(list(self._held)):
            if i and not i % SWEEP_CHUNK:
                await trio.lowlevel.checkpoint()
            holders = self._held.get(key, {})  # a put in between may have withdrawn the last holder
            if _lapsed(holders, now_ms):
                changed = self._combine(key, now_ms)
                if changed is not None:
                    changes.append((key, changed))
        return changes

    async def snapshot(self, tenant: str, group: str) -> list[PresenceEntry]:
        entries = self._entries.get((tenant, group), {})
        return [entries[user] for user in sorted(entries)]

    def _combine(self, key: PresenceKey, now_ms: int) -> PresenceEntry | None:
        """Recombine ``key`` from its live holders; the new entry when its state changed."""
        holders = self._held.get(key, {})
        for name in [name for name, held in holders.items() if held.lease_until < now_ms]:
            del holders[name]
        if not holders:
            self._held.pop(key, None)
        state = best(held.state for held in holders.values())
        group = self._entries.setdefault((key.tenant, key.group), {})
        old = group.get(key.user)
        old_state = old.state if old is not None else PresenceState.OFFLINE
        since = old.since if old is not None and old_state is state else now_ms
        entry = PresenceEntry(key.user, state, since, sum(held.connections for held in holders.values()))
        if state is PresenceState.OFFLINE:
            group.pop(key.user, None)
        else:
            group[key.user] = entry
        return entry if state is not old_state else None
