"""The consumer groups' contract (rtserver/backends/bus/groups.py), on the memory bus and
on Redis (standalone and cluster): each durable event handled once by one consumer of a
group; what a stopped consumer left pending is taken over, what a working one keeps is not."""

import itertools

import trio

from protocol.envelope import Envelope

CLAIM_IDLE_S = 0.3


def appointment(i: int, tenant: str = "t1") -> Envelope:
    return Envelope(event="appointment.created", tenant=tenant, rooms=["schedule:1"], data={"appointmentId": str(i)})


async def read(group) -> list[tuple[int, str, str]]:
    """(shard, entry id, appointment id) of what one read gives ``group``'s consumer."""
    with trio.fail_after(5):
        batches = await group.read()
    return [(batch.shard, str(event.offset), event.envelope.data["appointmentId"])
            for batch in batches for event in batch.events]


async def read_all(group, count: int) -> list[tuple[int, str, str]]:
    entries = []
    while len(entries) < count:
        entries += await read(group)
    return entries


async def test_each_entry_goes_to_one_consumer_of_a_group_and_to_every_group(bus_env):
    bus = await bus_env.bus()
    ana, bia = bus_env.group(bus, "g1", "ana"), bus_env.group(bus, "g1", "bia")
    other = bus_env.group(bus, "g2", "cid")
    for i in range(10):
        await bus.append(appointment(i, tenant=f"t{i % 3}"))  # several shards
    first = await read(ana)
    second = await read_all(bia, 10 - len(first)) if len(first) < 10 else []
    assert sorted(i for _, _, i in first + second) == [str(i) for i in range(10)]
    assert sorted(i for _, _, i in await read_all(other, 10)) == [str(i) for i in range(10)]
    await bus.append(appointment(10))
    assert [i for _, _, i in await read(ana)] == ["10"]  # nothing given twice


async def test_a_group_for_some_event_types_gets_only_those_and_acknowledges_the_others_with_them(bus_env):
    bus = await bus_env.bus()
    group = bus_env.group(bus, "g", "ana", claim_idle_s=CLAIM_IDLE_S, events=frozenset({"appointment.created"}))
    alert = Envelope(event="critical_alert", tenant="t1", rooms=["tenant:t1"], data={"id": "a1"})
    appended = [await bus.append(envelope) for envelope in (alert, appointment(0), alert, appointment(1))]
    with trio.fail_after(5):
        [batch] = await group.read()
    assert [e.envelope.data["appointmentId"] for e in batch.events] == ["0", "1"]
    assert batch.entry_ids == [str(result.event.offset) for result in appended]
    await group.ack(batch.shard, batch.entry_ids)
    await trio.sleep(CLAIM_IDLE_S)
    await bus.append(appointment(2))  # the sentinel: nothing acknowledged comes back before it
    assert [i for _, _, i in await read(group)] == ["2"]


async def test_a_group_made_at_the_end_gets_only_later_entries(bus_env):
    bus = await bus_env.bus()
    await bus.append(appointment(0))
    group = bus_env.group(bus, "late", "ana", start="$")  # made at its first read
    got = []
    async with trio.open_nursery() as nursery:
        async def reader() -> None:
            got.extend(i for _, _, i in await read(group))
            nursery.cancel_scope.cancel()

        nursery.start_soon(reader)
        for i in itertools.count(1):  # until the reader gets some
            await bus.append(appointment(i))
            await trio.sleep(0.01)
    assert got and "0" not in got


async def test_what_a_stopped_consumer_left_pending_is_taken_over_and_acknowledged_entries_are_not(bus_env):
    bus = await bus_env.bus()
    crashed = bus_env.group(bus, "g", "crashed", claim_idle_s=CLAIM_IDLE_S)
    survivor = bus_env.group(bus, "g", "survivor", claim_idle_s=CLAIM_IDLE_S)
    for i in range(3):
        await bus.append(appointment(i))
    entries = await read_all(crashed, 3)
    [(shard, done, _), *left] = entries
    await crashed.ack(shard, [done])  # it handled the first, then crashed
    assert sorted(i for _, _, i in await read_all(survivor, 2)) == [i for _, _, i in left]


async def test_entries_a_consumer_keeps_touching_are_not_taken_over(bus_env):
    bus = await bus_env.bus()
    working = bus_env.group(bus, "g", "working", claim_idle_s=CLAIM_IDLE_S)
    other = bus_env.group(bus, "g", "other", claim_idle_s=CLAIM_IDLE_S)
    await bus.append(appointment(0))
    [(shard, entry_id, _)] = await read(working)
    for _ in range(6):  # twice the claim time, touched every third of it
        await trio.sleep(CLAIM_IDLE_S / 3)
        await working.touch(shard, [entry_id])
    await bus.append(appointment(1))  # the sentinel
    assert [i for _, _, i in await read(other)] == ["1"]
