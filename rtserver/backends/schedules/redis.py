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


from protocol.coalesce import offset_before
from protocol.cursors import Cursor, Offset, shard_of
from protocol.schedules import RECORDED_EVENTS, Snapshot, Update, decode_item, item_encoder
from rtserver.backends.bus.groups import Batch
from rtserver.backends.bus.redis import RedisBus, stream_key
from rtserver.backends.bus.redis_groups import RedisGroup
from rtserver.backends.config import SchedulesConfig

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


def record_key(tenant: str, room: str, shards: int) -> str:
    return f"rt:{{{shard_of(tenant, shards)}}}:schedule:{tenant}/{room}"


class RedisSchedules:
    def __init__(self, bus: RedisBus, config: SchedulesConfig, consumer: str) -> None:
        self._bus = bus
        self._config = config
        self._group = RedisGroup(bus, GROUP, consumer, batch=config.batch, claim_idle_s=config.claim_idle_s,
                                 poll_s=config.poll_ms / 1000, events=RECORDED_EVENTS)

    def opened(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # the group keeps what arrives meanwhile

    async def read(self) -> list[Batch]:
        return await self._group.read()

    async def commit(self, batch: Batch, updates: list[Update]) -> None:
        records: dict[str, int] = {}
        args: list = []
        for update in updates:
            key = record_key(update.tenant, update.schedule, self._bus.shards)
            index = records.setdefault(key, len(records) + 1)
            args += [index, update.field, update.item.offset, item_encoder.encode(update.item)]
        keys = [stream_key(batch.shard), *records]
        await self._bus.link.scripts(_COMMIT, [(keys, [GROUP, self._config.record_ttl_s, len(batch.entry_ids),
                                                   *batch.entry_ids, *args])])

    async def snapshot(self, tenant: str, room: str) -> Snapshot:
        shard = shard_of(tenant, self._bus.shards)
        [(raw_items, pending_min, last)] = await self._bus.link.scripts(
            _SNAPSHOT, [([record_key(tenant, room, self._bus.shards), stream_key(shard)], [GROUP])])
        items = {raw_items[i].decode(): decode_item(raw_items[i + 1]) for i in range(0, len(raw_items), 2)}
        if pending_min:
            watermark = offset_before(Offset.parse(pending_min.decode()))
        else:
            watermark = Offset.parse(last.decode()) if last else Offset(0, 0)
        epoch = await self._bus.epoch(shard)
        return Snapshot(room, items, Cursor(shard, epoch, watermark))
