"""Schedules' last-value records on Redis, kept by a consumer group shared by every node.

Keys, under the shard's hash tag (one script touches one slot):

* ``rt:{<shard>}:schedule:<tenant>/schedule:<id>`` — hash: item -> ``protocol.schedules.Item``
  (JSON), refreshed to ``schedules.record_ttl_s`` at each write;
* the consumer group ``rt:schedules`` on each shard's stream (created at ``0``: the
  records reflect the whole retained stream). Each node reads as its own consumer, so
  every entry is projected by one node for the whole cluster.

A commit applies a batch's updates (each item only over an older offset) and ``XACK`` s
its entries in one script: an acknowledged entry is reflected. So the cursor a snapshot
gives is the group's watermark, read atomically with the record: just before the oldest
pending entry, else the last entry delivered to the group. Entries of a consumer that
stopped (a crashed node) stay pending; after ``schedules.claim_idle_s`` another node claims
them (``XAUTOCLAIM``) and projects them.
"""

from __future__ import annotations

import contextlib

import redis.exceptions
import structlog
import trio

from protocol.coalesce import offset_before
from protocol.cursors import Cursor, Offset, shard_of
from protocol.schedules import Snapshot, Update, decode_item, item_encoder
from rtserver.bus.redis import RedisBus, stream_key
from rtserver.config import SchedulesConfig
from rtserver.schedules import Batch

log = structlog.get_logger("rtserver.schedules")
GROUP = "rt:schedules"

# KEYS[1] stream, KEYS[2..] records. ARGV[1] group, ARGV[2] ttl s, ARGV[3] n entry ids,
# the ids, then per update: record index (1-based, into KEYS[2..]), field, offset, value.
_COMMIT = """
local function older(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if #ams ~= #bms then return #ams < #bms end
  if ams ~= bms then return ams < bms end
  if #aseq ~= #bseq then return #aseq < #bseq end
  return aseq < bseq
end
local n = tonumber(ARGV[3])
local i = 4 + n
while i <= #ARGV do
  local record, field, offset, value = KEYS[1 + tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local current = redis.call('HGET', record, field)
  if not current or older(string.match(current, '^%["([%d-]+)"'), offset) then
    redis.call('HSET', record, field, value)
  end
  redis.call('EXPIRE', record, ARGV[2])
  i = i + 4
end
if n > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 4, 3 + n)) end
return n
"""

# KEYS[1] record, KEYS[2] stream. ARGV[1] group. The record with the group's watermark.
_SNAPSHOT = """
local items = redis.call('HGETALL', KEYS[1])
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[2], ARGV[1])
if not ok then return {items, false, false} end
local last = false
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[2])) do
  local fields = {}
  for j = 1, #group, 2 do fields[group[j]] = group[j + 1] end
  if fields['name'] == ARGV[1] then last = fields['last-delivered-id'] end
end
return {items, pending[2] or false, last}
"""


def _raised(answers: list) -> list:
    """The answers; the first error left in place (a lost stream and its group) raised."""
    for answer in answers:
        if isinstance(answer, Exception):
            raise answer
    return answers


def record_key(tenant: str, room: str, shards: int) -> str:
    return f"rt:{{{shard_of(tenant, shards)}}}:schedule:{tenant}/{room}"


class RedisSchedules:
    def __init__(self, bus: RedisBus, config: SchedulesConfig, consumer: str) -> None:
        self._bus = bus
        self._config = config
        self._consumer = consumer
        self._grouped: set[int] = set()  # shards whose group this node made sure exists
        self._claim_at = 0.0

    def opened(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # the group keeps what arrives meanwhile

    async def _ensure_groups(self) -> None:
        missing = [s for s in range(self._bus.shards) if s not in self._grouped]
        if not missing:
            return
        pipe = self._bus.client.pipeline(transaction=False)
        for shard in missing:
            pipe.xgroup_create(stream_key(shard), GROUP, id="0", mkstream=True)
        for shard, answer in zip(missing, await self._bus.call(pipe.execute, raise_on_error=False)):
            if isinstance(answer, Exception) and "BUSYGROUP" not in str(answer):
                raise answer
            self._grouped.add(shard)

    async def read(self) -> list[Batch]:
        """New entries of every shard for this consumer (and, every ``claim_idle_s``,
        the entries a stopped consumer left pending); polls every ``poll_ms`` when idle."""
        while True:
            try:
                await self._ensure_groups()
                batches = await self._claim() if trio.current_time() >= self._claim_at else []
                batches += await self._read_new()
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._grouped.clear()  # a stream was lost with its group: make them again
                continue
            if batches:
                return batches
            await trio.sleep(self._config.poll_ms / 1000)

    async def _read_new(self) -> list[Batch]:
        pipe = self._bus.client.pipeline(transaction=False)
        for shard in range(self._bus.shards):
            pipe.xreadgroup(GROUP, self._consumer, {stream_key(shard): ">"}, count=self._config.batch)
        batches = []
        for shard, answer in enumerate(_raised(await self._bus.execute(pipe))):
            for _key, entries in answer or ():
                if entries:
                    batches.append(self._batch(shard, entries))
        return batches

    async def _claim(self) -> list[Batch]:
        self._claim_at = trio.current_time() + self._config.claim_idle_s
        pipe = self._bus.client.pipeline(transaction=False)
        for shard in range(self._bus.shards):
            pipe.xautoclaim(stream_key(shard), GROUP, self._consumer, int(self._config.claim_idle_s * 1000),
                            count=self._config.batch)
        batches = []
        for shard, answer in enumerate(_raised(await self._bus.execute(pipe))):
            claimed, deleted = answer[1], answer[2] if len(answer) > 2 else []
            if claimed or deleted:  # trimmed before anyone projected them: settle them
                batch = self._batch(shard, claimed)
                batch.entry_ids += [d.decode() for d in deleted]
                batches.append(batch)
                log.info("schedule_entries_claimed", shard=shard, claimed=len(claimed), deleted=len(deleted))
        return batches

    def _batch(self, shard: int, entries) -> Batch:
        events = []
        for entry_id, fields in entries:
            event = self._bus.parse_entry(shard, entry_id, fields) if fields else None
            if event is not None:  # the live readers dead-letter the others
                events.append(event)
        return Batch(shard, events, [e.decode() for e, _ in entries])

    async def commit(self, batch: Batch, updates: list[Update]) -> None:
        records: dict[str, int] = {}
        args: list = []
        for update in updates:
            key = record_key(update.tenant, update.schedule, self._bus.shards)
            index = records.setdefault(key, len(records) + 1)
            args += [index, update.field, update.item.offset, item_encoder.encode(update.item)]
        keys = [stream_key(batch.shard), *records]
        await self._bus.scripts(_COMMIT, [(keys, [GROUP, self._config.record_ttl_s, len(batch.entry_ids),
                                                   *batch.entry_ids, *args])])

    async def snapshot(self, tenant: str, room: str) -> Snapshot:
        shard = shard_of(tenant, self._bus.shards)
        [(raw_items, pending_min, last)] = await self._bus.scripts(
            _SNAPSHOT, [([record_key(tenant, room, self._bus.shards), stream_key(shard)], [GROUP])])
        items = {raw_items[i].decode(): decode_item(raw_items[i + 1]) for i in range(0, len(raw_items), 2)}
        if pending_min:
            watermark = offset_before(Offset.parse(pending_min.decode()))
        else:
            watermark = Offset.parse(last.decode()) if last else Offset(0, 0)
        epoch = await self._bus.epoch(shard)
        return Snapshot(room, items, Cursor(shard, epoch, watermark))
