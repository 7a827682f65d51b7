"""Coalescing one room's events during bursts (docs/protocol.md, Coalescing), sans-IO: the caller gives the time.

Per coalescing key (a rule's payload fields; the digest of a schedule merges both slot
event types under one key), the first event after a quiet window is delivered at once, so
an isolated change is never delayed. Events of that key arriving within the window after
a delivery are held and merged, and leave as one frame when the window ends:

* latest-wins (``admin.job.progress``, ``priority_update``, ``thread:typing``): the newest
  held event, with ``merged`` = how many held events it stands for;
* digest (``schedule.slots.generated`` / ``.changed``): one ``schedule.digest`` frame whose
  ``changes`` keep the newest change per (event, date, slot), with ``merged`` = how many
  events it merged and the id and cursor of the last one.

A type's window is its rule's ``interval_ms`` when set (``priority_update``: at most one
per patient per second), else the room's default window.

Holding a durable event must not let a client's cursor move past it: a client that
disconnects after a later event would resume after the held one and never get it.
``HeldOffsets`` (one per shard per node) keeps the offsets of held durable events; while
any is held, a durable frame newer than the oldest carries a *safe* cursor just before it
instead of its own. A resume from there repeats a few events, which clients drop by id.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from protocol.catalog import Coalesce, CoalesceRule
from protocol.cursors import Cursor, Offset
from protocol.envelope import StoredEvent
from protocol.frames import Evt

#: The frame a schedule's merged slot events become.
DIGEST_EVENT = "schedule.digest"
#: Largest sequence number of a stream offset (Redis stream ids are two 64-bit numbers).
_MAX_SEQ = 2**64 - 1


def offset_before(offset: Offset) -> Offset:
    """The greatest offset smaller than ``offset``: reading after it starts at ``offset``."""
    if offset.seq:
        return Offset(offset.ms, offset.seq - 1)
    return Offset(offset.ms - 1, _MAX_SEQ)


class HeldOffsets:
    """Offsets of the durable events held back in one shard's rooms on this node (merging
    in a coalescer): a frame's cursor must not pass them."""

    __slots__ = ("_heap", "_counts", "_safe")

    def __init__(self) -> None:
        self._heap: list[Offset] = []
        self._counts: Counter[Offset] = Counter()
        self._safe: tuple[Offset, str] | None = None  # (oldest held, its safe cursor text)

    def add(self, offset: Offset) -> None:
        if not self._counts[offset]:
            heapq.heappush(self._heap, offset)
        self._counts[offset] += 1

    def remove(self, offset: Offset) -> None:
        self._counts[offset] -= 1
        if self._counts[offset] <= 0:
            del self._counts[offset]
            heap = self._heap
            while heap and heap[0] not in self._counts:
                heapq.heappop(heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def cursor_for(self, event: StoredEvent) -> str | None:
        """The cursor ``event``'s frame may carry: its own, or the safe one when a held
        event precedes it."""
        heap = self._heap
        if not heap or event.offset is None or event.offset < heap[0]:
            return event.cursor
        oldest = heap[0]
        if self._safe is None or self._safe[0] != oldest:
            shard, epoch, _ = Cursor.parse(event.cursor)
            self._safe = (oldest, Cursor(shard, epoch, offset_before(oldest)).encode())
        return self._safe[1]


@dataclass(slots=True)
class Held:
    """The events of one key held since its last delivery."""

    digest: bool
    first: StoredEvent
    last: StoredEvent
    due: float
    window: float
    count: int = 1
    #: digest: newest change per (event, date, slot), in first-seen order.
    changes: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.digest:
            self._add_change(self.first)

    def merge(self, event: StoredEvent) -> None:
        self.last = event
        self.count += 1
        if self.digest:
            self._add_change(event)

    def _add_change(self, event: StoredEvent) -> None:
        env = event.envelope
        key = (env.event, env.data.get("date"), env.data.get("slotId"))
        self.changes.pop(key, None)
        self.changes[key] = {"event": env.event, "data": env.data}

    def frame(self, room: str, cursor: str | None) -> Evt:
        """The frame standing for the held events (the event itself when only one)."""
        last = self.last
        if self.count == 1 or not self.digest:
            return Evt(event=last.envelope.event, room=room, id=last.id, ts=last.ts,
                       data=last.envelope.data, cursor=cursor, merged=self.count if self.count > 1 else None)
        data = {"scheduleId": last.envelope.data.get("scheduleId"), "changes": list(self.changes.values())}
        return Evt(event=DIGEST_EVENT, room=room, id=last.id, ts=last.ts, data=data,
                   cursor=cursor, merged=self.count)


class Coalescer:
    """One room's coalescing state: when each key was last delivered, and what is held."""

    __slots__ = ("_window_s", "_delivered", "held")

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._delivered: dict[tuple[Any, ...], float] = {}  # key -> end of its quiet window
        self.held: dict[tuple[Any, ...], Held] = {}

    @staticmethod
    def _key(event: StoredEvent, rule: CoalesceRule) -> tuple[Any, ...]:
        env = event.envelope
        kind = DIGEST_EVENT if rule.kind is Coalesce.DIGEST else env.event
        return (kind, *(env.data.get(f) for f in rule.key))

    def holds(self, event: StoredEvent, rule: CoalesceRule) -> bool:
        """Whether ``event`` is merged into a frame not sent yet (it will reach every member)."""
        held = self.held.get(self._key(event, rule))
        return held is not None and (event.offset is None or held.first.offset <= event.offset <= held.last.offset)

    def offer(self, event: StoredEvent, rule: CoalesceRule, now: float) -> Held | None:
        """None: deliver ``event`` now. Otherwise the ``Held`` it went into (one it started
        when ``held.first is event``)."""
        digest = rule.kind is Coalesce.DIGEST
        key = self._key(event, rule)
        held = self.held.get(key)
        if held is not None:
            held.merge(event)
            return held
        window = rule.interval_ms / 1000 if rule.interval_ms else self._window_s
        quiet_at = self._delivered.get(key)
        if quiet_at is None or quiet_at <= now:
            if len(self._delivered) >= 1024:
                self._forget_quiet(now)
            self._delivered[key] = now + window
            return None
        self.held[key] = held = Held(digest, event, event, quiet_at, window)
        return held

    def _forget_quiet(self, now: float) -> None:
        for key in [k for k, quiet_at in self._delivered.items() if quiet_at <= now and k not in self.held]:
            del self._delivered[key]

    @property
    def next_due(self) -> float | None:
        return min((h.due for h in self.held.values()), default=None)

    def pop_due(self, now: float) -> list[Held]:
        """The held entries whose window ended, in the order they were first held; each
        delivery starts a new window for its key."""
        due = [(key, held) for key, held in self.held.items() if held.due <= now]
        for key, held in due:
            del self.held[key]
            self._delivered[key] = now + held.window
        return [held for _, held in due]
