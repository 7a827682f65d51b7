"""The outbox relay: rows/s relayed, and commit-to-client latency.

Starts a PostgreSQL server (fsync on: commits are durable, as in production), a
redis-server, one ``rtserver serve`` node on that Redis and one ``rtserver relay``
process, each a process of its own.

1. Backlog: ``--rows`` rows are committed (transactions of 100) while the relay is
   stopped, then it starts; rows/s = rows / time from the first entry in the stream to
   the last (the process's start is not counted).
2. Live: a backbone commits one-row transactions at ``--rate``/s for ``--seconds``
   while a WebSocket client of the node is subscribed to the rows' room; commit-to-client
   latency = the client's receive time - the time ``COMMIT`` returned to the writer (one
   process, one clock). Reported: p50, p99, max, and that every row arrived once.

    .venv/bin/python bench/relay_outbox.py [--rows 50000] [--rate 200] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time

import trio
import trio_asyncio
from stack import SECRET, cpu_seconds, stack
from trio_asyncio import aio_as_trio

import asyncpg
from protocol.cursors import Cursor, shard_of
from rtserver.backends.auth import mint_token
from rtserver.backends.bus.redis import stream_key
from rtserver.client import open_client
from rtserver.outbox import migrate
from tests.support.postgres import PostgresServer

ROOM = "probe:relay"
STREAM = stream_key(shard_of("t1", 16))  # every row is tenant t1's


def start_relay(folder: str, dsn: str, redis_url: str) -> subprocess.Popen:
    config = os.path.join(folder, "relay.toml")
    with open(config, "w") as f:
        f.write(f'[outbox]\npostgres_dsn = "{dsn}"\n[bus]\nredis_url = "{redis_url}"\n[log]\nlevel = "warning"\n')
    return subprocess.Popen([sys.executable, "-m", "rtserver", "relay", "--config", config],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def backlog(dsn: str, redis_url: str, folder: str, rows: int) -> None:
    import redis

    conn = await aio_as_trio(asyncpg.connect)(dsn)
    body = json.dumps({"t": 0, "s": 0, "p": "x" * 150})
    for start in range(0, rows, 100):
        async with aio_as_trio(conn.transaction()):
            await aio_as_trio(conn.executemany)(
                "INSERT INTO outbox_events (tenant, event, rooms, data) VALUES ('t1', 'rt.probe', $1, $2)",
                [(json.dumps(["probe:backlog"]), body)] * min(100, rows - start))
    await aio_as_trio(conn.close)()
    plain = redis.Redis.from_url(redis_url)
    relay = start_relay(folder, dsn, redis_url)
    try:
        while not plain.xlen(STREAM):  # the process starts (not measured)
            await trio.sleep(0.001)
        started, cpu = time.perf_counter(), cpu_seconds(relay.pid)
        while plain.xlen(STREAM) < rows:
            await trio.sleep(0.01)
        seconds, cpu = time.perf_counter() - started, cpu_seconds(relay.pid) - cpu
        print(f"backlog: {rows:,} rows relayed in {seconds:.2f} s = {rows / seconds:,.0f} rows/s "
              f"(from the first entry appended to the last; relay CPU {cpu:.2f} s = {cpu / rows * 1e6:.0f} µs/row)")
    finally:
        relay.terminate()
        relay.wait(10)


async def live(dsn: str, redis_url: str, folder: str, node_port: int, rate: float, seconds: float) -> None:
    committed: dict[str, float] = {}
    received: dict[str, float] = {}
    appended: dict[str, float] = {}
    token = mint_token(SECRET, {"sub": "bench", "healthUnitTaxId": "t1", "roles": ["attendant"]}, ttl_s=3600)
    relay = start_relay(folder, dsn, redis_url)
    try:
        async with open_client(f"ws://127.0.0.1:{node_port}/hub/ws", token) as client:
            await client.subscribe(ROOM)
            conn = await aio_as_trio(asyncpg.connect)(dsn)
            total = int(rate * seconds)
            await aio_as_trio(conn.execute)(  # warm-up: the relay process is up and leading
                "INSERT INTO outbox_events (tenant, event, rooms, data) VALUES ('t1', 'rt.probe', $1, $2)",
                json.dumps([ROOM]), json.dumps({"t": 0, "s": -1, "p": ""}))
            with trio.fail_after(30):
                await client.next_event()

            async def receive() -> None:
                while len(received) < total:
                    evt = await client.next_event()
                    if evt["id"] in received:
                        raise SystemExit(f"event {evt['id']} arrived twice")
                    received[evt["id"]] = time.time()
                    appended[evt["id"]] = Cursor.parse(evt["cursor"])[2].ms / 1000  # Redis's clock: the XADD

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                start = trio.current_time()
                for i in range(total):
                    await trio.sleep_until(start + i / rate)
                    event_id = secrets.token_hex(8)
                    async with aio_as_trio(conn.transaction()):
                        await aio_as_trio(conn.execute)(
                            "INSERT INTO outbox_events (event_id, tenant, event, rooms, data)"
                            " VALUES ($1, 't1', 'rt.probe', $2, $3)",
                            event_id, json.dumps([ROOM]), json.dumps({"t": 0, "s": i, "p": "x" * 150}))
                    committed[event_id] = time.time()
                with trio.fail_after(30):
                    while len(received) < total:
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
            await aio_as_trio(conn.close)()
    finally:
        relay.terminate()
        relay.wait(10)
    assert set(received) == set(committed)
    print(f"live: {len(committed):,} one-row transactions at {rate:.0f}/s, each received once")
    for name, start, end in (("commit-to-client", committed, received), ("commit-to-XADD", committed, appended),
                             ("XADD-to-client", appended, received)):
        print(f"  {name}: {percentiles([(end[i] - start[i]) * 1000 for i in committed])}")


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    return (f"p50 {statistics.median(values):.1f} ms, p99 {values[int(len(values) * 0.99) - 1]:.1f} ms, "
            f"max {values[-1]:.1f} ms")


async def main(args) -> None:
    postgres = PostgresServer(durable=True)
    postgres.start()
    try:
        async with trio_asyncio.open_loop(), stack([True], "[log]\nlevel = \"warning\"\n") as processes:
            dsn = postgres.create_database("backlog")
            await migrate(dsn, 16)
            await backlog(dsn, processes.redis_url, processes.folder, args.rows)
            dsn = postgres.create_database("live")
            await migrate(dsn, 16)
            await live(dsn, processes.redis_url, processes.folder, processes.ports[0], args.rate, args.seconds)
    finally:
        postgres.remove()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    trio.run(main, parser.parse_args())
