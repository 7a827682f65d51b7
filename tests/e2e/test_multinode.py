"""Several nodes sharing one real Redis, standalone or a 3-master Redis Cluster: cross-node
fan-out and resumption anywhere."""

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from protocol.cursors import shard_of
from protocol.polling_relay import RELAY_TENANT
from rtserver.backends.bus.redis import stream_key
from rtserver.client import open_client
from rtserver.node import Node
from tests.support.events import appointment
from tests.support.nodes import Server, server_config
from tests.support.redis_servers import flush_redis, plain_redis


@pytest.fixture(params=["standalone", "cluster"])
def shared_redis(request) -> str:
    """The URL of the Redis the nodes share (flushed): standalone, or one node of a cluster."""
    url = request.getfixturevalue("redis_cluster_url" if request.param == "cluster" else "redis_url")
    flush_redis(url)
    return url


@pytest.fixture
async def cluster(nursery, shared_redis):
    servers = []
    for _ in range(3):
        node = Node(server_config(bus={"redis_url": shared_redis}))
        servers.append(Server(node, await nursery.start(node.run)))
    return servers


async def test_a_client_on_one_node_gets_what_another_node_and_a_plain_xadd_append(cluster, shared_redis):
    a, b, _ = cluster
    async with open_client(a.ws(), a.token()) as client:
        await client.subscribe("professional:1")
        assert (await b.publish(appointment(1))).status_code == 200
        plain_redis(shared_redis).xadd(stream_key(shard_of("t1", 16)), {
            "event": "appointment.created", "tenant": "t1", "rooms": '["professional:1"]',
            "data": '{"appointmentId":"2"}'})
        with trio.fail_after(10):
            got = [(await client.next_event())["data"]["appointmentId"] for _ in range(2)]
    assert got == ["1", "2"]


async def test_a_client_resumes_on_another_node_with_every_missed_event_once_in_order(cluster):
    a, b, c = cluster
    cursor = await a.cursor_after("professional:1", b, appointment(0))
    await b.publish_all(appointment(i, rooms=("professional:1",)) for i in range(1, 201))
    async with open_client(c.ws(), c.token()) as client:
        ack = await client.subscribe("professional:1", since=cursor)
        assert ack["recovered"] is True
        with trio.fail_after(10):
            got = [int((await client.next_event())["data"]["appointmentId"]) for _ in range(200)]
        assert got == list(range(1, 201))
        await b.publish(appointment(201))
        with trio.fail_after(10):
            assert (await client.next_event())["data"]["appointmentId"] == "201"


async def test_ephemeral_events_cross_nodes_without_entering_the_stream(cluster, shared_redis):
    a, b, _ = cluster
    async with open_client(a.ws(), a.token()) as client:
        await client.subscribe("thread:7")
        response = await b.publish({"event": "thread:typing", "tenant": "t1", "rooms": ["thread:7"],
                                    "data": {"threadId": "7", "userId": "u9", "typing": True}})
        assert response.json()["cursor"] is None
        with trio.fail_after(10):
            evt = await client.next_event()
    assert evt["event"] == "thread:typing" and "cursor" not in evt
    assert plain_redis(shared_redis).xlen(stream_key(shard_of("t1", 16))) == 0


async def test_metrics_show_the_bus_and_readiness_follows_it(cluster):
    a = cluster[0]
    async with httpx.AsyncClient(base_url=a.http) as http:
        assert (await http.get("/readyz")).json() == {"ready": True, "bus": True, "draining": False}
        metrics = (await http.get("/metrics")).text
    for name in ("rt_bus_reconnects 0.0", 'rt_bus_errors_total{kind="unreachable"} 0.0',
                 'rt_bus_errors_total{kind="refused"} 0.0', 'rt_stream_lag_entries{shard="7"} 0.0',
                 'rt_stream_lag_seconds{shard="0"} 0.0'):
        assert name in metrics


def tenants_on_distinct_shards(shards: int = 16) -> tuple[str, str]:
    """Two tenants on two shards, neither the Socket.IO relays' shard (every node reads it)."""
    relay = shard_of(RELAY_TENANT, shards)
    found: dict[int, str] = {}
    for i in range(1000):
        shard = shard_of(f"t{i}", shards)
        if shard != relay:
            found.setdefault(shard, f"t{i}")
        if len(found) == 2:
            return tuple(found.values())
    raise AssertionError("no two tenants on distinct shards")


async def test_with_shard_affinity_a_node_reads_and_serves_only_its_tenants(nursery, shared_redis):
    mine, other = tenants_on_distinct_shards()
    reading = Node(server_config(bus={"redis_url": shared_redis, "read_shards": [shard_of(mine, 16)]}))
    a = Server(reading, await nursery.start(reading.run))
    everything = Node(server_config(bus={"redis_url": shared_redis}))
    b = Server(everything, await nursery.start(everything.run))
    # The other tenant's clients are sent back to the balancer, on every transport.
    async with open_websocket_url(a.ws() + f"?access_token={a.token(tenant=other)}") as ws:
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
        assert ws.closed.code == 4004
    async with httpx.AsyncClient(base_url=a.http) as http:
        refused = await http.get("/hub/poll", params={"access_token": a.token(tenant=other)})
    assert refused.status_code == 421 and refused.json()["error"] == 4004
    async with open_websocket_url(f"ws://127.0.0.1:{a.port}/socket.io/?EIO=4&transport=websocket") as sio:
        await sio.get_message()  # open
        await sio.send_message('40/hub,{"token":"%s"}' % a.token(tenant=other))
        assert '"code":4004' in await sio.get_message()  # CONNECT_ERROR
    # Its own tenant's clients are served, whatever node the events are published through;
    # the other tenant's events never reach this node's live feed (the sentinel, appended
    # after the client saw the event that followed the other tenant's, comes in a later read).
    with reading.bus.subscribe(100) as feed:
        async with open_client(a.ws(), a.token(tenant=mine)) as client:
            await client.subscribe("professional:1")
            assert (await b.publish(appointment(1, tenant=other))).status_code == 200
            assert (await a.publish(appointment(2, tenant=mine))).status_code == 200
            with trio.fail_after(5):
                assert (await client.next_event())["data"]["appointmentId"] == "2"
            assert (await b.publish(appointment("sentinel", tenant=mine))).status_code == 200
            with trio.fail_after(5):
                assert (await client.next_event())["data"]["appointmentId"] == "sentinel"
        seen = []
        while not seen or seen[-1] != (mine, "sentinel"):
            event = feed.receive_nowait()
            if event.envelope.event == "appointment.created":
                seen.append((event.envelope.tenant, event.envelope.data["appointmentId"]))
        assert seen == [(mine, "2"), (mine, "sentinel")]
