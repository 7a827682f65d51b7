"""Redis clients from Trio: CPU per call of redis-py (asyncio, through trio-asyncio),
coredis (anyio, when installed: ``pip install coredis``) and ``rtserver.backends.redis_client``.

Starts a redis-server whose stream holds 5,000 entries of 150 B, then, per client: a
pipeline of the three commands a resume sends (``SET NX GET`` of the epoch, ``XINFO
STREAM``, ``XRANGE`` of 11 entries) ``--calls`` times one after another, the same
concurrently (``--calls`` tasks over the pool), and a single ``GET``. CPU is this
process's (the server's is not counted).

    .venv/bin/python bench/redis_clients.py
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile

import redis
import trio
from stack import free_port

from rtserver.backends.redis_client import Redis
from tests.support.redis_servers import start_redis

PAD = "x" * 150


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(name: str, pipeline, get, calls: int) -> dict:
    """µs of CPU per call: the pipeline sequential, the pipeline concurrent, a GET."""
    for _ in range(100):  # warm-up
        await pipeline()
    started = cpu()
    for _ in range(calls):
        await pipeline()
    sequential = (cpu() - started) / calls * 1e6
    started = cpu()
    async with trio.open_nursery() as nursery:
        for _ in range(calls):
            nursery.start_soon(pipeline)
    concurrent = (cpu() - started) / calls * 1e6
    started = cpu()
    for _ in range(calls):
        await get()
    single = (cpu() - started) / calls * 1e6
    return {"client": name, "pipeline_us": round(sequential), "pipeline_concurrent_us": round(concurrent),
            "get_us": round(single)}


async def with_redis_py(url: str, last: bytes, calls: int) -> dict:
    import redis.asyncio
    import trio_asyncio
    from trio_asyncio import aio_as_trio

    async with trio_asyncio.open_loop():
        pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=16, timeout=None)
        client = redis.asyncio.Redis(connection_pool=pool)

        async def pipeline():
            pipe = client.pipeline(transaction=False)
            pipe.set("epoch", "e", nx=True, get=True)
            pipe.xinfo_stream("s")
            pipe.xrange("s", b"(" + last, "+", count=11)
            return await aio_as_trio(pipe.execute)(raise_on_error=False)

        try:
            return await measure("redis-py via trio-asyncio", pipeline, lambda: aio_as_trio(client.get)("epoch"),
                                 calls)
        finally:
            await aio_as_trio(client.aclose)()


async def with_coredis(url: str, last: bytes, calls: int) -> dict | None:
    try:
        import coredis
    except ImportError:
        return None
    client = coredis.Redis.from_url(url)
    async with client:
        async def pipeline():
            async with client.pipeline(transaction=False) as pipe:
                answers = (pipe.set("epoch", "e", condition=coredis.PureToken.NX, get=True), pipe.xinfo_stream("s"),
                           pipe.xrange("s", "(" + last.decode(), "+", count=11))
            return [await answer for answer in answers]

        return await measure(f"coredis {coredis.__version__} (anyio)", pipeline, lambda: client.get("epoch"), calls)


async def with_native(url: str, last: bytes, calls: int) -> dict:
    client = await Redis.connect(url, pool_size=16)
    try:
        async def pipeline():
            return await client.execute([("SET", "epoch", "e", "NX", "GET"), ("XINFO", "STREAM", "s"),
                                         ("XRANGE", "s", b"(" + last, "+", "COUNT", 11)])

        return await measure("rtserver.backends.redis_client", pipeline, lambda: client.call("GET", "epoch"), calls)
    finally:
        client.close()


def main(args) -> None:
    port, folder = free_port(), tempfile.mkdtemp(prefix="rt-bench-")
    server = start_redis(port, folder)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        backbone = redis.Redis.from_url(url)
        pipe = backbone.pipeline(transaction=False)
        for i in range(5000):
            pipe.xadd("s", {"event": "rt.probe", "data": json.dumps({"s": i, "p": PAD})})
        pipe.execute()
        last = backbone.xinfo_stream("s")["last-generated-id"]
        for run in (with_redis_py, with_coredis, with_native):
            result = trio.run(run, url, last, args.calls)
            if result is not None:
                print(json.dumps(result), flush=True)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    main(parser.parse_args())
