"""Shared fixtures: logging, and a throwaway redis-server for the suites that need one."""


import pytest

from rtserver.backends.logs import configure_logging
from tests.support.net import free_port
from tests.support.redis_servers import start_redis, start_redis_cluster

configure_logging("info")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A throwaway redis-server shared by the session (tests flush it first)."""
    port = free_port()
    proc = start_redis(port, tmp_path_factory.mktemp("redis"))
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory):
    """A throwaway 3-master Redis Cluster shared by the session; the URL names one node."""
    procs, ports = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield f"redis://127.0.0.1:{ports[0]}/0"
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(10)


@pytest.fixture
async def aio_loop():
    """The trio-asyncio loop asyncpg runs in (opened in a fixture: pytest-trio refuses trio_asyncio as its runner)."""
    import trio_asyncio

    async with trio_asyncio.open_loop() as loop:
        yield loop
