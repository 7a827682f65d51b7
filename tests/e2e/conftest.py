"""A real node on a dynamic loopback port, real WebSocket (trio-websocket) and HTTP (httpx) clients."""

from __future__ import annotations

import pytest

from rtserver.node import Node
from tests.support.nodes import Server, server_config


@pytest.fixture
async def server(nursery) -> Server:
    node = Node(server_config())
    port = await nursery.start(node.run)
    return Server(node, port)
