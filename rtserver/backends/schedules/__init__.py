"""Where schedules' last-value records are kept (docs/protocol.md, Schedules): the interface and the memory store.

A store is fed every durable event once for the whole cluster, in batches of one shard
(``read``), and ``commit`` applies a batch's updates (``protocol.schedules``) and marks the
batch done, atomically. ``snapshot`` reads a record with the cursor up to which every
event is reflected in it. The Redis store (``rtserver.backends.schedules.redis``) shares a Redis
Streams consumer group between nodes; one conformance suite proves both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

import trio

from protocol.cursors import Cursor, Offset, shard_of
from protocol.envelope import StoredEvent
from protocol.schedules import Item, Snapshot, Update
from rtserver.backends.bus.groups import Batch
from rtserver.backends.bus.memory import MemoryBus


class ScheduleStore(Protocol):
    def opened(self) -> contextlib.AbstractContextManager[None]:
        """Start receiving entries (before the projector reports started)."""
        ...

    async def read(self) -> list[Batch]:
        """The next batches of entries to project; waits until there are some."""
        ...

    async def commit(self, batch: Batch, updates: list[Update]) -> None:
        """Apply ``updates`` (each item only over an older one) and settle the batch."""
        ...

    async def snapshot(self, tenant: str, room: str) -> Snapshot:
        """The record of ``room`` (``schedule:{id}``) of ``tenant``."""
        ...


class MemorySchedules:
    """Records of a single node, fed from the memory bus's live feed in append order."""

    def __init__(self, bus: MemoryBus, mailbox: int) -> None:
        self._bus = bus
        self._mailbox = mailbox
        self._records: dict[tuple[str, str], dict[str, Item]] = {}
        #: Per shard: every event up to this offset is reflected.
        self._applied = [Offset(0, 0)] * bus.shards
        self._feed: trio.MemoryReceiveChannel[StoredEvent] | None = None

    @contextlib.contextmanager
    def opened(self) -> Iterator[None]:
        with self._bus.subscribe(self._mailbox) as feed:
            self._feed = feed
            yield

    async def read(self) -> list[Batch]:
        events = [await self._feed.receive()]
        while True:
            try:
                events.append(self._feed.receive_nowait())
            except trio.WouldBlock:
                break
        batches: dict[int, Batch] = {}
        for event in events:
            if event.offset is not None:  # ephemeral events change no record
                shard = shard_of(event.envelope.tenant, self._bus.shards)
                batches.setdefault(shard, Batch(shard, [])).events.append(event)
        return list(batches.values())

    async def commit(self, batch: Batch, updates: list[Update]) -> None:
        for update in updates:
            items = self._records.setdefault((update.tenant, update.schedule), {})
            current = items.get(update.field)
            if current is None or current.at < update.item.at:
                items[update.field] = update.item
        if batch.events:
            self._applied[batch.shard] = max(self._applied[batch.shard], batch.events[-1].offset)
        await trio.lowlevel.checkpoint()

    async def snapshot(self, tenant: str, room: str) -> Snapshot:
        await trio.lowlevel.checkpoint()
        shard = shard_of(tenant, self._bus.shards)
        return Snapshot(room, dict(self._records.get((tenant, room), {})),
                        Cursor(shard, self._bus.epoch, self._applied[shard]))
