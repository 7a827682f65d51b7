"""The seeds' Socket.IO frontends on rtserver: socket.io-client v4 (Node, from npm) and
python-socketio's client against a real node, WebSocket transport: namespaces with the token in ``auth``, refusals as
``connect_error``, events by name, the seeds' client events with acks, and connection
state recovery on the same node and on another one (docs/socketio.md)."""

from __future__ import annotations

import json
import queue
import re

import httpx
import pytest
import socketio
import trio
from trio_websocket import ConnectionClosed, connect_websocket_url

from rtserver.node import Node
from tests.support.events import alert
from tests.support.live_node import WebSocket, masked_frame
from tests.support.net import TcpProxy
from tests.support.nodes import Server, server_config, start_node
from tests.support.redis_servers import flush_redis
from tests.support.socketio_clients import next_message, open_socketio_clients

ALERT = alert(1)


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


async def test_a_dropped_client_recovers_every_missed_event_once_in_order_its_subscriptions_too(server, clients):
    await connected(clients, server)
    await clients.call("c1", "subscribe_patient", {"patientId": "p7"})
    await server.publish(alert(1))
    await clients.event("c1", "critical_alert")
    await clients.drop("c1")
    await clients.next("c1", "disconnect")
    for i in range(2, 6):
        await server.publish(alert(i, "patient:p7" if i % 2 else "tenant:t1"))
    again = await clients.next("c1", "connect")
    assert again["recovered"] is True
    got = [await clients.event("c1", "critical_alert") for _ in range(4)]
    assert [(data["id"], meta["room"]) for data, meta, _ in got] == [
        ("a2", "tenant:t1"), ("a3", "patient:p7"), ("a4", "tenant:t1"), ("a5", "patient:p7")]
    await server.publish(alert(6, "patient:p7"))  # still subscribed
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
    await clients.call("c1", "join:thread", {"threadId": "th1"})
    await first.publish(alert(1))
    await clients.event("c1", "critical_alert")
    proxy.target = ("127.0.0.1", second.port)
    proxy.cut(0.5)  # its node is gone: the client comes back through the balancer, on the other node
    await clients.next("c1", "disconnect")
    await first.publish(alert(2))
    await first.publish({"event": "thread:message", "tenant": "t1", "rooms": ["thread:th1"],
                         "data": {"threadId": "th1", "messageId": "m1", "text": "hi"}})
    assert (await clients.next("c1", "connect"))["recovered"] is True
    assert (await clients.event("c1", "critical_alert"))[0]["id"] == "a2"
    assert (await clients.event("c1", "thread:message"))[0]["messageId"] == "m1"
    await second.publish(alert(4))
    assert (await clients.event("c1", "critical_alert"))[0]["id"] == "a4"


# -- Engine.IO and protocol limits, with a raw WebSocket client -------------------------
@pytest.fixture
async def quick(nursery) -> Server:
    """A node whose Engine.IO heartbeat is quick (a ping every 200 ms, a second to pong)."""
    node = Node(server_config(socketio={"ping_interval_ms": 200, "ping_timeout_ms": 1000}))
    return Server(node, await nursery.start(node.run))


async def raw_socket(nursery, server: Server, token: str, ns: str = "/hub"):
    """A WebSocket that has opened an Engine.IO session and connected ``ns``; its CONNECT answer."""
    ws = await connect_websocket_url(nursery, f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket")
    handshake = await ws.get_message()
    assert handshake.startswith("0") and json.loads(handshake[1:])["pingInterval"] > 0
    await ws.send_message(f'40{ns},{json.dumps({"token": token})}')
    answer = await ws.get_message()
    assert answer.startswith(f"40{ns},")
    return ws, json.loads(answer[len(f"40{ns},"):])


async def test_the_server_pings_a_client_that_pongs_stays_one_that_does_not_is_closed(nursery, quick):
    ponging, _ = await raw_socket(nursery, quick, quick.token())
    silent, _ = await raw_socket(nursery, quick, quick.token())
    with trio.fail_after(5):
        for _ in range(4):  # four heartbeats, answered
            assert await ponging.get_message() == "2"
            await ponging.send_message("3")
        with pytest.raises(ConnectionClosed):
            while True:  # pings, never answered: closed
                assert await silent.get_message() == "2"
    await quick.publish(alert(1))
    with trio.fail_after(5):
        assert json.loads((await next_message(ponging))[len("42/hub,"):])[1]["id"] == "a1"


@pytest.mark.parametrize("packet", [
    "42/hub,{}",  # an EVENT's payload is an array
    '452-/hub,["x",{"_placeholder":true,"num":0}]',  # more attachments than placeholders
    '451-/hub,["x",{"_placeholder":true,"num":{"toString":"0"}}]',  # the 2022 type confusion
    '451-/hub,["x",{"_placeholder":true,"num":"0"}]',
    "4" + "9" * 30,
    "7",
])
async def test_a_packet_that_breaks_the_protocol_closes_that_socket_only(nursery, server, packet):
    bad, _ = await raw_socket(nursery, server, server.token())
    good, _ = await raw_socket(nursery, server, server.token())
    await bad.send_message(packet)
    if "_placeholder" in packet:
        for _ in range(int(packet[2])):  # the attachments it announced
            await bad.send_message(b"\x00")
    with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
        while True:
            await bad.get_message()
    assert closed.value.reason.code == 1002
    await server.publish(alert(1))
    with trio.fail_after(5):
        assert "a1" in await next_message(good)


async def test_drain_closes_the_socket_and_the_client_recovers_on_another_node(nursery, redis_url, clients):
    flush_redis(redis_url)
    first, second = await start_node(nursery, redis_url), await start_node(nursery, redis_url)
    proxy = TcpProxy(first.port)
    await clients.connect("c1", f"http://127.0.0.1:{proxy.port}/hub", {"token": first.token()})
    await clients.next("c1", "connect")
    await first.publish(alert(1))
    await clients.event("c1", "critical_alert")
    proxy.target = ("127.0.0.1", second.port)  # new connections go to the node that stays
    nursery.start_soon(first.node.drain)
    assert (await clients.next("c1", "disconnect"))["reason"] == "transport close"
    await second.publish(alert(2))
    assert (await clients.next("c1", "connect"))["recovered"] is True
    assert (await clients.event("c1", "critical_alert"))[0]["id"] == "a2"


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_python_socketio_client_connects_subscribes_and_receives(nursery, transport):
    """python-socketio's own client (PyPI), in a thread: the same wire, another implementation.
    (Its WebSocket library sends the server's own origin: allowed when no list is set.)"""
    node = Node(server_config(server={"allowed_origins": []}))
    server = Server(node, await nursery.start(node.run))
    received: queue.Queue = queue.Queue()
    client = socketio.Client(reconnection=False)
    client.on("critical_alert", lambda *args: received.put(args), namespace="/hub")
    await trio.to_thread.run_sync(lambda: client.connect(
        server.http, namespaces=["/hub"], auth={"token": server.token()}, transports=[transport], wait_timeout=5))
    try:
        answer = await trio.to_thread.run_sync(
            lambda: client.call("subscribe_patient", {"patientId": "p9"}, namespace="/hub", timeout=5))
        assert answer["status"] == "subscribed" and answer["patientId"] == "p9"
        published = await server.publish(alert(1, "patient:p9"))
        data, meta, cursor = await trio.to_thread.run_sync(lambda: received.get(timeout=10))
        assert (data["id"], meta["room"], cursor) == ("a1", "patient:p9", published.json()["cursor"])
        refused = await trio.to_thread.run_sync(
            lambda: client.call("subscribe", {"room": "tenant:t2"}, namespace="/hub", timeout=5))
        assert refused["error"]["code"] == 103
    finally:
        await trio.to_thread.run_sync(client.disconnect)


async def test_a_token_that_expires_ends_its_namespace_with_a_disconnect_the_app_acts_on(server, clients):
    await clients.connect("c1", f"{server.http}/hub", {"token": server.token(ttl_s=2)})  # exp is in whole seconds: 1-2 s left
    await clients.next("c1", "connect")
    assert (await clients.next("c1", "disconnect", timeout=10))["reason"] == "io server disconnect"


async def test_the_token_may_come_in_the_query_or_the_authorization_header_instead_of_auth(server, clients):
    await clients.connect("query", f"{server.http}/hub", {}, query={"access_token": server.token("q1")})
    await clients.next("query", "connect")
    await clients.connect("header", f"{server.http}/hub", {},
                          extraHeaders={"Authorization": f"Bearer {server.token('h1')}"})
    await clients.next("header", "connect")
    await clients.connect("both", f"{server.http}/hub", {"token": "not-a-token"}, query={"access_token": server.token()})
    assert (await clients.next("both", "connect_error"))["data"]["code"] == 4401  # auth.token comes first


def disconnect_and_connect_in_one_write(port: int, token: str) -> tuple[dict, str | bytes | None]:
    """Connect /hub, then DISCONNECT and CONNECT it again in one TCP write (blocking client)."""
    client = WebSocket(port, "/socket.io/?EIO=4&transport=websocket")
    try:
        assert str(client.next_raw()).startswith("0{")
        connect = f'40/hub,{json.dumps({"token": token})}'
        client.send_text(connect)
        first = json.loads(str(client.next_raw())[len("40/hub,"):])
        client.send_raw(masked_frame(0x1, b"41/hub,") + masked_frame(0x1, connect.encode()))
        return first, client.next_raw()
    finally:
        client.close()


async def test_a_namespace_disconnected_then_connected_again_at_once_is_a_new_session(server):
    first, answer = await trio.to_thread.run_sync(disconnect_and_connect_in_one_write, server.port, server.token())
    assert str(answer).startswith("40/hub,") and json.loads(answer[len("40/hub,"):])["sid"] != first["sid"]


# -- long-polling ------------------------------------------------------------------------
async def test_a_polling_client_connects_subscribes_receives_and_recovers(server, clients):
    await clients.connect("p1", f"{server.http}/hub", {"token": server.token()}, transports=["polling"])
    assert (await clients.next("p1", "connect"))["recovered"] is False
    answer = (await clients.call("p1", "subscribe_patient", {"patientId": "p7"}))["answer"]
    assert answer["status"] == "subscribed"
    await server.publish(alert(1, "patient:p7"))
    data, meta, cursor = await clients.event("p1", "critical_alert")
    assert (data["id"], meta["room"]) == ("a1", "patient:p7")
    await clients.drop("p1")
    await clients.next("p1", "disconnect")
    for i in (2, 3):
        await server.publish(alert(i, "patient:p7" if i == 2 else "tenant:t1"))
    assert (await clients.next("p1", "connect"))["recovered"] is True
    assert [(await clients.event("p1", "critical_alert"))[0]["id"] for _ in range(2)] == ["a2", "a3"]


async def test_polling_answers_the_heartbeat_and_refuses_unknown_sessions(nursery, quick, clients):
    await clients.connect("p1", f"{quick.http}/hub", {"token": quick.token()}, transports=["polling"])
    await clients.next("p1", "connect")
    await trio.sleep(1)  # five heartbeats of 200 ms, each answered over POST: still connected
    await quick.publish(alert(1))
    assert (await clients.event("p1", "critical_alert"))[0]["id"] == "a1"
    async with httpx.AsyncClient(base_url=quick.http) as http:
        unknown = await http.get("/socket.io/?EIO=4&transport=polling&sid=nope")
        assert unknown.status_code == 400 and unknown.json() == {"code": 1, "message": "Session ID unknown"}
        opened = await http.get("/socket.io/?EIO=4&transport=polling")
        assert opened.status_code == 200 and opened.text.startswith("0{")


async def test_a_client_on_default_transports_starts_polling_then_upgrades_to_websocket(server, clients):
    await clients.connect("d1", f"{server.http}/hub", {"token": server.token()}, transports=["polling", "websocket"])
    await clients.next("d1", "connect")
    answer = (await clients.call("d1", "subscribe_patient", {"patientId": "p7"}))["answer"]
    assert answer["status"] == "subscribed"
    assert (await clients.next("d1", "upgrade"))["transport"] == "websocket"
    await server.publish(alert(1, "patient:p7"))
    assert (await clients.event("d1", "critical_alert"))[0]["id"] == "a1"
    assert (await clients.call("d1", "heartbeat"))["answer"] == {"status": "ok"}
    await clients.drop("d1")
    await clients.next("d1", "disconnect")
    await server.publish(alert(2))
    assert (await clients.next("d1", "connect"))["recovered"] is True
    assert (await clients.event("d1", "critical_alert"))[0]["id"] == "a2"


async def test_commands_past_the_inbound_rate_are_refused_then_the_socket_is_closed(nursery):
    node = Node(server_config(connection={"inbound_rate": 1.0, "inbound_burst": 2, "rate_limit_close_after": 3}))
    server = Server(node, await nursery.start(node.run))
    ws, _ = await raw_socket(nursery, server, server.token())
    for ref in range(10):
        await ws.send_message(f'42/hub,{ref}["heartbeat"]')
    answers = []
    with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
        while True:
            answers.append(await next_message(ws))
    by_id = {}  # acks are matched by id: a refusal may come before the answer to an earlier command
    for answer in answers:
        ack_id, payload = re.fullmatch(r"43/hub,(\d+)(.*)", answer).groups()
        by_id[int(ack_id)] = json.loads(payload)
    assert by_id[0] == by_id[1] == [{"status": "ok"}]  # the burst
    assert by_id[2] == [{"error": {"code": 200, "message": "too many commands"}}]
    assert closed.value.reason.code == 4002  # after rate_limit_close_after refusals in a row


async def test_a_second_poll_at_once_is_refused_and_ends_the_session(server):
    async with httpx.AsyncClient(base_url=server.http) as http:
        opened = await http.get("/socket.io/?EIO=4&transport=polling")
        url = f"/socket.io/?EIO=4&transport=polling&sid={json.loads(opened.text[1:])['sid']}"
        answers = []

        async def poll() -> None:
            answers.append(await http.get(url))

        async with trio.open_nursery() as polls:  # nothing is queued: the first waits, whichever it is
            polls.start_soon(poll)
            polls.start_soon(poll)
        refused, ended = sorted(answers, key=lambda answer: answer.status_code, reverse=True)
        assert refused.status_code == 400 and "one GET at a time" in refused.text
        assert ended.status_code == 200 and ended.text == "1"  # the session ended: a close packet
        assert (await http.get(url)).status_code == 400  # and is forgotten


async def test_while_the_client_upgrades_each_poll_it_still_sends_ends_with_a_noop(nursery, server):
    """socket.io-client sends ``5`` only once the GET it has out returns, and it may send one
    just after the probe's first noop: that one must not wait for the next ping (25 s)."""
    async with httpx.AsyncClient(base_url=server.http) as http:
        opened = await http.get("/socket.io/?EIO=4&transport=polling")
        sid = json.loads(opened.text[1:])["sid"]
        url = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
        connect = f'40/hub,{json.dumps({"token": server.token()})}'
        assert (await http.post(url, content=connect)).text == "ok"
        assert (await http.get(url)).text.startswith("40/hub,")
        ws = await connect_websocket_url(
            nursery, f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket&sid={sid}")
        await ws.send_message("2probe")
        assert await ws.get_message() == "3probe"
        with trio.fail_after(5):
            assert (await http.get(url)).text == "6"  # the probe's noop
            assert (await http.get(url)).text == "6"  # a GET sent after it
        await ws.send_message("5")
        await ws.send_message('42/hub,1["heartbeat"]')
        assert await next_message(ws) == '43/hub,1[{"status":"ok"}]'


async def test_a_polling_preflight_is_answered_for_allowed_origins_and_headers_only_credentials_allowed(server):
    async with httpx.AsyncClient(base_url=server.http) as http:
        ok = await http.options("/socket.io/?EIO=4&transport=polling", headers={
            "origin": "http://good.example", "access-control-request-method": "POST",
            "access-control-request-headers": "content-type"})
        assert ok.status_code == 204 and ok.headers["access-control-allow-origin"] == "http://good.example"
        assert ok.headers["access-control-allow-credentials"] == "true"
        opened = await http.get("/socket.io/?EIO=4&transport=polling", headers={"origin": "http://good.example"})
        assert opened.headers["access-control-allow-origin"] == "http://good.example"
        assert opened.headers["access-control-allow-credentials"] == "true"
        odd = await http.options("/socket.io/?EIO=4&transport=polling", headers={
            "origin": "http://good.example", "access-control-request-method": "POST",
            "access-control-request-headers": "x-anything"})
        assert odd.status_code == 403
        elsewhere = await http.options("/socket.io/?EIO=4&transport=polling", headers={
            "origin": "http://evil.example", "access-control-request-method": "POST"})
        assert elsewhere.status_code == 403
