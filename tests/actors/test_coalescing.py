"""Coalescing windows in rooms (docs/protocol.md, Coalescing), under the autojump clock on the memory bus."""

import msgspec
import trio

from actors.registry import Registry
from actors.writer import FanOuts
from protocol.catalog import Catalog
from protocol.cursors import Cursor
from protocol.envelope import Envelope
from protocol.wires import POLL_JSON
from rtserver.backends.bus.memory import MemoryBus
from rtserver.backends.metrics import Metrics
from rtserver.backends.tracing import Tracing
from tests.support.actor_harness import config, start_harness


def harness_config():
    return config(connection={"idle_timeout_s": 0})


async def subscribed(h, *rooms):
    client = await h.connect()
    for ref, room in enumerate(rooms):
        await client.send({"op": "sub", "room": room, "ref": ref})
        assert (await client.recv())["op"] == "ack"
        if room.startswith("schedule:"):
            assert (await client.recv())["event"] == "schedule.snapshot"
    return client


async def nothing_for(client, seconds: float) -> None:
    with trio.move_on_after(seconds):
        frame = await client.recv()
        raise AssertionError(f"unexpected {frame}")


def slots_changed(i, slot):
    return dict(event="schedule.slots.changed", scheduleId="1", date="2026-12-01", slotId=slot, status=f"s{i}")


async def test_a_burst_of_slot_changes_becomes_one_digest_per_window(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config())
    client = await subscribed(h, "schedule:1")
    window_start = trio.current_time()
    first = await h.publish(["schedule:1"], **slots_changed(0, "a"))
    frame = await client.recv()
    assert frame["event"] == "schedule.slots.changed" and "merged" not in frame  # alone: at once
    last = None
    for i in range(1, 51):
        last = await h.publish(["schedule:1"], **slots_changed(i, "ab"[i % 2]))
    digest = await client.recv()
    assert trio.current_time() - window_start >= 0.25  # held until the window ended
    assert digest["event"] == "schedule.digest" and digest["merged"] == 50
    assert digest["id"] == last.event.id and digest["cursor"] == last.event.cursor
    changes = {c["data"]["slotId"]: c["data"]["status"] for c in digest["data"]["changes"]}
    assert changes == {"a": "s50", "b": "s49"}  # the newest change of each slot
    assert first.event.cursor < last.event.cursor
    await nothing_for(client, 1)


async def test_priority_updates_go_at_most_once_per_patient_per_second_latest_wins(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config())
    client = await subscribed(h, "patient:p1", "patient:p2")
    for score in range(5):
        await h.publish(["patient:p1"], event="priority_update", patientId="p1", newPriority=score)
        await trio.sleep(0.1)
    await h.publish(["patient:p2"], event="priority_update", patientId="p2", newPriority=9)
    got = [await client.recv() for _ in range(3)]
    assert [(f["data"]["patientId"], f["data"]["newPriority"], f.get("merged")) for f in got] == [
        ("p1", 0, None), ("p2", 9, None), ("p1", 4, 4)]
    await nothing_for(client, 2)


async def test_a_cursor_never_passes_a_held_event_so_a_resume_gets_it(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config())
    client = await subscribed(h, "patient:p1", "tenant:t1")
    await h.publish(["patient:p1"], event="priority_update", patientId="p1", newPriority=1)
    await client.recv()
    held = await h.publish(["patient:p1"], event="priority_update", patientId="p1", newPriority=2)
    await h.publish(["tenant:t1"], event="new_patient", patientId="p9")
    alert = await client.recv()
    assert alert["event"] == "new_patient"
    # The client leaves before the held update is sent: its cursor must bring it back.
    assert Cursor.parse(alert["cursor"]).offset < held.event.offset
    again = await h.connect()
    replay = []
    for ref, room in enumerate(["patient:p1", "tenant:t1"]):
        await again.send({"op": "sub", "room": room, "since": alert["cursor"], "ref": ref})
        assert (await again.recv())["recovered"] is True
        replay.append(await again.recv())
    assert [(f["event"], f["id"]) for f in replay] == [("priority_update", held.event.id), ("new_patient", alert["id"])]
    # The replay brought the held update: when its window ends, its merged frame is not sent
    # again, even once a newer event made the resumed member live.
    newer = await h.publish(["patient:p1"], event="priority_update", patientId="p2", newPriority=5)
    assert (await again.recv())["id"] == newer.event.id
    await trio.sleep(2)
    sentinel = await h.publish(["tenant:t1"], event="new_patient", patientId="p10")
    assert (await again.recv())["id"] == sentinel.event.id
    assert [(await client.recv())["id"] for _ in range(2)] == [newer.event.id, held.event.id]  # it had not got it


async def test_job_progress_is_latest_wins_per_job(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config())
    client = await subscribed(h, "tenant:t1")
    for done in range(10):
        for job in ("j1", "j2"):
            await h.publish(["tenant:t1"], event="admin.job.progress", jobId=job, done=done, total=9)
    got = [await client.recv() for _ in range(4)]
    assert sorted((f["data"]["jobId"], f["data"]["done"], f.get("merged")) for f in got) == [
        ("j1", 0, None), ("j1", 9, 9), ("j2", 0, None), ("j2", 9, 9)]
    await nothing_for(client, 1)


async def test_events_of_different_rooms_leave_in_bus_order_each_with_its_own_cursor():
    """The registry fans each event out through all its rooms before the next: a client of
    two rooms gets their events in bus order, each frame carrying its own event's cursor
    (no room can let a newer event leave before an older one of another)."""
    cfg = config()
    bus, metrics = MemoryBus(cfg.bus), Metrics()
    registry = Registry(bus, cfg.rooms, metrics, FanOuts(Tracing.off()), Catalog.default())
    got: list[dict] = []
    for name in ("a", "b"):
        registry.open_room(f"t1/professional:{name}").add(
            "m", POLL_JSON, lambda frame: got.append(msgspec.json.decode(frame)))
    published = [(await bus.append(Envelope(event="appointment.created", tenant="t1",
                                            rooms=[f"professional:{name}"]))).event for name in "abab"]
    for event in published:
        registry.route(event)
    assert [(f["id"], f["cursor"]) for f in got] == [(e.id, e.cursor) for e in published]
