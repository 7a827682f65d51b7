"""The embedded, in-memory bus: one process, no Redis.

Per shard: a list of stored events (bounded by ``retention``; trimming remembers the
newest offset it dropped, so an older cursor answers ``recovered=False``), an epoch drawn
at start (a restarted process is a new stream), and a bounded window of seen ids.
Appending waits when a live subscriber's channel is full: publishers slow down, nothing
is dropped; it returns once the subscribers that were waiting took the event. The bus
also holds its consumer groups' state (``MemoryGroup``), as a Redis stream does.
"""

from __future__ import annotations

import bisect
import collections
import secrets
import time
from dataclasses import dataclass, field

import trio

from protocol.cursors import Cursor, Offset, shard_of
from protocol.envelope import Envelope, Inbound, StoredEvent
from rtserver.backends.bus import AppendResult, History, broadcast, ephemeral_event, live_feed
from rtserver.backends.bus.groups import Batch, ConsumerGroup
from rtserver.backends.config import BusConfig

_ZERO = Offset(0, 0)


class _Shard:
    __slots__ = ("events", "start", "trimmed_upto", "last", "ids", "id_order", "inbound")

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self.start = 0  # index of the oldest retained event
        self.trimmed_upto = _ZERO  # newest offset dropped by retention
        self.last = _ZERO
        self.ids: dict[str, StoredEvent] = {}
        self.id_order: collections.deque[str] = collections.deque()
        #: Client commands for a backbone (kept, bounded: one process has no backbone).
        self.inbound: collections.deque[tuple[str, Inbound]] = collections.deque()


class MemoryBus:
    spans_nodes = False

    def __init__(self, config: BusConfig, *, epoch: str | None = None) -> None:
        self.shards = config.shards
        self._config = config
        self.epoch = epoch or secrets.token_hex(4)
        self._shards = [_Shard() for _ in range(config.shards)]
        self._subscribers: list[trio.MemorySendChannel[StoredEvent]] = []
        #: Consumer groups by name: per shard, what was given out and is pending.
        self.groups: dict[str, list[_GroupShard]] = {}

    def ready(self) -> bool:
        return True

    def serves(self, tenant: str) -> bool:
        return True

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Nothing to connect: appends feed the subscribers directly."""
        task_status.started()
        await trio.sleep_forever()

    def _next_offset(self, shard: _Shard) -> Offset:
        now = int(time.time() * 1000)
        if now > shard.last.ms:
            return Offset(now, 0)
        return Offset(shard.last.ms, shard.last.seq + 1)

    def _remember_id(self, shard: _Shard, event: StoredEvent) -> None:
        shard.ids[event.id] = event
        shard.id_order.append(event.id)
        if len(shard.id_order) > self._config.dedupe_window:
            shard.ids.pop(shard.id_order.popleft(), None)

    def _trim(self, shard: _Shard) -> None:
        excess = len(shard.events) - shard.start - self._config.retention
        if excess > 0:
            shard.start += excess
            shard.trimmed_upto = shard.events[shard.start - 1].offset
            if shard.start > self._config.retention:
                del shard.events[: shard.start]
                shard.start = 0

    async def append(self, envelope: Envelope) -> AppendResult:
        index = shard_of(envelope.tenant, self.shards)
        shard = self._shards[index]
        if envelope.id is not None and envelope.id in shard.ids:
            await trio.lowlevel.checkpoint()
            return AppendResult(shard.ids[envelope.id], duplicate=True)
        offset = self._next_offset(shard)
        event = StoredEvent(
            envelope=envelope,
            id=envelope.id or str(offset),
            ts=envelope.ts or offset.ms,
            offset=offset,
            cursor=Cursor(index, self.epoch, offset).encode(),
        )
        shard.last = offset
        shard.events.append(event)
        self._remember_id(shard, event)
        self._trim(shard)
        await self._hand_on(event)
        return AppendResult(event, duplicate=False)

    async def publish_ephemeral(self, *envelopes: Envelope) -> list[StoredEvent]:
        events = [ephemeral_event(envelope) for envelope in envelopes]
        for event in events:
            await self._hand_on(event)
        return events

    async def _hand_on(self, event: StoredEvent) -> None:
        """Hand ``event`` to the live subscribers, and return once those that were waiting
        for one took it: Trio runs the tasks made runnable together in either order, and
        a second checkpoint puts the appender after them. So the registry routes the event
        (a big room's first sockets are written) before the publisher is answered, where
        half the time the answer went first (bench/RESULTS.md §27)."""
        await broadcast(self._subscribers, event)
        await trio.lowlevel.checkpoint()

    async def hand_in(self, command: Inbound) -> str:
        await trio.lowlevel.checkpoint()
        shard = self._shards[shard_of(command.tenant, self.shards)]
        entry_id = str(self._next_offset(shard))
        shard.inbound.append((entry_id, command))
        if len(shard.inbound) > self._config.retention:
            shard.inbound.popleft()
        return entry_id

    def inbound(self, shard: int) -> list[tuple[str, Inbound]]:
        """The commands handed in on ``shard``, oldest first."""
        return list(self._shards[shard].inbound)

    async def read_since(self, cursor: Cursor, limit: int) -> History:
        await trio.lowlevel.checkpoint()
        shard = self._shards[cursor.shard % self.shards]
        head = Cursor(cursor.shard, self.epoch, shard.last)
        if (
            cursor.epoch != self.epoch
            or cursor.shard >= self.shards
            or cursor.offset < shard.trimmed_upto
            or cursor.offset > shard.last
        ):
            return History([], recovered=False, cursor=head, more=False)
        events = shard.events
        lo = bisect.bisect_right(events, cursor.offset, lo=shard.start, key=lambda e: e.offset)
        page = events[lo : lo + limit]
        more = lo + limit < len(events)
        last = Cursor(cursor.shard, self.epoch, page[-1].offset) if page else cursor
        return History(page, recovered=True, cursor=last, more=more)

    async def head(self, shard: int) -> Cursor:
        await trio.lowlevel.checkpoint()
        return Cursor(shard, self.epoch, self._shards[shard].last)

    def subscribe(self, capacity: int):
        return live_feed(self._subscribers, capacity)

    def retained_after(self, shard: int, offset: Offset, limit: int) -> list[StoredEvent]:
        """At most ``limit`` retained events of ``shard`` after ``offset`` (from the oldest
        retained one when ``offset`` was trimmed away)."""
        state = self._shards[shard]
        lo = bisect.bisect_right(state.events, offset, lo=state.start, key=lambda e: e.offset)
        return state.events[lo : lo + limit]

    def last(self, shard: int) -> Offset:
        return self._shards[shard].last


@dataclass(slots=True)
class _Pending:
    consumer: str
    since: float  # trio time it was given (or touched)
    event: StoredEvent


@dataclass(slots=True)
class _GroupShard:
    delivered: Offset  # the newest entry given out
    pending: dict[str, _Pending] = field(default_factory=dict)  # entry id -> whose, since when


class MemoryGroup(ConsumerGroup):
    """A consumer group of the memory bus (the contract: ``rtserver.backends.bus.groups``)."""

    def __init__(self, bus: MemoryBus, group: str, consumer: str, **settings) -> None:
        super().__init__(group, consumer, **settings)
        self._bus = bus

    @property
    def _shards(self) -> list[_GroupShard]:
        """The group's state, made at the first read of any of its consumers (as on Redis)."""
        bus = self._bus
        if self.group not in bus.groups:
            bus.groups[self.group] = [_GroupShard(bus.last(shard) if self._start == "$" else _ZERO)
                                      for shard in range(bus.shards)]
        return bus.groups[self.group]

    async def read(self) -> list[Batch]:
        while True:
            now = trio.current_time()
            batches = self._claim(now) if now >= self._claim_at else []
            for shard, state in enumerate(self._shards):
                events = self._bus.retained_after(shard, state.delivered, self._batch)
                if events:
                    state.delivered = events[-1].offset
                    for event in events:
                        state.pending[str(event.offset)] = _Pending(self.consumer, now, event)
                    batches.append(Batch(shard, self._handled(events), [str(event.offset) for event in events]))
            if batches:
                await trio.lowlevel.checkpoint()
                return batches
            await trio.sleep(self._poll_s)

    def _claim(self, now: float) -> list[Batch]:
        self._claim_at = now + self.claim_idle_s
        batches = []
        for shard, state in enumerate(self._shards):
            idle = [(entry_id, pending) for entry_id, pending in state.pending.items()
                    if now - pending.since >= self.claim_idle_s][:self._batch]
            for _, pending in idle:
                pending.consumer, pending.since = self.consumer, now
            if idle:
                batches.append(Batch(shard, self._handled([p.event for _, p in idle]),
                                     [entry_id for entry_id, _ in idle]))
        return batches

    def _handled(self, events: list[StoredEvent]) -> list[StoredEvent]:
        """Those of ``events`` whose type the consumer handles (``events`` setting)."""
        wanted = self.events
        return events if wanted is None else [e for e in events if e.envelope.event in wanted]

    async def ack(self, shard: int, entry_ids: list[str]) -> None:
        pending = self._shards[shard].pending
        for entry_id in entry_ids:
            pending.pop(entry_id, None)
        await trio.lowlevel.checkpoint()

    async def touch(self, shard: int, entry_ids: list[str]) -> None:
        now = trio.current_time()
        pending = self._shards[shard].pending
        for entry_id in entry_ids:
            if (entry := pending.get(entry_id)) is not None:
                entry.consumer, entry.since = self.consumer, now
        await trio.lowlevel.checkpoint()
