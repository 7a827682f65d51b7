"""Shared fixtures: logging, and a throwaway redis-server for the suites that need one."""

import shutil
import socket
import subprocess
import time

import pytest
import redis

from rtserver.backends.logs import configure_logging

configure_logging("info")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_port(port: int) -> None:
    """Until something accepts TCP connections on loopback ``port`` (20 s at most)."""
    import trio

    with trio.fail_after(20):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.aclose()
                return
            except OSError:
                await trio.sleep(0.05)


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def start_redis(port: int, folder, *, aof: bool = False, cluster: bool = False) -> subprocess.Popen:
    """A redis-server on ``port`` (small stream nodes, so that approximate trimming shows
    at test sizes); with ``aof``, every write is fsynced to ``folder`` before it is acked;
    with ``cluster``, a cluster-enabled node (see ``start_redis_cluster``)."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (make test installs it)")
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if aof else ["--appendonly", "no"]
    clustering = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"] if cluster else []
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persistence, *clustering,
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


def start_redis_cluster(folder, masters: int = 3) -> tuple[list[subprocess.Popen], list[int]]:
    """A local Redis Cluster of ``masters`` masters, no replicas, every slot covered."""
    ports = [free_cluster_port() for _ in range(masters)]
    procs = [start_redis(port, folder, cluster=True) for port in ports]
    subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                    "--cluster-replicas", "0", "--cluster-yes"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port in ports:
        client = redis.Redis(port=port)
        for _ in range(200):
            if client.cluster("info")["cluster_state"] == "ok":
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"redis cluster node {port} did not reach cluster_state:ok")
    return procs, ports


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory):
    """A throwaway 3-master Redis Cluster shared by the session; the URL names one node."""
    procs, ports = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield f"redis://127.0.0.1:{ports[0]}/0"
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(10)


def plain_redis(url: str) -> redis.Redis | redis.RedisCluster:
    """A plain redis-py client for that Redis, as a backbone service has: a cluster client
    when the server is a cluster node."""
    client = redis.Redis.from_url(url)
    return redis.RedisCluster.from_url(url) if client.info("cluster")["cluster_enabled"] else client


def flush_redis(url: str) -> None:
    """Empty a standalone Redis or every master of a cluster."""
    client = plain_redis(url)
    if isinstance(client, redis.RedisCluster):
        client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    else:
        client.flushall()


@pytest.fixture
async def aio_loop():
    """The trio-asyncio loop asyncpg runs in (opened in a fixture: pytest-trio refuses trio_asyncio as its runner)."""
    import trio_asyncio

    async with trio_asyncio.open_loop() as loop:
        yield loop
