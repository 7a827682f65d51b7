"""A failure injected into each kind of handler stays in that request or connection: it is
answered as documented (HTTP 500 JSON with a correlation id, close 1011, an SSE or poll
``close``), counted in ``rt_internal_errors_total{where}``, and every other client of the
node goes on being served."""

from __future__ import annotations

import httpx
import pytest
import trio

from actors.poll import PollRequest
from actors.sse import SseStream
from actors.websocket import WebSocketConnection
from rtserver.backends.presence import MemoryPresence
from rtserver.client import Closed, open_client
from rtserver.gateway import Gateway
from rtserver.listener import Listener
from rtserver.node import Node
from tests.support.events import appointment
from tests.support.http_clients import command, open_sse, poll
from tests.support.metrics import metric_value
from tests.support.nodes import Server, server_config


class Injected(Exception):
    """The failure a test puts into a handler."""


async def fail(*args, **kwargs):
    raise Injected("injected failure")


def fail_now(*args, **kwargs):
    raise Injected("injected failure")


@pytest.fixture
async def server(nursery) -> Server:
    node = Node(server_config(connection={"poll_timeout_s": 1.0}, server={"drain_deadline_s": 2.0}))
    return Server(node, await nursery.start(node.run))


@pytest.fixture
async def sentinel(server):
    """A client connected before any failure is injected, in ``professional:1``."""
    async with open_client(server.ws(), server.token(user="sentinel")) as client:
        await client.subscribe("professional:1")
        yield client


async def assert_still_serving(server: Server, sentinel) -> None:
    """The sentinel (connected before the failure) still gets a pong and a new event."""
    assert (await sentinel.ping())["op"] == "pong"
    assert (await server.publish(appointment("after"))).status_code == 200
    with trio.fail_after(5):
        assert (await sentinel.next_event())["data"]["appointmentId"] == "after"


def internal_errors(server: Server, where: str) -> float:
    return metric_value(server.node.metrics.internal_errors, where=where)


def assert_internal_error_answer(response: httpx.Response) -> None:
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == 500 and body["message"] == "internal error" and len(body["id"]) == 16


async def test_a_failing_websocket_handler_closes_that_connection_with_1011(server, sentinel, monkeypatch):
    monkeypatch.setattr(WebSocketConnection, "_on_emit", fail)
    async with open_client(server.ws(), server.token()) as victim:
        with pytest.raises(Closed) as closed:
            await victim.emit("heartbeat")
    assert closed.value.code == 1011
    assert internal_errors(server, "websocket") == 1
    await assert_still_serving(server, sentinel)


async def test_a_failing_sse_stream_ends_with_a_close_event_1011(server, sentinel, monkeypatch):
    monkeypatch.setattr(SseStream, "_serve", fail)
    async with open_sse(server.http, server.token()) as sse:
        assert (await sse.next()).data["op"] == "hello"
        close = await sse.next()
    assert close.event == "close" and close.data["code"] == 1011 and close.data["action"] == "resume"
    assert internal_errors(server, "sse") == 1
    await assert_still_serving(server, sentinel)


async def test_a_failing_poll_answers_with_a_close_1011(server, sentinel, monkeypatch):
    monkeypatch.setattr(PollRequest, "_serve", fail)
    async with httpx.AsyncClient(base_url=server.http) as http:
        answer = (await poll(http, server.token())).json()
    assert answer["close"]["code"] == 1011
    assert internal_errors(server, "poll") == 1
    await assert_still_serving(server, sentinel)


@pytest.mark.parametrize("where, target, attribute", [
    ("publish", Gateway, "publish"),
    ("commands", "rtserver.http.run_command", None),
    ("http:events", Gateway, "catch_up"),
    ("http:presence", MemoryPresence, "snapshot"),
    ("handshake", Listener, "_accept_websocket"),
])
async def test_a_failing_request_is_answered_500_with_a_correlation_id(server, sentinel, monkeypatch, where, target,
                                                                      attribute):
    cursor = (await sentinel.subscribe("professional:2"))["cursor"]
    if attribute is None:
        monkeypatch.setattr(target, fail)
    else:
        monkeypatch.setattr(target, attribute, fail_now if where == "handshake" else fail)
    headers = {"authorization": f"Bearer {server.token()}"}
    async with httpx.AsyncClient(base_url=server.http, headers=headers) as http:
        if where == "publish":
            response = await server.publish(appointment(1))
        elif where == "commands":
            response = await command(server.http, server.token(), {"op": "emit", "event": "heartbeat"})
        elif where == "http:events":
            response = await http.get("/hub/events", params={"rooms": "professional:1", "since": cursor})
        elif where == "http:presence":
            response = await http.get("/hub/presence", params={"group": "attendants"})
        else:
            response = await http.get(server.ws().replace("ws://", "http://"), headers={
                "upgrade": "websocket", "connection": "Upgrade", "sec-websocket-version": "13",
                "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert_internal_error_answer(response)
    assert internal_errors(server, where) == 1
    monkeypatch.undo()
    await assert_still_serving(server, sentinel)


async def test_a_failure_while_draining_one_connection_still_drains_the_others(server, monkeypatch):
    async with open_client(server.ws(), server.token(user="a")) as a, open_client(server.ws(), server.token()) as b:
        original = WebSocketConnection.close

        def close(connection, disconnect):  # one connection's close fails
            if connection.claims.user == "a":
                raise Injected("injected failure")
            original(connection, disconnect)

        monkeypatch.setattr(WebSocketConnection, "close", close)
        with trio.fail_after(10):
            await server.node.drain()
        with pytest.raises(Closed) as closed:
            await b.next_event()
        assert closed.value.code == 4000
        assert internal_errors(server, "drain") == 1
        assert (await a.ping())["op"] == "pong"  # left open, not taken down with the rest
