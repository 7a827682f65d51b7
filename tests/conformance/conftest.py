"""Bus implementations under one contract: the memory bus, and a real redis-server started here."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
import redis
import trio
import trio_asyncio

from rtserver.bus.memory import MemoryBus
from rtserver.bus.redis import RedisBus
from rtserver.config import BusConfig

SHARDS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A throwaway redis-server on a free port (small stream nodes, so that approximate
    trimming shows at test sizes)."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (make test installs it)")
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--stream-node-max-entries", "4", "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


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


@pytest.fixture
async def aio_loop():
    async with trio_asyncio.open_loop() as loop:
        yield loop


@pytest.fixture(params=["memory", "redis"])
async def bus_env(request, nursery, aio_loop):
    url = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushall()
    yield BusEnv(request.param, nursery, url)
