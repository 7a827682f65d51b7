"""The schedule record contract (docs/protocol.md, Schedules), on the memory store and on Redis (standalone
and cluster): every event projected once for the cluster, snapshots that join history
with no gap and no duplicate, and commands handed to the backbone."""

import msgspec
import pytest
import trio

from actors.schedules import ScheduleProjector
from protocol.cursors import shard_of
from protocol.envelope import Envelope, Inbound
from rtserver.backends.bus import read_rooms
from rtserver.backends.bus.redis import inbound_key
from tests.support.schedule_model import apply, slot_events, truth


async def append_all(bus, events):
    for event, rooms, data in events:
        await bus.append(Envelope(event=event, tenant="t1", rooms=rooms, data=data))


async def state_after_joining(bus, store, room):
    """What a subscriber holds from a snapshot plus the history after it that the
    snapshot does not cover; also the ids it was sent."""
    snapshot = await store.snapshot("t1", room)
    state: dict = {}
    apply(state, msgspec.to_builtins(snapshot.frame("s", 0)))
    history = await read_rooms(bus, "t1", {room}, snapshot.cursor, 10_000)
    assert history.recovered
    sent = [event for event, _ in history.events if not snapshot.covers(event)]
    for event in sent:
        apply(state, {"event": event.envelope.event, "data": event.envelope.data})
    return state, [event.id for event in sent]


async def test_records_hold_the_final_state_and_every_event_is_projected_once(bus_env, nursery):
    bus = await bus_env.bus()
    stores = [bus_env.schedules(bus, consumer) for consumer in ("node-a", "node-b")]
    if bus_env.kind == "memory":
        stores = stores[:1]  # one process
    projectors = [ScheduleProjector(store) for store in stores]
    for projector in projectors:
        await nursery.start(projector.run)
    events = slot_events(schedules=3, days=20)
    await append_all(bus, events)
    with trio.fail_after(10):
        while sum(p.projected for p in projectors) < len(events):
            await trio.sleep(0.02)
    await trio.sleep(0.1)
    assert sum(p.projected for p in projectors) == len(events)  # once for the cluster
    for schedule in ("schedule:0", "schedule:2"):
        state, sent = await state_after_joining(bus, stores[0], schedule)
        assert state == truth(events, schedule) and sent == []


async def test_a_snapshot_taken_while_projecting_joins_its_history_without_gap_or_repeat(bus_env, nursery):
    bus = await bus_env.bus()
    store = bus_env.schedules(bus, poll_ms=1, batch=7)
    await nursery.start(ScheduleProjector(store).run)
    events = slot_events(schedules=2, days=40)
    async with trio.open_nursery() as burst:
        burst.start_soon(append_all, bus, events)
        for _ in range(5):  # snapshots at different points of the burst
            await trio.sleep(0.01)
            state, sent = await state_after_joining(bus, store, "schedule:1")
            assert len(sent) == len(set(sent))
    with trio.fail_after(10):
        while True:
            state, sent = await state_after_joining(bus, store, "schedule:1")
            if state == truth(events, "schedule:1"):
                break
            await trio.sleep(0.05)


async def test_entries_left_pending_by_a_stopped_node_are_claimed_by_another(bus_env, nursery):
    if bus_env.kind == "memory":
        pytest.skip("one process: no consumer group to share")
    bus = await bus_env.bus()
    crashed = bus_env.schedules(bus, "crashed")
    events = slot_events(schedules=1, days=5)
    await append_all(bus, events)
    taken = await crashed.read()  # read, never committed: pending with the crashed node
    assert sum(len(batch.events) for batch in taken) == len(events)
    survivor = bus_env.schedules(bus, "survivor", claim_idle_s=0.2)
    projector = ScheduleProjector(survivor)
    await nursery.start(projector.run)
    with trio.fail_after(10):
        while projector.projected < len(events):
            await trio.sleep(0.05)
    state, _ = await state_after_joining(bus, survivor, "schedule:0")
    assert state == truth(events, "schedule:0")


async def test_commands_are_handed_to_the_backbone_on_the_inbound_stream(bus_env):
    bus = await bus_env.bus()
    command = Inbound(event="mark_alert_read", tenant="t1", user="n1", session="s1",
                      data={"alertId": "a1"}, ts=1700000000000)
    entry_id = await bus.hand_in(command)
    shard = shard_of("t1", bus.shards)
    if bus_env.kind == "memory":
        assert bus.inbound(shard) == [(entry_id, command)]
    else:
        [(raw_id, fields)] = bus_env.raw().xrange(inbound_key(shard))
        assert raw_id.decode() == entry_id
        assert fields == {b"event": b"mark_alert_read", b"tenant": b"t1", b"user": b"n1", b"session": b"s1",
                          b"data": b'{"alertId":"a1"}', b"ts": b"1700000000000"}
