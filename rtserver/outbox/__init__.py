"""The transactional outbox in PostgreSQL: its schema, and what the relay and its tests share.

``schema.sql`` is the migration (documented for the backbone that writes the table);
``migrate`` applies it with this deployment's shard count. Advisory lock classes (the
two-key form ``pg_advisory_lock(class, shard)``): ``SEQUENCING_LOCK`` is taken by every
committing outbox writer, ``LEADER_LOCK`` by the relay leading a shard; a backbone's own
advisory locks must use other classes.
"""

from __future__ import annotations

from importlib.resources import files

import asyncpg
from trio_asyncio import aio_as_trio

SCHEMA_VERSION = 1
#: Advisory lock classes: ASCII "rtsq" and "rtld".
SEQUENCING_LOCK = 0x72747371
LEADER_LOCK = 0x72746C64
#: LISTEN/NOTIFY channel: a committing transaction names the shards it wrote (a hint only).
CHANNEL = "rt_outbox"


class OutboxSchemaError(RuntimeError):
    """The database has no outbox, an older one, or one made for another shard count."""


def schema_sql(shards: int) -> str:
    """The migration, for a deployment with ``shards`` stream shards."""
    text = (files(__package__) / "schema.sql").read_text()
    return (text.replace("{shards}", str(int(shards)))
                .replace("{sequencing_lock}", str(SEQUENCING_LOCK))
                .replace("{channel}", CHANNEL))


async def migrate(dsn: str, shards: int) -> None:
    """Create or bring up to date the outbox schema (idempotent; runs in one transaction).
    Refuses a database whose outbox was made for another shard count."""
    conn = await aio_as_trio(asyncpg.connect)(dsn)
    try:
        async with aio_as_trio(conn.transaction()):
            await aio_as_trio(conn.execute)("SELECT pg_advisory_xact_lock($1, -1)", LEADER_LOCK)
            existing = await _shards(conn)
            if existing is not None and existing != shards:
                raise OutboxSchemaError(f"the outbox was made for {existing} shards; bus.shards is {shards}")
            await aio_as_trio(conn.execute)(schema_sql(shards))
            await aio_as_trio(conn.execute)(
                "INSERT INTO rt_outbox_settings (shards) SELECT $1 WHERE NOT EXISTS (SELECT FROM rt_outbox_settings)",
                shards)
    finally:
        await aio_as_trio(conn.close)()


async def check_schema(conn: asyncpg.Connection, shards: int) -> str:
    """The outbox's id; ``OutboxSchemaError`` unless it is migrated, current, and for ``shards``."""
    existing = await _shards(conn)
    if existing is None:
        raise OutboxSchemaError("the database has no outbox: run `rtserver relay migrate` first")
    version = await aio_as_trio(conn.fetchval)("SELECT max(version) FROM rt_schema_migrations")
    if version != SCHEMA_VERSION:
        raise OutboxSchemaError(f"outbox schema version {version}, this relay needs {SCHEMA_VERSION}: "
                                "run `rtserver relay migrate`")
    if existing != shards:
        raise OutboxSchemaError(f"the outbox was made for {existing} shards; bus.shards is {shards}")
    return await aio_as_trio(conn.fetchval)("SELECT outbox_id FROM rt_outbox_settings")


async def _shards(conn: asyncpg.Connection) -> int | None:
    if not await aio_as_trio(conn.fetchval)("SELECT to_regclass('rt_outbox_settings') IS NOT NULL"):
        return None
    return await aio_as_trio(conn.fetchval)("SELECT shards FROM rt_outbox_settings")
