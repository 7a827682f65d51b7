"""Presence across real nodes sharing Redis: seen from another node, and a crashed node's
users going offline through the sweep (short durations from configuration)."""

import httpx
import trio

from rtserver.client import open_client
from tests.support.nodes import PRESENCE, presence_events, start_node
from tests.support.redis_servers import flush_redis


async def test_a_colleague_on_another_node_is_seen_and_a_crashed_node_users_go_offline(
        nursery, redis_url):
    flush_redis(redis_url)
    crash = trio.CancelScope()
    a = await start_node(nursery, redis_url, crash)
    b = await start_node(nursery, redis_url)
    async with open_client(b.ws(), b.token("boss", presenceGroups=["supervisors"])) as watch:
        ack = await watch.subscribe("presence:attendants")
        assert ack["op"] == "ack"
        with trio.fail_after(10):
            snapshot = await watch.next_event()
        assert snapshot["event"] == "presence:snapshot" and snapshot["data"]["users"] == []
        async with open_client(a.ws(), a.token("ana")) as ana:
            assert await presence_events(watch, 1) == [("ana", "online")]
            await ana.emit("presence:away")
            assert await presence_events(watch, 1) == [("ana", "away")]
            async with httpx.AsyncClient(base_url=b.http) as http:
                listed = (await http.get("/hub/presence", params={"group": "attendants"},
                                         headers={"authorization": f"Bearer {b.token('boss')}"})).json()
            assert [(u["userId"], u["state"]) for u in listed["users"]] == [("ana", "away")]
            started = trio.current_time()
            crash.cancel()  # node A stops at once: no withdrawal, its lease just stops renewing
            assert await presence_events(watch, 1) == [("ana", "offline")]
            assert trio.current_time() - started < PRESENCE["grace_s"] + 2 * PRESENCE["sweep_interval_s"] + 1


async def test_each_subscription_gets_its_own_snapshot_past_the_client_dedupe(server):
    async with open_client(server.ws(), server.token("boss")) as watch:
        for _ in range(2):
            await watch.subscribe("presence:attendants")
            with trio.fail_after(5):
                snapshot = await watch.next_event()
            assert snapshot["event"] == "presence:snapshot"
            assert [u["userId"] for u in snapshot["data"]["users"]] == ["boss"]
            await watch.unsubscribe("presence:attendants")


async def test_typing_on_one_node_is_seen_on_the_other_and_not_by_the_typist(nursery, redis_url):
    flush_redis(redis_url)
    a, b = await start_node(nursery, redis_url), await start_node(nursery, redis_url)
    async with open_client(a.ws(), a.token("ana")) as ana, open_client(b.ws(), b.token("bia")) as bia:
        for client in (ana, bia):
            assert (await client.subscribe("thread:7"))["op"] == "ack"
        assert (await ana.emit("typing:start", "thread:7"))["op"] == "ack"
        with trio.fail_after(5):
            evt = await bia.next_event()
        assert (evt["event"], evt["data"]) == ("thread:typing", {"threadId": "7", "userId": "ana", "typing": True})
        await ana.emit("typing:stop", "thread:7")
        with trio.fail_after(5):
            assert (await bia.next_event())["data"]["typing"] is False
        # Sentinel: bia types too; ana's next event is bia's, not an echo of her own.
        assert (await bia.emit("typing:start", "thread:7"))["op"] == "ack"
        with trio.fail_after(5):
            evt = await ana.next_event()
        assert evt["data"]["userId"] == "bia", f"the typist got {evt}"
