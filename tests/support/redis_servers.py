"""Throwaway redis-servers and Redis Clusters, and a plain redis-py client as a backbone has."""

from __future__ import annotations

import shutil
import subprocess
import time
import pytest
import redis
from tests.support.net import free_cluster_port


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
