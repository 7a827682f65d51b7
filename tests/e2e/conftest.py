"""A real node on a dynamic loopback port, real WebSocket (trio-websocket) and HTTP (httpx) clients."""

from __future__ import annotations

import secrets

import pytest

from rtserver.node import Node
from rtserver.outbox import migrate
from tests.support.nodes import Server, server_config
from tests.support.outbox import SHARDS, Outbox
from tests.support.postgres import PostgresServer
from tests.support.redis_servers import flush_redis


@pytest.fixture
async def server(nursery) -> Server:
    node = Node(server_config())
    port = await nursery.start(node.run)
    return Server(node, port)


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer()
    server.start()
    yield server
    server.remove()


@pytest.fixture
async def outbox(postgres, redis_url, aio_loop) -> Outbox:
    flush_redis(redis_url)
    dsn = postgres.create_database(f"outbox_{secrets.token_hex(4)}")
    await migrate(dsn, SHARDS)
    return Outbox(dsn, redis_url)
