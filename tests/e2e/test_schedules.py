"""Schedule dashboards across two real nodes sharing Redis: a dashboard that connects
after a burst gets the final state at once, and one watching during the burst gets
digests that end in the same state."""

import trio

from rtserver.client import open_client
from tests.support.nodes import start_node
from tests.support.redis_servers import flush_redis
from tests.support.schedule_model import apply, slot_events, truth


def bodies(events):
    return [{"event": event, "tenant": "t1", "rooms": rooms, "data": data} for event, rooms, data in events]


async def dashboard_state(client, room: str, until) -> tuple[dict, int]:
    """Apply the schedule's frames until ``until(state)``; the state and the frames it
    took. An event sent to the schedule and the tenant's room reaches the client library
    once, in whichever room came first (it drops repeated ids)."""
    state: dict = {}
    frames = 0
    with trio.fail_after(20):
        while not until(state):
            evt = await client.next_event()
            if evt["room"] == room or evt["data"].get("scheduleId") == room.partition(":")[2]:
                frames += 1
                apply(state, evt)
    return state, frames


async def test_dashboards_on_another_node_get_the_final_state_digested_or_at_once(nursery, redis_url):
    flush_redis(redis_url)
    a, b = await start_node(nursery, redis_url), await start_node(nursery, redis_url)
    events = slot_events(schedules=4, days=30)
    final = truth(events, "schedule:2")
    async with open_client(b.ws(), b.token("wall")) as during:
        await during.subscribe("schedule:2")
        await a.publish_all(bodies(events))
        state, frames = await dashboard_state(during, "schedule:2", lambda s: s == final)
        assert frames < 33 / 2  # 33 events of schedule:2 (plus the snapshot), mostly merged
    async with open_client(b.ws(), b.token("late")) as late:
        await late.subscribe("schedule:2")
        with trio.fail_after(5):
            snapshot = await late.next_event()
        assert snapshot["event"] == "schedule.snapshot"
        state: dict = {}
        apply(state, snapshot)
        if state != final:  # the projection had not caught up: the history after it follows
            more, _ = await dashboard_state(late, "schedule:2", lambda s: {**state, **s} == final)
            state.update(more)
        assert state == final
