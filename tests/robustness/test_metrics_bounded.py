"""No metric label comes from client input before it is validated: thousands of emits
with unknown event names leave the number of series as it was."""

from __future__ import annotations

import httpx
import pytest

from rtserver.client import CommandError, open_client
from rtserver.node import Node
from tests.support.http_clients import command
from tests.support.nodes import Server, server_config


@pytest.fixture
async def server(nursery) -> Server:
    node = Node(server_config(connection={"inbound_rate": 100000.0, "inbound_burst": 100000}))
    return Server(node, await nursery.start(node.run))


def series(metrics_text: str) -> list[str]:
    return [line.rsplit(" ", 1)[0] for line in metrics_text.splitlines() if line and not line.startswith("#")]


async def test_thousands_of_unknown_emits_add_no_series(server):
    async with open_client(server.ws(), server.token()) as client, httpx.AsyncClient(base_url=server.http) as http:
        with pytest.raises(CommandError):  # the first one brings the "unknown" series
            await client.emit("never-heard-of-0")
        before = series((await http.get("/metrics")).text)
        for n in range(1, 1001):
            with pytest.raises(CommandError) as refused:
                await client.emit(f"never-heard-of-{n}")
            assert refused.value.code == 104  # UNKNOWN_EVENT
        for batch in range(50):  # and 3,200 more by HTTP, 64 to a request
            frames = [{"op": "emit", "event": f"http-{batch}-{n}", "ref": n} for n in range(64)]
            replies = (await command(server.http, server.token(), frames)).json()
            assert {reply["code"] for reply in replies} == {104}
        after = series((await http.get("/metrics")).text)
    assert after == before
    assert 'rt_messages_in_total{kind="unknown"}' in "\n".join(after)
