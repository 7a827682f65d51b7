"""The push stores in Redis, shared by the nodes and the push dispatcher (the contract:
``rtserver.backends.push_store``).

Keys, under the tenant's shard hash tag (one slot per tenant, so a Redis Cluster works):

* ``rt:{<s>}:push:device:<tenant>/<token>`` — the device's registration (``protocol.push.Device``,
  JSON), expiring ``push.device_ttl_s`` after it was made: the truth about a token.
* ``rt:{<s>}:push:room:<tenant>/<room>`` — hash token -> the same JSON, for each personal room
  the registration named: the index the dispatcher reads. An entry whose device key no
  longer holds the same registration (it expired, was dropped, or the token moved to
  another user) is stale and removed when found.
* ``rt:{<s>}:push:live:<tenant>/<user>`` — sorted set node -> end of its lease (ms): the
  user has a connection on that node until then.
* ``rt:{<s>}:push:quiet:<tenant>/<user>`` — set for ``push.quiet_s`` after a push to the user.
"""

from __future__ import annotations

import time

import msgspec

from protocol.cursors import shard_of
from protocol.push import Device, Registration
from rtserver.backends.redis_client import pairs
from rtserver.backends.redis_link import RedisLink

# KEYS: the device key, then the registration's room keys (the first: the user's own room).
# ARGV: token, registration JSON, TTL ms, devices kept per user.
# Returns the tokens forgotten to keep the user's devices within the limit (oldest first).
_REGISTER = """
local token, record, ttl, kept = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
redis.call('SET', KEYS[1], record, 'PX', ttl)
for i = 2, #KEYS do
  redis.call('HSET', KEYS[i], token, record)
  redis.call('PEXPIRE', KEYS[i], ttl)
end
local over = redis.call('HLEN', KEYS[2]) - kept
if over <= 0 then return {} end
local others = {}
local fields = redis.call('HGETALL', KEYS[2])
for i = 1, #fields, 2 do
  if fields[i] ~= token then
    table.insert(others, {tonumber(cjson.decode(fields[i + 1]).at) or 0, fields[i]})
  end
end
table.sort(others, function(a, b) return a[1] < b[1] end)
local forgotten = {}
for i = 1, math.min(over, #others) do
  for k = 2, #KEYS do redis.call('HDEL', KEYS[k], others[i][2]) end
  table.insert(forgotten, others[i][2])
end
return forgotten
"""

# KEYS: the device key, then the caller's room keys. ARGV: token, the caller's user id.
# The registration is removed if it is the caller's; the caller's index entries always.
_UNREGISTER = """
local record = redis.call('GET', KEYS[1])
local removed = 0
if record and cjson.decode(record).user == ARGV[2] then
  redis.call('DEL', KEYS[1])
  removed = 1
end
for i = 2, #KEYS do redis.call('HDEL', KEYS[i], ARGV[1]) end
return removed
"""

_device = msgspec.json.Decoder(Device)


def _key(shards: int, kind: str, tenant: str, name: str) -> str:
    """``rt:{<tenant's shard>}:push:<kind>:<tenant>/<name>`` (see the module docstring)."""
    return f"rt:{{{shard_of(tenant, shards)}}}:push:{kind}:{tenant}/{name}"

#: Users whose leases one pipeline writes (a node's renewal of many users is several).
HOLD_BATCH = 5000


class RedisDevices:
    def __init__(self, link: RedisLink, shards: int, *, ttl_s: int, max_per_user: int) -> None:
        self._link = link
        self._shards = shards
        self._ttl_ms = ttl_s * 1000
        self._max_per_user = max_per_user

    def _device_key(self, tenant: str, token: str) -> str:
        return _key(self._shards, "device", tenant, token)

    def _room_key(self, tenant: str, room: str) -> str:
        return _key(self._shards, "room", tenant, room)

    async def register(self, tenant: str, user: str, rooms: list[str], registration: Registration) -> list[str]:
        device = Device(registration.platform, user, rooms, int(time.time() * 1000))
        keys = [self._device_key(tenant, registration.token), *(self._room_key(tenant, r) for r in rooms)]
        [forgotten] = await self._link.scripts(_REGISTER, [(keys, [
            registration.token, msgspec.json.encode(device), self._ttl_ms, self._max_per_user])])
        return [t.decode() for t in forgotten]

    async def unregister(self, tenant: str, user: str, rooms: list[str], token: str) -> bool:
        keys = [self._device_key(tenant, token), *(self._room_key(tenant, r) for r in rooms)]
        [removed] = await self._link.scripts(_UNREGISTER, [(keys, [token, user])])
        return bool(removed)

    async def devices(self, tenant: str, rooms: list[str]) -> dict[str, Device]:
        indexes = await self._link.execute([("HGETALL", self._room_key(tenant, room)) for room in rooms])
        indexed = [(room, token.decode(), record)
                   for room, flat in zip(rooms, indexes)
                   for token, record in pairs(flat).items()]
        if not indexed:
            return {}
        found: dict[str, Device] = {}
        stale = []
        currents = await self._link.execute([("GET", self._device_key(tenant, token)) for _, token, _ in indexed])
        for (room, token, record), current in zip(indexed, currents):
            if current == record:
                found[token] = _device.decode(record)
            else:
                stale.append(("HDEL", self._room_key(tenant, room), token))
        await self._link.execute(stale)
        return found

    async def drop(self, tenant: str, token: str, device: Device) -> None:
        await self._link.execute([("DEL", self._device_key(tenant, token)),
                                 *(("HDEL", self._room_key(tenant, room), token) for room in device.rooms)])

    async def quiet(self, tenant: str, user: str, quiet_s: float) -> bool:
        if quiet_s <= 0:
            return True
        return bool(await self._link.call("SET", _key(self._shards, "quiet", tenant, user), b"1",
                                         "PX", int(quiet_s * 1000), "NX"))


class RedisLiveUsers:

    def __init__(self, link: RedisLink, shards: int) -> None:
        self._link = link
        self._shards = shards

    async def hold(self, holder: str, connected: list[tuple[str, str]], gone: list[tuple[str, str]], *,
                   lease_s: float, grace_s: float) -> None:
        now = time.time()
        leases = [(pair, now + lease_s) for pair in connected] + [(pair, now + grace_s) for pair in gone]
        for start in range(0, len(leases), HOLD_BATCH):
            commands = []
            for (tenant, user), until in leases[start:start + HOLD_BATCH]:
                key = _key(self._shards, "live", tenant, user)
                commands += [("ZADD", key, int(until * 1000), holder), ("PEXPIRE", key, int((lease_s + grace_s) * 1000))]
            await self._link.execute(commands)

    async def connected(self, tenant: str, users: list[str]) -> set[str]:
        now = int(time.time() * 1000)
        counts = await self._link.execute([("ZCOUNT", _key(self._shards, "live", tenant, user), now, "+inf")
                                          for user in users])
        return {user for user, count in zip(users, counts) if count}
