"""Schedule snapshots, typing indicators, care alerts and threads on the memory bus
(autojump clock)."""

import trio

from protocol.catalog import Namespace
from protocol.cursors import shard_of
from rtserver.backends.auth import Claims
from tests.support.actor_harness import config, staff, start_harness
from tests.support.schedule_model import apply, slot_events, truth


def harness_config(**sections):
    return config(connection={"idle_timeout_s": 0}, **sections)


async def test_a_dashboard_joining_after_a_burst_gets_the_final_state_at_once(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config())
    events = slot_events()
    for event, rooms, data in events:
        await h.publish(rooms, event=event, **data)
    await trio.sleep(1)
    client = await h.connect()
    await client.send({"op": "sub", "room": "schedule:1", "ref": 1})
    ack = await client.recv()
    snapshot = await client.recv()
    assert ack["op"] == "ack" and snapshot["event"] == "schedule.snapshot"
    assert snapshot["cursor"] == ack["cursor"]  # nothing after it to replay
    state: dict = {}
    apply(state, snapshot)
    assert state == truth(events, "schedule:1")
    assert snapshot["data"]["days"]["2026-12-02"]["data"]["slots"] == ["regenerated"]


async def test_joining_during_a_burst_misses_nothing_and_repeats_nothing(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config())
    events = slot_events(schedules=2, days=30)
    client = await h.connect()
    state: dict = {}
    seen: list[str] = []

    async def produce():
        for event, rooms, data in events:
            await h.publish(rooms, event=event, **data)

    async with trio.open_nursery() as burst:
        burst.start_soon(produce)
        await trio.sleep(0)
        await client.send({"op": "sub", "room": "schedule:1", "ref": 1})
        await client.recv_until("ack")
    with trio.move_on_after(2):
        while True:
            frame = await client.recv()
            if frame["room"] == "schedule:1":  # (its tenant room gets the appointments too)
                seen.append(frame["id"])
                apply(state, frame)
    assert len(seen) == len(set(seen))
    assert state == truth(events, "schedule:1")


async def test_typing_reaches_the_others_not_the_sender_and_stops_by_itself(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config(typing={"timeout_s": 5}))
    ana, bob = await h.connect(staff("ana")), await h.connect(staff("bob"))
    for client in (ana, bob):
        await client.send({"op": "sub", "room": "thread:7", "ref": 1})
        await client.recv_until("ack")
    await ana.send({"op": "emit", "event": "typing:start", "room": "thread:7", "ref": 2})
    assert (await ana.recv())["op"] == "ack"
    started = await bob.recv()
    assert (started["event"], started["data"], "cursor" in started) == (
        "thread:typing", {"threadId": "7", "userId": "ana", "typing": True}, False)
    t0 = trio.current_time()
    stopped = await bob.recv()
    assert stopped["data"]["typing"] is False and trio.current_time() - t0 >= 5 - 0.01
    with trio.move_on_after(1):
        raise AssertionError(f"the sender got {await ana.recv()}")
    await ana.send({"op": "sub", "room": "patient:p1", "ref": 3})
    await ana.recv_until("ack")
    await ana.send({"op": "emit", "event": "typing:start", "room": "patient:p1", "ref": 4})
    refused = await ana.recv()
    assert refused["op"] == "error" and refused["ref"] == 4 and "thread" in refused["message"]


async def test_typing_bursts_end_in_the_latest_state_and_a_close_stops_it(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config())
    ana, bob = await h.connect(staff("ana")), await h.connect(staff("bob"))
    for client in (ana, bob):
        await client.send({"op": "sub", "room": "thread:7", "ref": 1})
        await client.recv_until("ack")
    for i in range(30):
        await ana.send({"op": "emit", "event": "typing:stop" if i % 2 else "typing:start", "room": "thread:7"})
    await ana.send({"op": "emit", "event": "typing:start", "room": "thread:7"})
    frames = []
    with trio.move_on_after(1):
        while True:
            frames.append(await bob.recv())
    assert frames and frames[-1]["data"]["typing"] is True
    assert len(frames) < 10  # coalesced: not one frame per emit
    ana.sock.close()  # abrupt: no close frame
    assert (await bob.recv())["data"] == {"threadId": "7", "userId": "ana", "typing": False}


async def test_mark_alert_read_is_acknowledged_once_handed_to_the_backbone(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config())
    nurse = await h.connect(staff("n1"))
    await nurse.send({"op": "emit", "event": "mark_alert_read", "data": {"alertId": "a1", "patientId": "p1"},
                      "ref": 5})
    ack = await nurse.recv()
    assert (ack["op"], ack["ref"], ack["event"]) == ("ack", 5, "mark_alert_read")
    [(_, command)] = h.bus.inbound(shard_of("t1", h.bus.shards))
    assert (command.event, command.tenant, command.user, command.data) == (
        "mark_alert_read", "t1", "n1", {"alertId": "a1", "patientId": "p1"})
    await nurse.send({"op": "emit", "event": "mark_alert_read", "data": {"patientId": "p1"}, "ref": 6})
    error = await nurse.recv()
    assert error["op"] == "error" and error["ref"] == 6 and "alertId" in error["message"]


async def test_threads_and_patients_are_authorized_by_claims(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config())
    patient = Claims(user="pt1", tenant="t1", roles=frozenset({"patient"}), patient="p1",
                     threads=frozenset({"7"}), exp=None)
    portal = await h.connect(patient, ns=Namespace.PORTAL)
    attendant = await h.connect(staff("ana"))
    for ref, room in enumerate(["thread:7", "thread:8", "patient:p1", "patient:p2"]):
        await portal.send({"op": "sub", "room": room, "ref": ref})
        await attendant.send({"op": "sub", "room": room, "ref": ref})
        assert (await attendant.recv())["op"] == "ack"  # staff: any thread and patient of the tenant
    answers = [await portal.recv() for _ in range(4)]
    assert [a["op"] for a in answers] == ["ack", "error", "ack", "error"]
    await h.publish(["thread:7"], event="thread:message", threadId="7", messageId="m1", text="hi")
    await h.publish(["thread:8"], event="thread:message", threadId="8", messageId="m2", text="no")
    await h.publish(["thread:7", "tenant:t1"], event="chat:accepted", threadId="7", attendantId="ana")
    got = [(await portal.recv())["data"].get("messageId", "accepted") for _ in range(2)]
    assert got == ["m1", "accepted"]
    await portal.send({"op": "emit", "event": "mark_alert_read", "data": {"alertId": "a1"}, "ref": 9})
    assert (await portal.recv())["op"] == "error"  # a staff command
