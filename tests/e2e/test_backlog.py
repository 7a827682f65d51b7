"""A client far behind resumes: 8,000 missed events of 1.4 KB (more than the 8 MiB outbound
budget at once) are replayed under flow control over WebSocket, SSE and long-polling, and
the live events published during the replay follow with no gap and no duplicate."""

from __future__ import annotations

import httpx
import pytest
import trio

from protocol.envelope import Envelope
from rtserver.client import open_client
from rtserver.node import Node
from tests.support.http_clients import open_sse, poll
from tests.support.nodes import Server, server_config

MISSED, LIVE = 8000, 50
PADDING = "x" * 1400


@pytest.fixture
async def server(nursery) -> Server:
    node = Node(server_config())
    return Server(node, await nursery.start(node.run))


async def publish(server: Server, numbers: range) -> None:
    for n in numbers:
        await server.node.gateway.publish(Envelope(event="rt.probe", tenant="t1", rooms=["probe:1"],
                                           data={"t": 0, "s": n, "p": PADDING}))


async def cursor_before_the_backlog(server: Server) -> str:
    """A client's cursor after event 0; then the 8,000 events it misses."""
    async with open_client(server.ws() + "?rooms=probe:1", server.token()) as client:
        await publish(server, range(1))
        with trio.fail_after(5):
            await client.next_event()
        cursor = client.cursor
    await publish(server, range(1, MISSED + 1))
    return cursor


async def live_during_the_replay(server: Server) -> None:
    """Published once the resume was answered and before its client read the replay (11 MB:
    the server is still replaying, page by page, behind the client's full socket)."""
    await publish(server, range(MISSED + 1, MISSED + LIVE + 1))


def assert_every_event_once(numbers: list[int]) -> None:
    assert numbers == list(range(1, MISSED + LIVE + 1))


async def test_a_websocket_far_behind_catches_up_then_goes_live(server):
    cursor = await cursor_before_the_backlog(server)
    async with open_client(server.ws() + "?rooms=probe:1", server.token(), since=cursor) as client:
        assert client.hello["recovered"] is True
        await live_during_the_replay(server)
        got = []
        with trio.fail_after(60):
            while not got or got[-1] < MISSED + LIVE:
                got.append((await client.next_event())["data"]["s"])
    assert_every_event_once(got)


async def test_an_sse_stream_far_behind_catches_up_then_goes_live(server):
    cursor = await cursor_before_the_backlog(server)
    async with open_sse(server.http, server.token(), rooms="probe:1", since=cursor) as sse:
        hello = (await sse.next()).data
        assert hello["op"] == "hello" and hello["recovered"] is True
        await live_during_the_replay(server)
        got = []
        with trio.fail_after(60):
            while not got or got[-1] < MISSED + LIVE:
                got.append((await sse.next_event()).data["data"]["s"])
    assert_every_event_once(got)


async def test_long_polls_far_behind_catch_up_from_answer_to_answer(server):
    cursor = await cursor_before_the_backlog(server)
    got, answers = [], 0
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
        with trio.fail_after(60):
            while not got or got[-1] < MISSED + LIVE:
                answer = (await poll(http, server.token(), rooms="probe:1", since=cursor)).json()
                assert "close" not in answer and answer.get("recovered") is not False
                got += [event["data"]["s"] for event in answer["events"]]
                cursor, answers = answer["cursor"], answers + 1
                if answers == 1:  # the backlog is not all answered yet
                    await live_during_the_replay(server)
    assert answers > 1  # the backlog did not fit one answer's budget
    assert_every_event_once(got)
