"""Shared fixtures: logging, and a throwaway redis-server for the suites that need one."""

import shutil
import socket
import subprocess
import time

import pytest
import redis

from rtserver.logs import configure_logging

configure_logging("info")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int, folder, *, aof: bool = False) -> subprocess.Popen:
    """A redis-server on ``port`` (small stream nodes, so that approximate trimming shows
    at test sizes); with ``aof``, every write is fsynced to ``folder`` before it is acked."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (make test installs it)")
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if aof else ["--appendonly", "no"]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persistence,
         "--stream-node-max-entries", "4", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    pytest.fail(f"redis-server did not start on port {port}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A throwaway redis-server shared by the session (tests flush it first)."""
    port = free_port()
    proc = start_redis(port, tmp_path_factory.mktemp("redis"))
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
async def aio_loop():
    """The trio-asyncio loop redis-py runs in (FINDINGS: opened in a fixture)."""
    import trio_asyncio

    async with trio_asyncio.open_loop() as loop:
        yield loop
