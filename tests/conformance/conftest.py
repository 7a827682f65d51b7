"""Bus implementations under one contract: the memory bus, and real Redis (``redis_url``)."""

from __future__ import annotations

import pytest
import redis
import trio

from rtserver.bus.memory import MemoryBus
from rtserver.bus.redis import RedisBus
from rtserver.config import BusConfig

SHARDS = 4


class BusEnv:
    """Makes started buses of one kind; ``lose_streams`` loses what the bus stored."""

    def __init__(self, kind: str, nursery: trio.Nursery, redis_url: str | None) -> None:
        self.kind = kind
        self._nursery = nursery
        self.redis_url = redis_url

    async def bus(self, validate=None, on_dead_letter=None, **config):
        cfg = BusConfig(shards=SHARDS, **config)
        if self.kind == "memory":
            bus = MemoryBus(cfg)
        else:
            bus = RedisBus(cfg, self.redis_url, validate=validate, on_dead_letter=on_dead_letter)
        await self._nursery.start(bus.run)
        return bus

    def lose_streams(self) -> None:
        """Memory: a new bus is a new process; Redis: the server lost its data."""
        if self.kind == "redis":
            redis.Redis.from_url(self.redis_url).flushall()


@pytest.fixture(params=["memory", "redis"])
async def bus_env(request, nursery, aio_loop):
    url = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushall()
    yield BusEnv(request.param, nursery, url)
