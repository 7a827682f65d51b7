"""The bus contract, run against every implementation: the memory bus and real Redis.

Contract: ``append`` assigns increasing cursors per shard and refuses a repeated ``id``;
``read_since`` pages a shard's history after a cursor, or answers ``recovered=False``
when the history cannot reach back (trimmed, or another epoch: the stream was lost);
``subscribe`` feeds durable events in append order per shard and ephemeral events
best-effort; ephemeral events never enter the history.
"""

import pytest
import trio

from protocol.cursors import MAX_OFFSET_PART, Cursor, Offset, shard_of
from protocol.envelope import Envelope
from tests.support.bus_env import SHARDS


def env(i, tenant="t1", id=None, event="appointment.created", rooms=("schedule:1",)):
    return Envelope(event=event, tenant=tenant, rooms=list(rooms), data={"appointmentId": str(i)}, id=id)


async def start_of(bus, tenant="t1"):
    shard = shard_of(tenant, bus.shards)
    head = await bus.head(shard)
    return Cursor(shard, head.epoch, Offset(0, 0))


async def test_append_assigns_increasing_cursors_and_read_since_returns_what_follows(bus_env):
    bus = await bus_env.bus()
    results = [await bus.append(env(i)) for i in range(5)]
    offsets = [r.event.offset for r in results]
    assert offsets == sorted(offsets) and len(set(offsets)) == 5
    page = await bus.read_since(Cursor.parse(results[1].event.cursor), 100)
    assert page.recovered and not page.more
    assert [e.envelope.data["appointmentId"] for e in page.events] == ["2", "3", "4"]
    assert page.cursor.encode() == results[-1].event.cursor


async def test_an_id_already_appended_is_not_appended_twice(bus_env):
    bus = await bus_env.bus()
    first = await bus.append(env(1, id="evt-1"))
    again = await bus.append(env(2, id="evt-1"))
    assert not first.duplicate and again.duplicate
    assert again.event.cursor == first.event.cursor
    page = await bus.read_since(await start_of(bus), 100)
    assert [e.id for e in page.events] == ["evt-1"]


async def test_without_an_id_the_entry_id_stands_in(bus_env):
    bus = await bus_env.bus()
    result = await bus.append(env(1))
    assert result.event.id == str(result.event.offset)


async def test_order_is_kept_per_shard_across_tenants_of_that_shard(bus_env):
    bus = await bus_env.bus()
    tenants = [t for t in (f"t{i}" for i in range(40)) if shard_of(t, SHARDS) == shard_of("t1", SHARDS)][:3]
    for i in range(30):
        await bus.append(env(i, tenant=tenants[i % 3]))
    page = await bus.read_since(await start_of(bus), 100)
    assert [int(e.envelope.data["appointmentId"]) for e in page.events] == list(range(30))


async def test_history_is_paged(bus_env):
    bus = await bus_env.bus()
    for i in range(25):
        await bus.append(env(i))
    cursor, seen = await start_of(bus), []
    while True:
        page = await bus.read_since(cursor, 10)
        seen += [e.envelope.data["appointmentId"] for e in page.events]
        cursor = page.cursor
        if not page.more:
            break
    assert seen == [str(i) for i in range(25)]


async def test_live_subscribers_get_appends_in_order_and_ephemeral_events(bus_env):
    """Durable events arrive in append order; ephemeral ones arrive too, but their order
    relative to durable events is not promised (on Redis they travel over PUB/SUB)."""
    bus = await bus_env.bus()
    with bus.subscribe(100) as feed:
        await bus.append(env(1))
        await bus.publish_ephemeral(env(2, event="thread:typing", rooms=("thread:7",)))
        await bus.append(env(3))
        with trio.fail_after(5):
            got = [await feed.receive() for _ in range(3)]
    durable = [e.envelope.data["appointmentId"] for e in got if e.cursor]
    ephemeral = [e.envelope.data["appointmentId"] for e in got if e.cursor is None]
    assert durable == ["1", "3"] and ephemeral == ["2"]


async def test_ephemeral_events_published_together_arrive_in_order(bus_env):
    bus = await bus_env.bus()
    with bus.subscribe(100) as feed:
        published = await bus.publish_ephemeral(
            *(env(i, event="thread:typing", rooms=("thread:7",)) for i in range(5)))
        with trio.fail_after(5):
            got = [await feed.receive() for _ in range(5)]
    assert [e.id for e in got] == [e.id for e in published]
    assert [e.envelope.data["appointmentId"] for e in got] == [str(i) for i in range(5)]


async def test_ephemeral_events_never_enter_history(bus_env):
    bus = await bus_env.bus()
    await bus.publish_ephemeral(env(1, event="thread:typing", rooms=("thread:7",)))
    page = await bus.read_since(await start_of(bus), 100)
    assert page.events == [] and page.recovered


async def test_trimmed_history_answers_not_recovered(bus_env):
    bus = await bus_env.bus(retention=10)
    first = await bus.append(env(0))
    for i in range(1, 30):
        await bus.append(env(i))
    assert not (await bus.read_since(Cursor.parse(first.event.cursor), 100)).recovered
    recent = await bus.read_since(Cursor.parse((await bus.append(env(99))).event.cursor), 100)
    assert recent.recovered and recent.events == []


async def test_a_cursor_of_another_epoch_answers_not_recovered(bus_env):
    old = await bus_env.bus()
    cursor = Cursor.parse((await old.append(env(1))).event.cursor)
    bus_env.lose_streams()
    new = await bus_env.bus()
    await new.append(env(2))
    page = await new.read_since(cursor, 100)
    assert not page.recovered and page.events == []
    assert page.cursor.epoch != cursor.epoch


@pytest.mark.parametrize("ms, seq", [(MAX_OFFSET_PART, MAX_OFFSET_PART), (MAX_OFFSET_PART, 0)])
async def test_a_cursor_at_the_far_edge_of_the_offsets_answers_not_recovered(bus_env, ms, seq):
    bus = await bus_env.bus()
    head = Cursor.parse((await bus.append(env(1))).event.cursor)
    far = Cursor.parse(f"{head.shard}.{head.epoch}.{ms}-{seq}")  # beyond anything the stream holds
    page = await bus.read_since(far, 100)
    assert not page.recovered and page.events == [] and page.cursor == head


async def test_head_is_the_newest_cursor(bus_env):
    bus = await bus_env.bus()
    last = None
    for i in range(3):
        last = await bus.append(env(i))
    assert (await bus.head(shard_of("t1", SHARDS))).encode() == last.event.cursor


async def test_redis_entries_that_break_the_contract_are_dead_lettered_once_and_never_forwarded(bus_env):
    if bus_env.kind == "memory":
        return  # the memory bus only receives events that were validated at publish
    from rtserver.backends.bus.redis import dead_letter_key, stream_key

    counted = []
    buses = [await bus_env.bus(on_dead_letter=counted.append) for _ in range(2)]
    raw = bus_env.raw()
    shard = shard_of("t1", SHARDS)
    with buses[0].subscribe(10) as feed_a, buses[1].subscribe(10) as feed_b:
        raw.xadd(stream_key(shard), {"event": "nope", "tenant": "t1", "rooms": '["schedule:1"]', "data": "{}"})
        raw.xadd(stream_key(shard), {"event": "appointment.created", "tenant": "t1", "rooms": "not json"})
        raw.xadd(stream_key(shard), {"event": "appointment.created", "tenant": "t1",
                                     "rooms": '["schedule:1"]', "data": '{"name":"Ana"}'})
        raw.xadd(stream_key(shard), {"event": "schedule.slots.generated", "tenant": "t1",  # slots: a list
                                     "rooms": '["schedule:1"]', "data": '{"scheduleId":"1","slots":5}'})
        raw.xadd(stream_key(shard), {"event": "appointment.created", "tenant": "t1", "rooms": '["schedule:1"]',
                                     "data": '{"appointmentId":' + "[" * 12000 + "]" * 12000 + "}"})
        raw.xadd(stream_key(shard), {"event": "appointment.created", "tenant": "t1",
                                     "rooms": '["schedule:1"]', "data": '{"appointmentId":"ok"}'})
        with trio.fail_after(5):
            for feed in (feed_a, feed_b):
                event = await feed.receive()
                assert event.envelope.data == {"appointmentId": "ok"}
    dead = raw.xrange(dead_letter_key(shard))
    codes = ["unknown_event", "malformed", "bad_payload", "bad_payload", "bad_frame"]
    assert [d[1][b"code"].decode() for d in dead] == codes
    assert b"name" in dead[2][1][b"reason"] and b"slots" in dead[3][1][b"reason"]
    assert counted == codes
    page = await buses[0].read_since(await start_of(buses[0]), 100)
    assert [e.envelope.data for e in page.events] == [{"appointmentId": "ok"}]


async def test_redis_entries_a_producer_appended_twice_are_dropped_alike_live_and_in_history(bus_env):
    if bus_env.kind == "memory":
        return  # the memory bus refuses repeated ids at append (tested above)
    from rtserver.backends.bus.redis import stream_key

    raw = bus_env.raw()
    shard = shard_of("t1", SHARDS)
    early = await bus_env.bus()
    before = await early.head(shard)

    def xadd(event_id, n):
        raw.xadd(stream_key(shard), {"event": "appointment.created", "tenant": "t1", "rooms": '["schedule:1"]',
                                     "data": '{"appointmentId":"%s"}' % n, "id": event_id})

    with early.subscribe(10) as feed:
        for event_id, n in (("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)):
            xadd(event_id, n)
        with trio.fail_after(5):
            live = [(await feed.receive()).envelope.data["appointmentId"] for _ in range(3)]
    assert live == ["1", "2", "4"]
    late = await bus_env.bus()  # a node started after the repeats decides the same way
    for bus in (early, late):  # early: from what its live reader decided; late: from the stream
        page = await bus.read_since(before, 100)
        assert [e.envelope.data["appointmentId"] for e in page.events] == ["1", "2", "4"]
        second_page = await bus.read_since(Cursor.parse(page.events[1].cursor), 100)  # resume mid-way
        assert [e.envelope.data["appointmentId"] for e in second_page.events] == ["4"]


async def test_redis_reader_lag_is_measured_in_entries(bus_env):
    if bus_env.kind == "memory":
        return  # the memory bus has no reader to fall behind
    from rtserver.backends.bus import redis as redis_bus

    bus = await bus_env.bus()
    shard = shard_of("t1", SHARDS)
    with bus.subscribe(1) as feed:  # a one-slot feed nobody reads: the reader stalls behind it
        for i in range(50):
            await bus.append(env(i))
        with trio.fail_after(10):
            while bus.lag[shard][0] < 45:  # the reader holds entry 2 for the full feed
                await trio.sleep(redis_bus.LAG_INTERVAL_S / 4)
        assert bus.lag[shard][1] > 0
        for _ in range(50):
            await feed.receive()
    with trio.fail_after(10):
        while bus.lag[shard][0] != 0:
            await trio.sleep(redis_bus.LAG_INTERVAL_S / 4)
