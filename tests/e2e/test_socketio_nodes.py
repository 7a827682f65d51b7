"""Socket.IO without sticky sessions (docs/socketio.md): the requests of one long-polling
session land on any node of a Redis bus and are relayed to the node holding it, and its
upgrade to WebSocket on another node takes the session over there, nothing lost. Raw
Engine.IO requests aimed at each node in turn, then socket.io-client (Node, from npm)
behind Debian's nginx balancing three nodes round robin."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, connect_websocket_url

from tests.support.balancer import round_robin
from tests.support.events import alert
from tests.support.metrics import scraped
from tests.support.net import wait_port
from tests.support.nodes import Server, start_node
from tests.support.redis_servers import flush_redis
from tests.support.socketio_clients import next_message, open_socketio_clients


@pytest.fixture
async def nodes(nursery, redis_url) -> list[Server]:
    flush_redis(redis_url)
    return [await start_node(nursery, redis_url, socketio={"ping_interval_ms": 500, "ping_timeout_ms": 5000})
            for _ in range(3)]


def polling(node: Server, sid: str) -> str:
    return f"{node.http}/socket.io/?EIO=4&transport=polling&sid={sid}"


async def poll_until(http: httpx.AsyncClient, nodes: list[Server], sid: str, prefix: str) -> list[str]:
    """GET from each node in turn (pongs POSTed back) until a packet starts with ``prefix``:
    the packets that came, that one last."""
    seen = []
    with trio.fail_after(10):
        for turn in range(1000):
            answer = await http.get(polling(nodes[turn % len(nodes)], sid))
            assert answer.status_code == 200, answer.text
            for packet in answer.text.split("\x1e"):
                if packet == "2":
                    assert (await http.post(polling(nodes[(turn + 1) % len(nodes)], sid), content="3")).text == "ok"
                    continue
                seen.append(packet)
                if packet.startswith(prefix):
                    return seen
    raise AssertionError(f"no {prefix!r} packet")


async def test_each_request_of_a_polling_session_may_land_on_any_node_and_its_upgrade_on_another(nursery, nodes):
    first, second, third = nodes
    async with httpx.AsyncClient() as http:
        opened = await http.get(f"{first.http}/socket.io/?EIO=4&transport=polling")
        sid = json.loads(opened.text[1:])["sid"]
        connect = f'40/hub,{json.dumps({"token": first.token()})}'
        assert (await http.post(polling(second, sid), content=connect)).text == "ok"
        answer = (await poll_until(http, [third], sid, "40/hub,"))[-1]
        assert set(json.loads(answer[len("40/hub,"):])) == {"sid", "pid"}
        subscribe = '42/hub,1["subscribe_patient",{"patientId":"p7"}]'
        assert (await http.post(polling(second, sid), content=subscribe)).text == "ok"
        ack = (await poll_until(http, [third, first], sid, "43/hub,1"))[-1]
        assert json.loads(ack[len("43/hub,1"):])[0]["status"] == "subscribed"
        await first.publish(alert(1, "patient:p7"))
        event = (await poll_until(http, [second, third], sid, "42/hub,"))[-1]
        assert json.loads(event[len("42/hub,"):])[1]["id"] == "a1"

        # The upgrade, on the third node: the probe ends the GET pending on another node
        # with a noop; what is queued meanwhile (an ack, a durable event) follows on the socket.
        ws = await connect_websocket_url(
            nursery, f"ws://127.0.0.1:{third.port}/socket.io/?EIO=4&transport=websocket&sid={sid}")
        async with trio.open_nursery() as pending:
            got = []

            async def pending_get() -> None:
                got.append((await http.get(polling(second, sid))).text)

            pending.start_soon(pending_get)
            await ws.send_message("2probe")
            assert await ws.get_message() == "3probe"
        assert got == ["6"]
        join = '42/hub,2["join:thread",{"threadId":"th1"}]'
        assert (await http.post(polling(first, sid), content=join)).text == "ok"
        await second.publish(alert(2, "patient:p7"))
        await ws.send_message("5")
        assert (await next_message(ws)).startswith("43/hub,2[")  # the ack queued before the upgrade
        await third.publish(alert(3, "patient:p7"))
        await first.publish({"event": "thread:message", "tenant": "t1", "rooms": ["thread:th1"],
                             "data": {"threadId": "th1", "messageId": "m1", "text": "hi"}})
        events = [json.loads((await next_message(ws))[len("42/hub,"):]) for _ in range(3)]
        assert [(args[0], args[1].get("id") or args[1].get("messageId")) for args in events] == [
            ("critical_alert", "a2"), ("critical_alert", "a3"), ("thread:message", "m1")]
        await ws.send_message('42/hub,3["heartbeat"]')
        assert await next_message(ws) == '43/hub,3[{"status":"ok"}]'
        ended_here = await http.get(polling(first, sid))  # the node that opened it answers at once
        assert ended_here.status_code == 400 and ended_here.json() == {"code": 1, "message": "Session ID unknown"}
        moved = await http.get(polling(second, sid))  # another asks the node holding it now
        assert moved.status_code == 400 and "moved to its WebSocket" in moved.text
    assert await scraped(third.http, "rt_socketio_relayed_total", method="UPGRADE") == 1


async def test_socket_io_clients_behind_a_round_robin_balancer_need_no_affinity(nursery, nodes, tmp_path):
    clients = await open_socketio_clients(nursery)
    with round_robin(tmp_path, [node.port for node in nodes]) as nginx:
        await wait_port(nginx.port)
        ids = ["polling", "upgraded1", "upgraded2", "upgraded3"]
        for id in ids:
            transports = ["polling"] if id == "polling" else ["polling", "websocket"]
            await clients.connect(id, f"{nginx.http}/hub", {"token": nodes[0].token()}, transports=transports)
            assert (await clients.next(id, "connect"))["recovered"] is False
            answer = (await clients.call(id, "subscribe_patient", {"patientId": "p7"}))["answer"]
            assert answer["status"] == "subscribed"
        for id in ids[1:]:
            assert (await clients.next(id, "upgrade"))["transport"] == "websocket"
        for i in range(6):
            await nodes[i % 3].publish(alert(i, "patient:p7"))
        for id in ids:
            assert [(await clients.event(id, "critical_alert"))[0]["id"] for _ in range(6)] == [
                f"a{i}" for i in range(6)]
            assert (await clients.call(id, "heartbeat"))["answer"] == {"status": "ok"}
        assert len(set(nginx.upstreams("transport=polling", "sid="))) == 3  # one session's requests, three nodes
        assert sum([await scraped(node.http, "rt_socketio_relayed_total", method="GET") for node in nodes]) > 0


async def test_requests_of_a_session_no_node_holds_are_refused_once_no_node_answers(nursery, redis_url):
    flush_redis(redis_url)
    node = await start_node(nursery, redis_url, socketio={"ping_interval_ms": 200, "ping_timeout_ms": 1000})
    async with httpx.AsyncClient() as http:
        for request in (http.get(polling(node, "nobody")), http.post(polling(node, "nobody"), content="3")):
            refused = await request
            assert refused.status_code == 400 and refused.json() == {"code": 1, "message": "Session ID unknown"}
    upgrade = f"ws://127.0.0.1:{node.port}/socket.io/?EIO=4&transport=websocket&sid=nobody"
    probing, silent = await connect_websocket_url(nursery, upgrade), await connect_websocket_url(nursery, upgrade)
    await probing.send_message("2probe")
    for ws in (probing, silent):  # no holder answers the probe; the silent one is past the upgrade's deadline
        with trio.fail_after(10), pytest.raises(ConnectionClosed):
            await ws.get_message()
