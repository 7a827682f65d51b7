"""Registry actor: routes live bus events to the room actors that have members.

Contract
--------
Mailbox
    The bus's live feed: a bounded channel of ``StoredEvent`` (capacity ``rooms.mailbox``).
    ``open_room`` is called by connection actors.
Owns
    The map of room key -> running ``Room``; the nursery the rooms run in.
Replies
    ``open_room`` returns the room (started on the first join with ``start_soon``: its
    mailbox takes messages at once).
Failure
    The bus feed closing ends it; an exception ends the node. A room that stops
    unregisters itself first, so a later join starts a new one.
Blocking
    Waits on the live feed and, when a room's mailbox is full, on that room (the bus
    then slows its publishers: nothing is dropped). Rooms never block on clients, so a
    full mailbox only ever means the process is out of CPU.
"""

from __future__ import annotations

import trio

from actors.room import Room
from protocol.catalog import Catalog
from protocol.coalesce import HeldOffsets
from protocol.cursors import shard_of
from protocol.envelope import StoredEvent
from protocol.rooms import room_key
from rtserver.backends.bus import Bus
from rtserver.backends.config import RoomsConfig
from rtserver.backends.metrics import Metrics


class Registry:
    def __init__(
        self, bus: Bus, config: RoomsConfig, metrics: Metrics, fanned_out_at: list[float], catalog: Catalog
    ) -> None:
        self._bus = bus
        self._config = config
        self._metrics = metrics
        self._fanned_out_at = fanned_out_at
        self._rules = catalog.coalesce_rules()
        #: Per shard: the durable events held by this node's rooms (see protocol.coalesce).
        self._held_offsets = [HeldOffsets() for _ in range(bus.shards)]
        self._rooms: dict[str, Room] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with self._bus.subscribe(self._config.mailbox) as feed:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                async for event in feed:
                    await self.route(event)
                nursery.cancel_scope.cancel()

    async def route(self, event: StoredEvent) -> None:
        """Hand ``event`` to each of its rooms open here, in bus order.

        A durable event counts as held in its shard's ``HeldOffsets`` from here until its
        room takes it from the mailbox: rooms run as tasks of their own, so a newer event
        may leave through another room first, and its frame must not carry a cursor past
        this one (a client of both rooms would resume after an event it never got).
        """
        envelope = event.envelope
        rooms = self._rooms
        offset = event.offset
        for name in envelope.rooms:
            room = rooms.get(room_key(envelope.tenant, name))
            if room is None:
                continue
            if offset is not None:
                room.held_offsets.add(offset)
            try:
                room.mailbox.send_nowait(event)
            except trio.WouldBlock:
                try:
                    await room.mailbox.send(event)
                except BaseException:
                    if offset is not None:
                        room.held_offsets.remove(offset)
                    raise
            except trio.ClosedResourceError:
                if offset is not None:
                    room.held_offsets.remove(offset)

    def get(self, key: str) -> Room | None:
        return self._rooms.get(key)

    def open_room(self, key: str) -> Room:
        """The room for ``key``, started if needed (its mailbox takes messages at once;
        its task runs from the next scheduling round)."""
        room = self._rooms.get(key)
        if room is None:
            room = Room(
                key,
                mailbox=self._config.mailbox,
                linger_s=self._config.linger_s,
                metrics=self._metrics,
                fanned_out_at=self._fanned_out_at,
                on_stop=self._forget,
                rules=self._rules,
                window_s=self._config.coalesce_window_ms / 1000,
                held_offsets=self._held_offsets[shard_of(key.partition("/")[0], self._bus.shards)],
            )
            self._rooms[key] = room
            self._nursery.start_soon(room.run)
        return room

    def _forget(self, room: Room) -> None:
        if self._rooms.get(room.key) is room:
            del self._rooms[room.key]

    def __len__(self) -> int:
        return len(self._rooms)
