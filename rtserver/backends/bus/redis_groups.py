"""The consumer groups of the Redis Streams bus: one group on every shard stream this
process reads (all, or ``bus.read_shards``), read by one consumer (the contract:
``rtserver.backends.bus.groups``).

Reads are pipelined over the shards (no ``BLOCK``: it works on a Redis Cluster, where one
call cannot name keys of two slots) and poll when idle. Entries another consumer left
pending for longer than ``claim_idle_s`` (it crashed) are claimed with ``XAUTOCLAIM``; a
consumer that is still working on entries keeps them with ``touch`` (``XCLAIM``).
"""

from __future__ import annotations

import structlog
import trio

from rtserver.backends.bus.groups import Batch, ConsumerGroup
from rtserver.backends.bus.redis import RedisBus, stream_key
from rtserver.backends.redis_client import stream_entries

log = structlog.get_logger("rtserver.bus.groups")


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


class RedisGroup(ConsumerGroup):
    def __init__(self, bus: RedisBus, group: str, consumer: str, **settings) -> None:
        super().__init__(group, consumer, **settings)
        self._bus = bus
        self._grouped: set[int] = set()  # shards whose group this consumer made sure exists
        #: ``events`` as the bytes of an entry's ``event`` field (checked before parsing).
        self._wanted_types = None if self.events is None else frozenset(e.encode() for e in self.events)

    async def _ensure_groups(self) -> None:
        missing = [s for s in self._bus.read if s not in self._grouped]
        if not missing:
            return
        await self._bus.link.execute([("XGROUP", "CREATE", stream_key(shard), self.group, self._start, "MKSTREAM")
                                 for shard in missing], keep=lambda error: "BUSYGROUP" in str(error))  # made already
        self._grouped.update(missing)

    async def read(self) -> list[Batch]:
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
                  stream_key(shard), ">") for shard in self._bus.read]
        batches = []
        answers = _raised(await self._bus.link.execute(reads, keep=_is_group_lost))
        for shard, answer in zip(self._bus.read, answers, strict=True):
            for _key, entries in answer or ():
                if entries:
                    batches.append(self._parsed(shard, stream_entries(entries)))
        return batches

    async def _claim(self) -> list[Batch]:
        self._claim_at = trio.current_time() + self.claim_idle_s
        claims = [("XAUTOCLAIM", stream_key(shard), self.group, self.consumer, int(self.claim_idle_s * 1000), "0-0",
                   "COUNT", self._batch) for shard in self._bus.read]
        batches = []
        answers = _raised(await self._bus.link.execute(claims, keep=_is_group_lost))
        for shard, answer in zip(self._bus.read, answers, strict=True):
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
        wanted = self._wanted_types
        for entry_id, fields in entries:
            if not fields or (wanted is not None and fields.get(b"event") not in wanted):
                continue
            event = self._bus.parse_entry(shard, entry_id, fields)
            if event is not None:  # the nodes' live readers dead-letter the others
                events.append(event)
        return Batch(shard, events, [e.decode() for e, _ in entries])

    async def ack(self, shard: int, entry_ids: list[str]) -> None:
        if entry_ids:
            await self._bus.link.call("XACK", stream_key(shard), self.group, *entry_ids)

    async def touch(self, shard: int, entry_ids: list[str]) -> None:
        if entry_ids:
            await self._bus.link.call("XCLAIM", stream_key(shard), self.group, self.consumer, 0, *entry_ids, "JUSTID")
