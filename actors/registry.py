"""Registry actor: routes live bus events to the rooms that have members on this node.

Contract
--------
Mailbox
    The bus's live feed: a bounded channel of ``StoredEvent`` (capacity ``rooms.mailbox``).
    ``open_room`` is called by connection actors.
Owns
    The map of room key -> open ``Room``, and the rooms themselves: they are state driven
    by this actor's task, not tasks of their own (an idle room costs a few dicts), each
    taking its events in bus order and woken at the time it asked for (the end of a
    coalescing window, its linger once empty).
Replies
    ``open_room`` returns the room (opened on the first join: it takes events at once).
Failure
    The bus feed closing ends it; an exception (its own or a room's) ends the node. A
    room that stops unregisters itself first, so a later join opens a new one.
Blocking
    Only on the live feed and the next room's wake-up: rooms never block (they push to
    outbound queues), so a full feed only ever means the process is out of CPU, and the
    bus then slows its publishers: nothing is dropped.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator

import msgspec
import trio

from actors.room import Room
from actors.writer import FanOuts
from protocol.catalog import Catalog
from protocol.coalesce import HeldOffsets
from protocol.cursors import shard_of
from protocol.envelope import StoredEvent
from protocol.rooms import room_key
from rtserver.backends.bus import Bus
from rtserver.backends.config import RoomsConfig
from rtserver.backends.metrics import Metrics

#: Events routed between two yields to the other tasks (writes, reads).
ROUTE_BATCH = 64


class Registry:
    def __init__(
        self, bus: Bus, config: RoomsConfig, metrics: Metrics, fan_outs: FanOuts, catalog: Catalog
    ) -> None:
        self._bus = bus
        self._config = config
        self._metrics = metrics
        self._fan_outs = fan_outs
        self._tracing = fan_outs.tracing
        self._rules = catalog.coalesce_rules()
        #: Per shard: the durable events held by this node's rooms (see protocol.coalesce).
        self._held_offsets = [HeldOffsets() for _ in range(bus.shards)]
        self._rooms: dict[str, Room] = {}
        #: When each room asked to be woken, and a heap of (time, order, room) for it;
        #: an entry whose time is no longer the room's is skipped when it comes up.
        self._wake_times: dict[Room, float] = {}
        self._wakeups: list[tuple[float, int, Room]] = []
        self._order = itertools.count()
        self._sleep = trio.CancelScope()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with self._bus.subscribe(self._config.mailbox) as feed:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._wake_rooms)
                task_status.started()
                async for event in feed:
                    self.route(event)
                    # What came meanwhile, without a task switch each (at most ROUTE_BATCH).
                    for queued in itertools.islice(drain(feed), ROUTE_BATCH - 1):
                        self.route(queued)
                nursery.cancel_scope.cancel()

    def route(self, event: StoredEvent) -> int:
        """Hand ``event`` to each of its rooms open here (in bus order: each fans it out
        before the next event is routed); returns the queues it was pushed to now."""
        if self._tracing.enabled:
            return self._route_traced(event)
        return self._take(event)

    def _take(self, event: StoredEvent) -> int:
        envelope = event.envelope
        rooms = self._rooms
        delivered = 0
        for name in envelope.rooms:
            room = rooms.get(room_key(envelope.tenant, name))
            if room is not None:
                delivered += room.take(event)
        return delivered

    def _route_traced(self, event: StoredEvent) -> int:
        """``route`` in an ``rt.bus.read`` span (child of the entry's ``traceparent``), which
        the rooms' fan-outs and the node's write span of the event are children of."""
        envelope = event.envelope
        with self._tracing.span("rt.bus.read", envelope.traceparent, "consumer", **{
                "rt.event_type": envelope.event, "rt.event_id": event.id, "rt.tenant": envelope.tenant}) as read:
            delivered = self._take(msgspec.structs.replace(
                event, envelope=msgspec.structs.replace(envelope, traceparent=read)))
            if delivered:
                self._fan_outs.traced_write(read, delivered)
        return delivered

    def get(self, key: str) -> Room | None:
        return self._rooms.get(key)

    def open_room(self, key: str) -> Room:
        """The room for ``key``, opened if needed."""
        room = self._rooms.get(key)
        if room is None:
            room = self._rooms[key] = Room(
                key,
                linger_s=self._config.linger_s,
                metrics=self._metrics,
                fan_outs=self._fan_outs,
                wake_at=self._wake_at,
                on_stop=self._forget,
                rules=self._rules,
                window_s=self._config.coalesce_window_ms / 1000,
                held_offsets=self._held_offsets[shard_of(key.partition("/")[0], self._bus.shards)],
            )
        return room

    def _forget(self, room: Room) -> None:
        self._wake_times.pop(room, None)
        if self._rooms.get(room.key) is room:
            del self._rooms[room.key]

    # -- wake-ups ------------------------------------------------------------------------
    def _wake_at(self, room: Room, when: float) -> None:
        """Call ``room.wake`` at ``when`` (``math.inf``: never), instead of any earlier ask."""
        if when == math.inf:
            self._wake_times.pop(room, None)
            return
        if self._wake_times.get(room) == when:
            return
        self._wake_times[room] = when
        heapq.heappush(self._wakeups, (when, next(self._order), room))
        if when < self._sleep.deadline:
            self._sleep.deadline = when

    async def _wake_rooms(self) -> None:
        wakeups = self._wakeups
        while True:
            with trio.CancelScope(deadline=wakeups[0][0] if wakeups else math.inf) as self._sleep:
                await trio.sleep_forever()
            now = trio.current_time()
            while wakeups and wakeups[0][0] <= now:
                when, _, room = heapq.heappop(wakeups)
                if self._wake_times.get(room) == when:
                    del self._wake_times[room]
                    room.wake(now)

    def __len__(self) -> int:
        return len(self._rooms)


def drain(feed: trio.MemoryReceiveChannel[StoredEvent]) -> Iterator[StoredEvent]:
    """The events already queued in ``feed``, without waiting (stops when it is empty or closed)."""
    while True:
        try:
            yield feed.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return
