"""Who is typing in which thread: a pure table that takes ``now`` (``actors/typing.py``
does the I/O around it).

An indicator stops by itself ``timeout_s`` after its last start unless another start
refreshes it; a stop, or the session going away, stops it at once. Changes are collected
per burst (what the actor took from its mailbox together); ``announcements`` gives each
changed key's final state once — a start and a stop within one burst announce nothing —
and starts the next burst.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class TypingKey:
    tenant: str
    thread: str
    user: str
    session: str


class TypingTable:
    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._until: dict[TypingKey, float] = {}  # who is typing, until when
        self._timers: list[tuple[float, TypingKey]] = []
        self._shown: set[TypingKey] = set()  # keys whose last announcement said typing
        self._changed: dict[TypingKey, bool] = {}  # this burst's changes

    def start(self, key: TypingKey, now: float) -> None:
        """``key`` types (again): it stops by itself ``timeout_s`` from ``now``."""
        self._changed[key] = True
        until = self._until[key] = now + self._timeout_s
        heapq.heappush(self._timers, (until, key))

    def stop(self, key: TypingKey) -> None:
        if self._until.pop(key, None) is not None:
            self._changed[key] = False

    def gone(self, session: str) -> None:
        """The session closed: its indicators stop."""
        for key in [k for k in self._until if k.session == session]:
            self.stop(key)

    def expire(self, now: float) -> None:
        """Stop the indicators whose time ran out by ``now`` (not refreshed nor stopped since)."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            until, key = heapq.heappop(timers)
            if self._until.get(key) == until:
                self.stop(key)

    def next_due(self) -> float | None:
        """When the next indicator may stop by itself (None: nobody is typing)."""
        return self._timers[0][0] if self._timers else None

    def announcements(self) -> list[tuple[TypingKey, bool]]:
        """Each key changed in this burst with its final state, in key order, when it differs
        from what was last announced; the next burst starts."""
        due = []
        for key, typing in sorted(self._changed.items()):
            if typing or key in self._shown:  # a start and a stop within one burst: nothing
                due.append((key, typing))
            if typing:
                self._shown.add(key)
            else:
                self._shown.discard(key)
        self._changed.clear()
        return due
