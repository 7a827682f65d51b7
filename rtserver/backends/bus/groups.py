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
from rtserver.backends.bus.redis import RedisBus, stream_key
from rtserver.backends.redis_client import stream_entries
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


class _GroupLost(Exception):
    """A stream was lost with its group (``NOGROUP``): the groups are made again."""


def _is_group_lost(error: Exception) -> bool:
    return "NOGROUP" in str(error)


def _raised(answers: list) -> list:
    """The answers of a pipeline that kept ``NOGROUP`` answers in place; ``_GroupLost``
    when there is one."""
    if any(isinstance(answer, Exception) for answer in answers):
        raise _GroupLost
    return answers


class ShardGroup:
    def __init__(self, bus: RedisBus, group: str, consumer: str, *, batch: int, claim_idle_s: float,
                 poll_s: float, start: str = "0") -> None:
        """``start``: where a group created now begins (``0``: the whole retained stream;
        ``$``: new entries only)."""
        self._bus = bus
        self.group = group
        self.consumer = consumer
        self._batch = batch
        self.claim_idle_s = claim_idle_s
        self._poll_s = poll_s
        self._start = start
        self._grouped: set[int] = set()  # shards whose group this consumer made sure exists
        self._claim_at = 0.0

    async def _ensure_groups(self) -> None:
        missing = [s for s in range(self._bus.shards) if s not in self._grouped]
        if not missing:
            return
        await self._bus.link.execute([("XGROUP", "CREATE", stream_key(shard), self.group, self._start, "MKSTREAM")
                                 for shard in missing], keep=lambda error: "BUSYGROUP" in str(error))  # made already
        self._grouped.update(missing)

    async def read(self) -> list[Batch]:
        """New entries of every shard for this consumer (and, every ``claim_idle_s``, the
        entries a stopped consumer left pending); polls every ``poll_s`` when idle."""
        while True:
            try:
                await self._ensure_groups()
                batches = await self._claim() if trio.current_time() >= self._claim_at else []
                batches += await self._read_new()
            except _GroupLost:
                self._grouped.clear()  # a stream was lost with its group: make them again
                continue
            if batches:
                return batches
            await trio.sleep(self._poll_s)

    async def _read_new(self) -> list[Batch]:
        reads = [("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self._batch, "STREAMS",
                  stream_key(shard), ">") for shard in range(self._bus.shards)]
        batches = []
        for shard, answer in enumerate(_raised(await self._bus.link.execute(reads, keep=_is_group_lost))):
            for _key, entries in answer or ():
                if entries:
                    batches.append(self._parsed(shard, stream_entries(entries)))
        return batches

    async def _claim(self) -> list[Batch]:
        self._claim_at = trio.current_time() + self.claim_idle_s
        claims = [("XAUTOCLAIM", stream_key(shard), self.group, self.consumer, int(self.claim_idle_s * 1000), "0-0",
                   "COUNT", self._batch) for shard in range(self._bus.shards)]
        batches = []
        for shard, answer in enumerate(_raised(await self._bus.link.execute(claims, keep=_is_group_lost))):
            claimed, deleted = stream_entries(answer[1]), answer[2] if len(answer) > 2 else []
            if claimed or deleted:  # deleted: trimmed before anyone handled them, to settle
                batch = self._parsed(shard, claimed)
                batch.entry_ids += [d.decode() for d in deleted]
                batches.append(batch)
                log.info("group_entries_claimed", group=self.group, shard=shard, claimed=len(claimed),
                         deleted=len(deleted))
        return batches

    def _parsed(self, shard: int, entries) -> Batch:
        events = []
        for entry_id, fields in entries:
            event = self._bus.parse_entry(shard, entry_id, fields) if fields else None
            if event is not None:  # the nodes' live readers dead-letter the others
                events.append(event)
        return Batch(shard, events, [e.decode() for e, _ in entries])

    async def ack(self, shard: int, entry_ids: list[str]) -> None:
        if entry_ids:
            await self._bus.link.call("XACK", stream_key(shard), self.group, *entry_ids)

    async def touch(self, shard: int, entry_ids: list[str]) -> None:
        """Reset the idle time of entries this consumer still works on (nobody claims them)."""
        if entry_ids:
            await self._bus.link.call("XCLAIM", stream_key(shard), self.group, self.consumer, 0, *entry_ids, "JUSTID")


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

    def __init__(self, group: ShardGroup, *, in_flight: int, select: Callable[[StoredEvent], bool],
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
