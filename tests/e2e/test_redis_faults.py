"""A node outlives its Redis: SIGKILL, 503s and not-ready meanwhile, reconnect, nothing lost."""

import signal

import httpx
import pytest
import redis
import trio

from protocol.cursors import shard_of
from rtserver.backends.bus.redis import stream_key
from rtserver.client import Closed, open_client
from rtserver.node import Node
from tests.support.events import appointment
from tests.support.net import free_port
from tests.support.nodes import Server, server_config
from tests.support.redis_servers import start_redis


async def wait_ready(server: Server, ready: bool) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        with trio.fail_after(20):
            while ((await http.get("/readyz")).status_code == 200) != ready:
                await trio.sleep(0.1)


@pytest.mark.parametrize("aof", [True, False], ids=["aof-always", "no-persistence"])
async def test_redis_killed_and_restarted_keeps_clients_and_loses_nothing(nursery, tmp_path, aof):
    port = free_port()
    redis_proc = start_redis(port, tmp_path, aof=aof)
    try:
        node = Node(server_config(bus={"redis_url": f"redis://127.0.0.1:{port}/0"}))
        server = Server(node, await nursery.start(node.run))
        async with open_client(server.ws(), server.token()) as client:
            await client.subscribe("professional:1")
            assert (await server.publish(appointment(1))).status_code == 200
            with trio.fail_after(10):
                assert (await client.next_event())["data"]["appointmentId"] == "1"
            cursor_before = client.cursor
            # Appended by a producer right before Redis dies: the node may not have read it.
            redis.Redis(port=port).xadd(stream_key(shard_of("t1", 16)), {
                "event": "appointment.created", "tenant": "t1", "rooms": '["professional:1"]',
                "data": '{"appointmentId":"1b"}'})
            redis_proc.send_signal(signal.SIGKILL)
            redis_proc.wait()
            await wait_ready(server, False)
            down = await server.publish(appointment(2))
            assert down.status_code == 503 and "redis" in down.json()["message"]
            assert (await client.ping())["op"] == "pong"  # clients stay connected
            with pytest.raises(Closed) as refused:  # new ones are told to come back later
                async with open_client(server.ws(), server.token()):
                    pass
            assert refused.value.code == 1013

            await trio.sleep(5)  # a 5-second outage
            redis_proc = start_redis(port, tmp_path, aof=aof)
            await wait_ready(server, True)
            assert (await server.publish(appointment(3))).status_code == 200
            got = []
            with trio.fail_after(10):
                while not got or got[-1] != "3":
                    got.append((await client.next_event())["data"]["appointmentId"])
            if aof:  # persisted before the kill: it reaches the subscriber, once
                assert got == ["1b", "3"]
            else:  # lost with the stream unless the node read it before the kill
                assert got in (["3"], ["1b", "3"])
            assert node.bus.reconnects >= 1

        async with open_client(server.ws(), server.token()) as client:
            ack = await client.subscribe("professional:1", since=cursor_before)
            if aof:  # the stream survived: the resume is exact
                assert ack["recovered"] is True
                with trio.fail_after(10):
                    assert [(await client.next_event())["data"]["appointmentId"] for _ in range(2)] == ["1b", "3"]
            else:  # the stream was lost: a new epoch, and the client is told to reload
                assert ack["recovered"] is False
    finally:
        redis_proc.kill()
        redis_proc.wait()


async def test_a_hung_redis_is_noticed_at_once_and_nothing_acknowledged_is_lost(nursery, tmp_path):
    """SIGSTOP: Redis accepts connections but answers nothing. Every call has a deadline."""
    port = free_port()
    redis_proc = start_redis(port, tmp_path)
    try:
        node = Node(server_config(bus={"redis_url": f"redis://127.0.0.1:{port}/0", "call_timeout_s": 1.0}))
        server = Server(node, await nursery.start(node.run))
        acknowledged = []
        async with open_client(server.ws(), server.token()) as client:
            await client.subscribe("professional:1")
            for i in range(3):
                assert (await server.publish(appointment(f"before-{i}"))).status_code == 200
                acknowledged.append(f"before-{i}")
            redis_proc.send_signal(signal.SIGSTOP)
            await wait_ready(server, False)
            with trio.fail_after(10):  # answered within the deadline, not when Redis comes back
                hung = await server.publish(appointment("during", id="during"))
            assert hung.status_code == 503 and hung.json()["error"] == 201  # UNAVAILABLE
            with trio.fail_after(10), pytest.raises(Closed) as refused:
                async with open_client(server.ws(), server.token(user="late")):
                    pass
            assert refused.value.code == 1013
            assert (await client.ping())["op"] == "pong"  # connected clients stay
            assert node.bus.link.errors["unreachable"] >= 1

            redis_proc.send_signal(signal.SIGCONT)
            await wait_ready(server, True)
            retried = await server.publish(appointment("during", id="during"))  # a 503 is retried with its id
            assert retried.status_code == 200
            acknowledged.append("during")
            assert (await server.publish(appointment("after"))).status_code == 200
            acknowledged.append("after")
            assert (await server.publish(appointment("last"))).status_code == 200
            got = []
            with trio.fail_after(10):
                while not got or got[-1] != "last":
                    got.append((await client.next_event())["data"]["appointmentId"])
            assert got == [*acknowledged, "last"]  # each once, in order
    finally:
        redis_proc.send_signal(signal.SIGCONT)
        redis_proc.kill()
        redis_proc.wait()
