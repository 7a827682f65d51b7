"""The embedded, in-memory bus: one process, no Redis.

Per shard: a list of stored events (bounded by ``retention``; trimming remembers the
newest offset it dropped, so an older cursor answers ``recovered=False``), an epoch drawn
at start (a restarted process is a new stream), and a bounded window of seen ids.
Appending waits when a live subscriber's channel is full: publishers slow down, nothing
is dropped.
"""

from __future__ import annotations

import bisect
import collections
import secrets
import time

import trio

from protocol.cursors import Cursor, Offset, shard_of
from protocol.envelope import Envelope, Inbound, StoredEvent
from rtserver.backends.bus import AppendResult, History, broadcast, ephemeral_event, live_feed
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
    def __init__(self, config: BusConfig, *, epoch: str | None = None) -> None:
        self.shards = config.shards
        self._config = config
        self.epoch = epoch or secrets.token_hex(4)
        self._shards = [_Shard() for _ in range(config.shards)]
        self._subscribers: list[trio.MemorySendChannel[StoredEvent]] = []

    def ready(self) -> bool:
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
        await broadcast(self._subscribers, event)
        return AppendResult(event, duplicate=False)

    async def publish_ephemeral(self, *envelopes: Envelope) -> list[StoredEvent]:
        events = [ephemeral_event(envelope) for envelope in envelopes]
        for event in events:
            await broadcast(self._subscribers, event)
        return events

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
