"""One Redis Streams consumer group on every shard stream, read by one consumer.

Used by the processes that must handle every durable event once for the whole cluster
(the schedule projector, the webhook dispatcher). Reads are pipelined over the shards
(no ``BLOCK``: it works on a Redis Cluster, where one call cannot name keys of two slots)
and poll when idle. Entries another consumer left pending for longer than
``claim_idle_s`` (it crashed) are claimed with ``XAUTOCLAIM``; a consumer that is still
working on entries keeps them with ``touch``. ``GroupWorker`` handles the entries of a
group each in a task of its own (the webhook and push dispatchers).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
import trio

from protocol.envelope import StoredEvent
from protocol.errors import ReplyError
from rtserver.backends.retry import Backoff

log = structlog.get_logger("rtserver.bus.groups")


@dataclass(slots=True)
class Batch:
    """Entries of one shard, in stream order."""

    shard: int
    events: list[StoredEvent]
    #: Every entry id of the batch (to acknowledge), events or not (malformed entries,
    #: entries trimmed before anyone read them).
    entry_ids: list[str] = field(default_factory=list)


class ConsumerGroup:
    """One consumer (``consumer``) of the group ``group`` on every shard of a bus: the
    interface, and the settings every implementation shares."""

    def __init__(self, group: str, consumer: str, *, batch: int, claim_idle_s: float, poll_s: float,
                 start: str = "0", events: frozenset[str] | None = None) -> None:
        """``batch``: entries read per shard per read; ``poll_s``: the pause between reads
        that found nothing; ``start``: where a group made now begins (``0``: the whole
        retained stream; ``$``: new entries only); ``events``: the event types the consumer
        handles (None: all). Entries of other types are left unparsed: in their batch's
        ``entry_ids`` only, acknowledged with it."""
        self.group = group
        self.consumer = consumer
        self.events = events
        self._batch = batch
        self.claim_idle_s = claim_idle_s
        self._poll_s = poll_s
        self._start = start
        self._claim_at = 0.0  # when to look for entries left pending next

    async def read(self) -> list[Batch]:
        """Entries of every shard nobody in the group was given yet, and those another
        consumer left pending for ``claim_idle_s``; waits (polling) until there are some."""
        raise NotImplementedError

    async def ack(self, shard: int, entry_ids: list[str]) -> None:
        """These entries are handled: nobody is given them again."""
        raise NotImplementedError

    async def touch(self, shard: int, entry_ids: list[str]) -> None:
        """Reset the idle time of entries this consumer still works on (nobody claims them)."""
        raise NotImplementedError


def consumer_name() -> str:
    """A name of this process for a consumer group: ``<host>-<pid>-<random>``."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class GroupWorker:
    """Handles each selected entry of ``group`` in a task of its own.

    ``select`` picks the entries to handle; the others are acknowledged at once. An entry
    is acknowledged when ``handle`` returns true; one it returns false for stays pending
    and is claimed again after the group's ``claim_idle_s`` (a retry later). While an
    entry is being handled it is kept claimed (``touch``), so no other consumer takes it.
    At most ``in_flight`` entries are handled at a time; reading waits for a free one.
    Redis unreachable: reading pauses (``Backoff``) and resumes; an
    acknowledgement lost with it leaves its entry to be claimed and handled again.
    """

    def __init__(self, group: ConsumerGroup, *, in_flight: int, select: Callable[[StoredEvent], bool],
                 handle: Callable[[StoredEvent], Awaitable[bool]]) -> None:
        self._group = group
        self._select = select
        self._handle = handle
        self._in_flight = trio.Semaphore(in_flight)
        #: (shard, entry id) of the entries being handled (kept claimed).
        self._handling: set[tuple[int, str]] = set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_claimed)
            task_status.started()
            backoff = Backoff()
            while True:
                try:
                    batches = await self._group.read()
                    for batch in batches:
                        selected = {str(event.offset): event for event in batch.events if self._select(event)}
                        await self._group.ack(batch.shard, [i for i in batch.entry_ids if i not in selected])
                        for entry_id, event in selected.items():
                            await self._in_flight.acquire()
                            self._handling.add((batch.shard, entry_id))
                            nursery.start_soon(self._handle_entry, batch.shard, entry_id, event)
                    backoff.reset()
                except ReplyError as exc:
                    if not exc.temporary:
                        raise
                    log.warning("group_paused", group=self._group.group, error=exc.message, retry_in_s=backoff.next_s)
                    await backoff.pause()

    async def _handle_entry(self, shard: int, entry_id: str, event: StoredEvent) -> None:
        try:
            if await self._handle(event):
                await self._group.ack(shard, [entry_id])
        except ReplyError as exc:
            if not exc.temporary:
                raise
            log.warning("group_ack_failed", group=self._group.group, entry=entry_id, error=exc.message)
        finally:
            self._handling.discard((shard, entry_id))
            self._in_flight.release()

    async def _keep_claimed(self) -> None:
        """Reset the idle time of the entries being handled, so no other consumer claims them."""
        while True:
            await trio.sleep(self._group.claim_idle_s / 3)
            by_shard: dict[int, list[str]] = {}
            for shard, entry_id in list(self._handling):
                by_shard.setdefault(shard, []).append(entry_id)
            try:
                for shard, entry_ids in by_shard.items():
                    await self._group.touch(shard, entry_ids)
            except ReplyError as exc:
                if not exc.temporary:
                    raise
                log.warning("group_touch_failed", group=self._group.group, error=exc.message)
