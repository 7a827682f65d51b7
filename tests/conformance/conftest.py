"""Bus implementations under one contract: the memory bus, a real standalone Redis
(``redis_url``) and a real 3-master Redis Cluster (``redis_cluster_url``)."""

from __future__ import annotations

import pytest

from tests.support.bus_env import BusEnv
from tests.support.redis_servers import flush_redis


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def bus_env(request, nursery):
    url = None
    if request.param != "memory":
        url = request.getfixturevalue("redis_cluster_url" if request.param == "redis-cluster" else "redis_url")
        flush_redis(url)
    yield BusEnv(request.param, nursery, url)
