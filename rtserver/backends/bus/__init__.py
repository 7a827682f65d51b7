"""The bus: where durable events are appended and read back, and how live events arrive.

``Bus`` is the interface every implementation honours (the memory bus here; Redis
Streams later), proven by one conformance suite:

* ``append`` assigns the offset/cursor; an envelope whose ``id`` was already appended
  (within the dedupe window) is not appended again: the first one is returned with
  ``duplicate=True``.
* ``read_since`` returns the events of one shard after a cursor, oldest first, a page at a
  time, and whether the history still reaches back to the cursor (``recovered``: a cursor
  of another epoch, or older than what was trimmed, gives ``recovered=False``).
* ``subscribe`` opens a bounded live feed of every event appended from then on, in
  append order per shard, and of every ephemeral event published (best-effort: their
  order relative to appends is not promised).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import trio

from protocol.cursors import Cursor, shard_of
from protocol.envelope import Envelope, Inbound, StoredEvent
from protocol.session import RoomHistory


@dataclass(frozen=True, slots=True)
class AppendResult:
    event: StoredEvent
    duplicate: bool


@dataclass(frozen=True, slots=True)
class History:
    """A page of one shard's history after a cursor."""

    events: list[StoredEvent]
    #: False when the stream cannot prove nothing was lost after the cursor.
    recovered: bool
    #: The position after the last returned event (or the cursor/head when none).
    cursor: Cursor
    #: True when more events follow this page.
    more: bool


#: History events read per bus call.
HISTORY_PAGE = 500


class Bus(Protocol):
    shards: int
    #: Whether other nodes may share this bus (a session may be held on another node).
    spans_nodes: bool

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Connect and feed the live subscribers until cancelled (reports when ready)."""
        ...

    async def append(self, envelope: Envelope) -> AppendResult: ...

    async def publish_ephemeral(self, *envelopes: Envelope) -> list[StoredEvent]:
        """Hand ``envelopes`` to every node's live subscribers, never stored (one round
        trip for all of them); the events as published."""
        ...

    async def hand_in(self, command: Inbound) -> str:
        """Append a client command for the backbone to its shard's inbound stream; its id."""
        ...

    async def read_since(self, cursor: Cursor, limit: int) -> History: ...

    async def head(self, shard: int) -> Cursor:
        """The cursor of the newest entry of ``shard`` (or its start when empty)."""
        ...

    def subscribe(self, capacity: int) -> contextlib.AbstractContextManager[trio.MemoryReceiveChannel[StoredEvent]]: ...

    def serves(self, tenant: str) -> bool:
        """Whether this node reads ``tenant``'s shard live, so may serve its clients
        (shard affinity: ``bus.read_shards``)."""
        ...

    def ready(self) -> bool: ...


def ephemeral_event(envelope: Envelope) -> StoredEvent:
    """An ephemeral event as published: the producer's id and time, else drawn now."""
    return StoredEvent(envelope=envelope, id=envelope.id or secrets.token_hex(8),
                       ts=envelope.ts or int(time.time() * 1000))


async def broadcast(subscribers: list[trio.MemorySendChannel[StoredEvent]], event: StoredEvent,
                    *, checkpoint: bool = True) -> None:
    """Hand ``event`` to every live subscriber; wait for a full one (the appender slows
    down, nothing is dropped); a subscriber that went away is skipped. A checkpoint unless
    ``checkpoint`` is false (a reader handing on a batch yields once per batch instead)."""
    for send in list(subscribers):
        try:
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                await send.send(event)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the subscriber left (before, or while we waited for it)
    if checkpoint:
        await trio.lowlevel.checkpoint()


async def read_rooms(bus: Bus, tenant: str, rooms: set[str], since: Cursor, limit: int) -> RoomHistory:
    """The events of ``tenant``'s ``rooms`` after ``since``, at least ``limit`` pairs when
    that many exist. A cursor of another shard than the tenant's is not recovered."""
    shard = shard_of(tenant, bus.shards)
    pairs: list[tuple[StoredEvent, str]] = []
    cursor = since
    if since.shard == shard:
        while True:
            page = await bus.read_since(cursor, min(HISTORY_PAGE, limit))
            if not page.recovered:
                break
            for event in page.events:
                if event.envelope.tenant == tenant:
                    pairs.extend((event, room) for room in event.envelope.rooms if room in rooms)
            cursor = page.cursor
            if not page.more or len(pairs) >= limit:
                return RoomHistory(pairs, True, cursor, page.more)
    return RoomHistory([], False, await bus.head(shard), False)


@contextlib.contextmanager
def live_feed(
    subscribers: list[trio.MemorySendChannel[StoredEvent]], capacity: int
) -> Iterator[trio.MemoryReceiveChannel[StoredEvent]]:
    """Register a bounded live channel in ``subscribers`` for the duration of the block."""
    send, receive = trio.open_memory_channel[StoredEvent](capacity)
    subscribers.append(send)
    try:
        with receive:
            yield receive
    finally:
        subscribers.remove(send)
        send.close()
