"""The presence store on Redis, shared by every node (standalone or Redis Cluster).

Keys, all under the tenant's shard hash tag so that one script touches one slot:

* ``rt:{<shard>}:presence:users:<tenant>/<group>`` — hash: user -> ``state|since|connections``,
  the combined state as last announced (what a snapshot reads).
* ``rt:{<shard>}:presence:holders:<tenant>/<group>/<user>`` — hash: holder (node) ->
  ``state|connections|lease_until_ms``.
* ``rt:{<shard>}:presence:leases`` — sorted set of ``<tenant>\\n<group>\\n<user>\\n<holder>`` by
  lease end, for the sweep.

One Lua script writes a holder's view and recombines the user atomically, so when two
nodes change the same user at once exactly one sees (and announces) the change. Every key
is given ``presence.ttl_s`` again at each write: garbage collection for users nobody holds.
"""

from __future__ import annotations

from protocol.cursors import shard_of
from protocol.presence import PresenceEntry, PresenceState
from rtserver.backends.presence import Change, PresenceKey, View
from rtserver.backends.redis_client import pairs
from rtserver.backends.redis_link import RedisLink

# KEYS: users hash, holders hash, leases zset.
# ARGV: user, holder, state ('' = recombine only, 'offline' = withdraw), connections,
#       now ms, lease end ms, ttl s, lease member prefix (the holder is appended).
_PUT = """
local users, holders, leases = KEYS[1], KEYS[2], KEYS[3]
local user, holder, state, conns = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now_text, lease_until, ttl, prefix = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local now = tonumber(now_text)
if state == 'offline' then
  redis.call('HDEL', holders, holder)
  redis.call('ZREM', leases, prefix .. holder)
elseif state ~= '' then
  redis.call('HSET', holders, holder, state .. '|' .. conns .. '|' .. lease_until)
  redis.call('ZADD', leases, lease_until, prefix .. holder)
end
local rank = {offline = 0, away = 1, online = 2}
local best, total = 'offline', 0
local fields = redis.call('HGETALL', holders)
for i = 1, #fields, 2 do
  local st, c, lu = string.match(fields[i + 1], '^(%a+)|(%d+)|(%d+)$')
  if tonumber(lu) < now then
    redis.call('HDEL', holders, fields[i])
    redis.call('ZREM', leases, prefix .. fields[i])
  else
    if rank[st] > rank[best] then best = st end
    total = total + tonumber(c)
  end
end
local old_state, since = 'offline', now_text
local old = redis.call('HGET', users, user)
if old then old_state, since = string.match(old, '^(%a+)|(%d+)|') end
if best ~= old_state then since = now_text end
if best == 'offline' then
  redis.call('HDEL', users, user)
else
  redis.call('HSET', users, user, best .. '|' .. since .. '|' .. total)
  redis.call('EXPIRE', users, ttl)
end
if redis.call('EXISTS', holders) == 1 then redis.call('EXPIRE', holders, ttl) end
if redis.call('EXISTS', leases) == 1 then redis.call('EXPIRE', leases, ttl) end
if best ~= old_state then return {best, since, total} end
return false
"""


class RedisPresence:
    def __init__(self, link: RedisLink, shards: int, ttl_s: int) -> None:
        self._link = link
        self._shards = shards
        self._ttl_s = ttl_s

    def _keys(self, key: PresenceKey) -> list[str]:
        shard = shard_of(key.tenant, self._shards)
        return [_users_key(shard, key.tenant, key.group),
                f"rt:{{{shard}}}:presence:holders:{key.tenant}/{key.group}/{key.user}",
                _leases_key(shard)]

    async def _run(self, calls: list[tuple[PresenceKey, str, str, int]], now_ms: int, lease_ms: int) -> list[Change]:
        """Run the script once per (key, holder, state, connections), pipelined."""
        answers = await self._link.scripts(_PUT, [
            (self._keys(key), [key.user, holder, state, connections, now_ms, now_ms + lease_ms, self._ttl_s,
                               f"{key.tenant}\n{key.group}\n{key.user}\n"])
            for key, holder, state, connections in calls])
        return [(key, PresenceEntry(key.user, PresenceState(answer[0].decode()), int(answer[1]), int(answer[2])))
                for (key, *_), answer in zip(calls, answers) if answer]

    async def put(self, views: list[View], holder: str, now_ms: int, lease_ms: int) -> list[Change]:
        return await self._run([(v.key, holder, v.state.value, v.connections) for v in views], now_ms, lease_ms)

    async def sweep(self, now_ms: int) -> list[Change]:
        expired = set()
        reads = [("ZRANGEBYSCORE", _leases_key(shard), "-inf", now_ms - 1) for shard in range(self._shards)]
        for members in await self._link.execute(reads):
            for member in members:
                tenant, group, user, _holder = member.decode().split("\n")
                expired.add(PresenceKey(tenant, group, user))
        return await self._run([(key, "", "", 0) for key in sorted(expired)], now_ms, 0)

    async def snapshot(self, tenant: str, group: str) -> list[PresenceEntry]:
        shard = shard_of(tenant, self._shards)
        users = pairs(await self._link.call("HGETALL", _users_key(shard, tenant, group)))
        entries = []
        for user, value in sorted(users.items()):
            state, since, connections = value.decode().split("|")
            entries.append(PresenceEntry(user.decode(), PresenceState(state), int(since), int(connections)))
        return entries


def _users_key(shard: int, tenant: str, group: str) -> str:
    return f"rt:{{{shard}}}:presence:users:{tenant}/{group}"


def _leases_key(shard: int) -> str:
    return f"rt:{{{shard}}}:presence:leases"
