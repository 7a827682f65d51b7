"""Shared fixtures: logging, and a throwaway redis-server for the suites that need one."""

import shutil
import socket
import subprocess
import time

import pytest
import redis

from rtserver.logs import configure_logging

configure_logging("info")


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


@pytest.fixture
async def aio_loop():
    """The trio-asyncio loop redis-py runs in (FINDINGS: opened in a fixture)."""
    import trio_asyncio

    async with trio_asyncio.open_loop() as loop:
        yield loop
