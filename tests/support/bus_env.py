"""Started buses of one kind (memory, redis, redis-cluster) for the conformance suite."""

from __future__ import annotations

import redis
import trio
from protocol.catalog import Catalog
from rtserver.backends.bus.memory import MemoryBus, MemoryGroup
from rtserver.backends.bus.redis import RedisBus
from rtserver.backends.bus.redis_groups import RedisGroup
from rtserver.backends.config import BusConfig, SchedulesConfig
from rtserver.backends.presence import MemoryPresence
from rtserver.backends.presence.redis import RedisPresence
from rtserver.backends.push_store import MemoryDevices, MemoryLiveUsers
from rtserver.backends.push_store.redis import RedisDevices, RedisLiveUsers
from rtserver.backends.recovery import MemoryRecovery, RedisRecovery
from rtserver.backends.schedules import MemorySchedules
from rtserver.backends.schedules.redis import RedisSchedules
from tests.support.redis_servers import flush_redis, plain_redis


SHARDS = 4


class BusEnv:
    """Makes started buses of one kind (memory, redis, redis-cluster); ``lose_streams``
    loses what the bus stored; ``raw()`` is a plain redis-py client, as a backbone has."""

    def __init__(self, kind: str, nursery: trio.Nursery, redis_url: str | None) -> None:
        self.kind = kind
        self._nursery = nursery
        self.redis_url = redis_url

    async def bus(self, on_dead_letter=None, **config):
        """A started bus; Redis buses check entries against the default catalog."""
        cfg = BusConfig(shards=SHARDS, **config)
        if self.redis_url is None:
            bus = MemoryBus(cfg)
        else:
            bus = RedisBus(cfg, self.redis_url, Catalog.default(), on_dead_letter=on_dead_letter)
        await self._nursery.start(bus.run)
        return bus

    def presence(self, bus, ttl_s: int = 300):
        """The presence store that goes with ``bus``."""
        return MemoryPresence() if self.redis_url is None else RedisPresence(bus.link, bus.shards, ttl_s)

    def schedules(self, bus, consumer: str = "node-a", **config):
        """The schedule store that goes with ``bus`` (``consumer``: the node, on Redis)."""
        cfg = SchedulesConfig(**config)
        return MemorySchedules(bus, cfg.mailbox) if self.redis_url is None else RedisSchedules(bus, cfg, consumer)

    def devices(self, bus, *, ttl_s: int = 3600, max_per_user: int = 10):
        """The push device store that goes with ``bus``."""
        if self.redis_url is None:
            return MemoryDevices(ttl_s=ttl_s, max_per_user=max_per_user)
        return RedisDevices(bus.link, bus.shards, ttl_s=ttl_s, max_per_user=max_per_user)

    def live_users(self, bus):
        """The connected-users store that goes with ``bus``."""
        return MemoryLiveUsers() if self.redis_url is None else RedisLiveUsers(bus.link, bus.shards)

    def recovery(self, bus):
        """The Socket.IO recovery store that goes with ``bus``."""
        return MemoryRecovery() if self.redis_url is None else RedisRecovery(bus.link)

    def group(self, bus, name: str, consumer: str, **settings):
        """A consumer of the consumer group ``name`` of ``bus``."""
        settings = {"batch": 100, "claim_idle_s": 1.0, "poll_s": 0.01} | settings
        return (MemoryGroup if self.redis_url is None else RedisGroup)(bus, name, consumer, **settings)

    def lose_streams(self) -> None:
        """Memory: a new bus is a new process; Redis: the server lost its data."""
        if self.redis_url is not None:
            flush_redis(self.redis_url)

    def raw(self) -> redis.Redis | redis.RedisCluster:
        return plain_redis(self.redis_url)
