"""This node's presence, as pure state that takes ``now`` (``actors/presence.py`` does the
store and bus I/O around it).

Per presence id (a WebSocket connection, or an SSE / long-poll session whose streams and
polls come and go): its keys (tenant, group, user), the state it asked for
(``presence:online`` / ``presence:away``) and its last heartbeat. A connection with no
heartbeat for ``away_after_s`` counts as away until its next one. A closed one is kept, in
the state it had, for ``grace_s``; connected again within it (the next poll of a session,
a reload) it is taken back as it was. Per key: the view this node last put in the store,
so that only views that changed are put again.

Every method that changes something returns the keys whose view may have changed;
``changed_views`` says which did.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from protocol.presence import PresenceKey, PresenceState, View, better


@dataclass(slots=True)
class _Connection:
    keys: list[PresenceKey]
    asked: PresenceState  # ONLINE unless the client switched to away
    last_heartbeat: float
    #: Open streams holding it (a session may briefly have two while reopening).
    opened: int = 1
    #: Once closed: its state then, held until ``closed_until`` (the grace period).
    closed: PresenceState | None = None
    closed_until: float = 0.0


@dataclass(order=True, slots=True)
class _Timer:
    at: float
    kind: str = field(compare=False)  # "away" or "grace"
    connection_id: Hashable = field(compare=False)


class PresenceTable:
    def __init__(self, *, away_after_s: float, grace_s: float) -> None:
        self._away_after_s = away_after_s
        self._grace_s = grace_s
        self._connections: dict[Hashable, _Connection] = {}
        self._by_key: dict[PresenceKey, set[Hashable]] = {}
        self._views: dict[PresenceKey, View] = {}
        self._timers: list[_Timer] = []

    def __len__(self) -> int:
        """Presence ids tracked (closed ones in their grace period included)."""
        return len(self._connections)

    def connected(self, connection_id: Hashable, tenant: str, user: str, groups: Iterable[str],
                  asked: PresenceState | None, now: float) -> set[PresenceKey]:
        """Track a connection; a session's next stream or poll takes it back as it was
        (``asked``, when given, is the state its client asks for, else online or as it was)."""
        known = self._connections.get(connection_id)
        if known is not None:
            known.opened = 1 if known.closed is not None else known.opened + 1
            known.closed, known.last_heartbeat = None, now
            known.asked = asked or known.asked
            self._arm("away", connection_id, now + self._away_after_s)
            return set(known.keys)
        keys = [PresenceKey(tenant, group, user) for group in groups]
        self._connections[connection_id] = _Connection(keys, asked or PresenceState.ONLINE, now)
        for key in keys:
            self._by_key.setdefault(key, set()).add(connection_id)
        self._arm("away", connection_id, now + self._away_after_s)
        return set(keys)

    def heartbeat(self, connection_id: Hashable, now: float) -> set[PresenceKey]:
        return self._alive(connection_id, None, now)

    def switch(self, connection_id: Hashable, state: PresenceState, now: float) -> set[PresenceKey]:
        """The client asks for ``state`` (a switch is a sign of life too)."""
        return self._alive(connection_id, state, now)

    def disconnected(self, connection_id: Hashable, now: float) -> set[PresenceKey]:
        """One stream of the connection closed; with the last one, it is held as it was for
        the grace period (a reload or a reconnect within it, here or on another node,
        changes nothing anyone sees)."""
        connection = self._open(connection_id)
        if connection is None:
            return set()
        connection.opened -= 1
        if connection.opened:
            return set()
        connection.closed = self._state(connection, now)
        connection.closed_until = now + self._grace_s
        self._arm("grace", connection_id, connection.closed_until)
        return set(connection.keys)

    def expire(self, now: float) -> set[PresenceKey]:
        """Fire the timers due by ``now`` (stale ones change nothing); the keys to recompute."""
        keys: set[PresenceKey] = set()
        while self._timers and self._timers[0].at <= now:
            timer = heapq.heappop(self._timers)
            connection = self._connections.get(timer.connection_id)
            if connection is None:
                continue
            keys.update(connection.keys)
            if timer.kind == "grace":
                if connection.closed is None or connection.closed_until > now:
                    continue  # taken back by the session's next stream or poll
                del self._connections[timer.connection_id]
                for key in connection.keys:
                    ids = self._by_key[key]
                    ids.discard(timer.connection_id)
                    if not ids:
                        del self._by_key[key]
        return keys

    def next_due(self) -> float | None:
        """When the next timer fires (None: none is armed)."""
        return self._timers[0].at if self._timers else None

    def changed_views(self, keys: Iterable[PresenceKey], now: float) -> list[View]:
        """The views of ``keys`` (in key order) that differ from what was last put."""
        return [view for key in sorted(keys) if (view := self._view(key, now)) != self._views.get(key)]

    def held_keys(self) -> set[PresenceKey]:
        """Every key this node holds or last put a view of (a renewal puts them all again)."""
        return self._views.keys() | self._by_key.keys()

    def holds(self, key: PresenceKey) -> bool:
        """Whether ``key`` is one of ``held_keys``."""
        return key in self._views or key in self._by_key

    def views(self, keys: Iterable[PresenceKey], now: float) -> list[View]:
        """The views of ``keys`` (in key order), changed or not."""
        return [self._view(key, now) for key in sorted(keys)]

    def put(self, views: Iterable[View]) -> None:
        """The store took ``views``: they are what this node last put."""
        for view in views:
            if view.state is PresenceState.OFFLINE:
                self._views.pop(view.key, None)
            else:
                self._views[view.key] = view

    def _open(self, connection_id: Hashable) -> _Connection | None:
        connection = self._connections.get(connection_id)
        return connection if connection is not None and connection.closed is None else None

    def _alive(self, connection_id: Hashable, asked: PresenceState | None, now: float) -> set[PresenceKey]:
        connection = self._open(connection_id)
        if connection is None:
            return set()
        if asked is not None:
            connection.asked = asked
        connection.last_heartbeat = now
        self._arm("away", connection_id, now + self._away_after_s)
        return set(connection.keys)

    def _arm(self, kind: str, connection_id: Hashable, at: float) -> None:
        heapq.heappush(self._timers, _Timer(at, kind, connection_id))

    def _state(self, connection: _Connection, now: float) -> PresenceState:
        if connection.closed is not None:
            return connection.closed
        fresh = now - connection.last_heartbeat < self._away_after_s
        return connection.asked if fresh else PresenceState.AWAY

    def _view(self, key: PresenceKey, now: float) -> View:
        """This node's view of ``key`` now (closed connections in their grace count too).
        One loop, no generator: a renewal computes one per user (bench/RESULTS.md §33)."""
        state, opened = PresenceState.OFFLINE, 0
        for connection_id in self._by_key.get(key, ()):
            connection = self._connections[connection_id]
            state = better(state, self._state(connection, now))
            opened += connection.closed is None
        return View(key, state, opened)
