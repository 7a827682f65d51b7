"""The seeds' Socket.IO frontends on rtserver: socket.io-client v4 (Node, from npm) against
a real node, WebSocket transport: namespaces with the token in ``auth``, refusals as
``connect_error``, events by name, the seeds' client events with acks, and connection
state recovery on the same node and on another one (docs/socketio.md)."""

from __future__ import annotations

import pytest

from rtserver.node import Node
from tests.support.net import TcpProxy
from tests.support.nodes import Server, server_config, start_node
from tests.support.redis_servers import flush_redis
from tests.support.socketio_clients import open_socketio_clients

ALERT = {"event": "critical_alert", "tenant": "t1", "rooms": ["tenant:t1"],
         "data": {"id": "a1", "patientId": "p1", "type": "symptom", "severity": "high"}}


def alert(i: int, room: str = "tenant:t1") -> dict:
    return {**ALERT, "rooms": [room], "data": {**ALERT["data"], "id": f"a{i}"}}


@pytest.fixture
async def server(nursery) -> Server:
    node = Node(server_config())
    return Server(node, await nursery.start(node.run))


@pytest.fixture
async def clients(nursery):
    return await open_socketio_clients(nursery)


async def connected(clients, server: Server, id: str = "c1", ns: str = "/hub", token: str | None = None) -> dict:
    await clients.connect(id, f"{server.http}{ns}", {"token": token or server.token()})
    return await clients.next(id, "connect")


async def test_a_namespace_admits_the_token_in_auth_and_delivers_events_by_name(server, clients):
    hello = await connected(clients, server)
    assert hello["recovered"] is False and hello["sid"]
    published = await server.publish(ALERT)
    assert published.status_code == 200
    data, meta, cursor = await clients.event("c1", "critical_alert")
    assert data == ALERT["data"]
    assert meta == {"room": "tenant:t1", "id": published.json()["id"], "ts": meta["ts"], "cursor": cursor}
    assert cursor == published.json()["cursor"]


async def test_refused_tokens_and_namespaces_are_connect_errors_with_rtserver_codes(server, clients):
    await clients.connect("none", f"{server.http}/hub", {})
    refused = await clients.next("none", "connect_error")
    assert refused["message"] == "no token" and refused["data"] == {"code": 4401, "action": "stop"}
    await clients.connect("patient", f"{server.http}/hub", {"token": server.token("p1", roles=("patient",))})
    refused = await clients.next("patient", "connect_error")
    assert refused["data"]["code"] == 4403
    await clients.connect("nowhere", f"{server.http}/nowhere", {"token": server.token()})
    assert (await clients.next("nowhere", "connect_error"))["message"] == "Invalid namespace"


async def test_the_seeds_client_events_map_to_subscriptions_and_commands_with_acks(server, clients):
    await connected(clients, server)
    answer = (await clients.call("c1", "subscribe_patient", {"patientId": "p7"}))["answer"]
    assert answer["status"] == "subscribed" and answer["room"] == "patient:p7" and answer["patientId"] == "p7"
    await server.publish(alert(1, "patient:p7"))
    data, meta, _ = await clients.event("c1", "critical_alert")
    assert meta["room"] == "patient:p7" and data["id"] == "a1"
    assert (await clients.call("c1", "unsubscribe_patient", {"patientId": "p7"}))["answer"] == {
        "status": "unsubscribed", "room": "patient:p7", "patientId": "p7"}
    assert (await clients.call("c1", "heartbeat"))["answer"] == {"status": "ok"}
    assert (await clients.call("c1", "mark_alert_read", {"alertId": "a1"}))["answer"] == {"status": "ok"}
    refused = (await clients.call("c1", "subscribe", {"room": "tenant:t2"}))["answer"]
    assert refused["error"]["code"] == 103
    assert (await clients.call("c1", "no_such_event", {}))["answer"]["error"]["message"].startswith("unknown event")
    # Nothing of the unsubscribed room, then the next event: the sentinel.
    await server.publish(alert(2, "patient:p7"))
    await server.publish(alert(3))
    data, meta, _ = await clients.event("c1", "critical_alert")
    assert (meta["room"], data["id"]) == ("tenant:t1", "a3")


async def test_a_namespace_carries_only_its_events_and_one_socket_holds_several(server, clients):
    await connected(clients, server, "alerts", ns="/alerts")
    await connected(clients, server, "hub", ns="/hub")
    await server.publish({"event": "appointment.created", "tenant": "t1", "rooms": ["tenant:t1"],
                          "data": {"appointmentId": "ap1"}})
    await server.publish(alert(1))
    assert (await clients.event("hub", "appointment.created"))[0] == {"appointmentId": "ap1"}
    assert (await clients.event("hub", "critical_alert"))[0]["id"] == "a1"
    assert (await clients.event("alerts", "critical_alert"))[0]["id"] == "a1"
    assert clients.events("alerts") == []  # the appointment came before the alert: it was not sent


async def test_a_dropped_client_recovers_every_missed_event_once_in_order(server, clients):
    await connected(clients, server)
    await server.publish(alert(1))
    await clients.event("c1", "critical_alert")
    await clients.drop("c1")
    await clients.next("c1", "disconnect")
    for i in range(2, 6):
        await server.publish(alert(i))
    again = await clients.next("c1", "connect")
    assert again["recovered"] is True
    assert [(await clients.event("c1", "critical_alert"))[0]["id"] for _ in range(4)] == ["a2", "a3", "a4", "a5"]
    await server.publish(alert(6))
    assert (await clients.event("c1", "critical_alert"))[0]["id"] == "a6"


async def test_a_client_that_got_no_event_before_it_dropped_recovers_too(server, clients):
    await connected(clients, server)
    await clients.drop("c1")
    await clients.next("c1", "disconnect")
    await server.publish(alert(1))
    assert (await clients.next("c1", "connect"))["recovered"] is True
    assert (await clients.event("c1", "critical_alert"))[0]["id"] == "a1"


async def test_recovery_works_on_another_node(nursery, redis_url, clients):
    flush_redis(redis_url)
    first, second = await start_node(nursery, redis_url), await start_node(nursery, redis_url)
    proxy = TcpProxy(first.port)  # the balancer in front of both
    await clients.connect("c1", f"http://127.0.0.1:{proxy.port}/hub", {"token": first.token()})
    await clients.next("c1", "connect")
    await first.publish(alert(1))
    await clients.event("c1", "critical_alert")
    proxy.target = ("127.0.0.1", second.port)
    proxy.cut(0.5)  # its node is gone: the client comes back through the balancer, on the other node
    await clients.next("c1", "disconnect")
    for i in (2, 3):
        await first.publish(alert(i))
    assert (await clients.next("c1", "connect"))["recovered"] is True
    assert [(await clients.event("c1", "critical_alert"))[0]["id"] for _ in range(2)] == ["a2", "a3"]
    await second.publish(alert(4))
    assert (await clients.event("c1", "critical_alert"))[0]["id"] == "a4"
