"""A backbone's outbox for the relay tests: a migrated PostgreSQL database, the Redis the
relay appends to, and the backbone's writes."""

from __future__ import annotations

import json
import secrets

import asyncpg
import trio
from trio_asyncio import aio_as_trio

from protocol.cursors import shard_of
from rtserver.backends.config import load_config
from rtserver.outbox.relay import Relay
from tests.support.redis_servers import plain_redis

SHARDS = 16
FAST = {"poll_interval_s": 0.2, "standby_poll_s": 0.3, "batch": 50}
T1_STREAM = f"rt:{{{shard_of('t1', SHARDS)}}}:events"



class Outbox:
    """A migrated database, the Redis the relay appends to, and a backbone's writes."""

    def __init__(self, dsn: str, redis_url: str) -> None:
        self.dsn, self.redis_url = dsn, redis_url
        self.redis = plain_redis(redis_url)

    def config(self, **outbox):
        return load_config(environ={}, overrides={
            "outbox": {"postgres_dsn": self.dsn, **FAST, **outbox}, "bus": {"redis_url": self.redis_url}})

    def relay(self, **outbox) -> Relay:
        config = self.config(**outbox)
        return Relay(config)

    async def connect(self) -> asyncpg.Connection:
        return await aio_as_trio(asyncpg.connect)(self.dsn)

    async def write(self, conn, tenant: str = "t1", event: str = "appointment.created", rooms=("schedule:42",),
                    traceparent: str | None = None, **data) -> str:
        """One outbox row in the connection's current transaction; its event id."""
        return await aio_as_trio(conn.fetchval)(
            "INSERT INTO outbox_events (tenant, event, rooms, data, traceparent) VALUES ($1, $2, $3, $4, $5)"
            " RETURNING event_id", tenant, event, json.dumps(list(rooms)), json.dumps(data), traceparent)

    async def commit_rows(self, count: int, tenant: str = "t1", per_transaction: int = 10) -> list[str]:
        """``count`` rows in transactions of ``per_transaction``; their event ids in commit order."""
        conn = await self.connect()
        ids = [secrets.token_hex(8) for _ in range(count)]
        try:
            for start in range(0, count, per_transaction):
                async with aio_as_trio(conn.transaction()):
                    await aio_as_trio(conn.executemany)(
                        "INSERT INTO outbox_events (event_id, tenant, event, rooms, data)"
                        " VALUES ($1, $2, 'appointment.created', '[\"schedule:42\"]', $3)",
                        [(ids[i], tenant, json.dumps({"appointmentId": f"a{i}"}))
                         for i in range(start, min(count, start + per_transaction))])
        finally:
            await aio_as_trio(conn.close)()
        return ids

    def stream_ids(self, key: str = T1_STREAM) -> list[str]:
        """The ``id`` field of every entry of a stream, in stream order."""
        return [fields[b"id"].decode() for _, fields in self.redis.xrange(key)]

    async def wait_stream(self, count: int, key: str = T1_STREAM, timeout: float = 30,
                          poll_s: float = 0.05) -> list[str]:
        """The stream's ids once it holds ``count`` entries or more."""
        with trio.fail_after(timeout):
            while self.redis.xlen(key) < count:
                await trio.sleep(poll_s)
        return self.stream_ids(key)
