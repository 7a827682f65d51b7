"""Redis answering error replies instead of results — out of memory at ``maxmemory`` with
``noeviction``, or ``READONLY`` from a server demoted to a replica (a failover) — on every
path of a node that talks to it: each is a temporary error as documented (503, a
``temporary`` error frame), counted in ``rt_bus_errors_total{kind="refused"}``; connected
clients stay, and everything works again once Redis does."""

from __future__ import annotations

import httpx
import pytest
import redis
import trio

from rtserver.client import CommandError, open_client
from rtserver.node import Node
from tests.support.events import appointment
from tests.support.http_clients import command
from tests.support.net import free_port
from tests.support.nodes import Server, server_config
from tests.support.redis_servers import start_redis

FAULTS = {
    # (inject, recover) on a plain client of the node's Redis
    "oom": (lambda r: (r.config_set("maxmemory-policy", "noeviction"), r.config_set("maxmemory", 1)),
            lambda r: r.config_set("maxmemory", 0)),
    "readonly": (lambda r: r.replicaof("127.0.0.1", free_port()), lambda r: r.replicaof("NO", "ONE")),
}
SLOTS = {"event": "schedule.slots.generated", "tenant": "t1", "rooms": ["schedule:7"],
         "data": {"scheduleId": "7", "date": "2027-01-04", "slots": [{"slotId": "s1", "status": "free"}]}}


@pytest.fixture
async def own_redis(tmp_path):
    port = free_port()
    proc = start_redis(port, tmp_path)
    yield f"redis://127.0.0.1:{port}/0", redis.Redis(port=port)
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("fault", FAULTS)
async def test_error_replies_are_temporary_errors_on_every_path_and_the_node_recovers(
        nursery, own_redis, fault):
    url, raw = own_redis
    inject, recover = FAULTS[fault]
    node = Node(server_config(bus={"redis_url": url}, push={"enabled": True},
                              presence={"sweep_interval_s": 0.3, "grace_s": 1.0},
                              schedules={"poll_ms": 20, "claim_idle_s": 1.0}))
    server = Server(node, await nursery.start(node.run))
    refused = node.metrics.registry.get_sample_value
    headers = {"authorization": f"Bearer {server.token()}"}
    async with open_client(server.ws(), server.token(user="sentinel")) as sentinel, \
            httpx.AsyncClient(base_url=server.http, headers=headers) as http:
        await sentinel.subscribe("professional:1")
        inject(raw)

        published = await server.publish(appointment(1))
        assert published.status_code == 503 and published.json()["error"] == 201  # UNAVAILABLE
        assert "redis refused" in published.json()["message"]
        with pytest.raises(CommandError) as emitted:  # over WebSocket: a temporary error frame
            await sentinel.emit("mark_alert_read", data={"alertId": "a1"})
        assert emitted.value.frame["code"] == 201 and emitted.value.frame["temporary"] is True
        posted = await command(server.http, server.token(), {"op": "emit", "event": "mark_alert_read",
                                                             "data": {"alertId": "a1"}, "ref": 3})
        assert posted.status_code == 503 and posted.json()["temporary"] is True
        registered = await http.post("/hub/push/devices", json={"platform": "fcm", "token": "fcm-device-token-0001"})
        assert registered.status_code == 503 and registered.json()["error"] == 201
        # A new connection (presence and liveness writes refused) still gets its hello.
        async with open_client(server.ws(), server.token(user="bea")) as bea:
            assert (await bea.ping())["op"] == "pong"
            assert (await sentinel.ping())["op"] == "pong"
            assert refused("rt_bus_errors_total", {"kind": "refused"}) >= 4

            recover(raw)
            assert (await server.publish(appointment(2))).status_code == 200
            with trio.fail_after(10):
                assert (await sentinel.next_event())["data"]["appointmentId"] == "2"
            assert (await http.post("/hub/push/devices", json={"platform": "fcm", "token": "fcm-device-token-0001"})
                    ).status_code == 201
            assert (await sentinel.emit("mark_alert_read", data={"alertId": "a2"}))["op"] == "ack"

            async def present() -> set[str]:
                users = (await http.get("/hub/presence", params={"group": "attendants"})).json()["users"]
                return {user["userId"] for user in users}

            with trio.fail_after(10):  # presence converges at the next renewal
                while await present() != {"sentinel", "bea"}:
                    await trio.sleep(0.1)
        # The schedule projector works again: the record (a new subscriber's snapshot) gets the day.
        assert (await server.publish(SLOTS)).status_code == 200

        async def day_recorded() -> bool:
            async with open_client(server.ws(), server.token(user="wall")) as wall:
                await wall.subscribe("schedule:7")
                snapshot = await wall.next_event()
            assert snapshot["event"] == "schedule.snapshot"
            return "2027-01-04" in snapshot["data"]["days"]

        with trio.fail_after(10):
            while not await day_recorded():
                await trio.sleep(0.1)
