import trio
import pytest

from protocol.errors import ReplyCode
from protocol.rooms import room_key
from tests.support.actor_harness import config, staff, start_harness
from tests.support.metrics import metric_value


async def test_subscriber_receives_room_events_in_order(nursery, autojump_clock):
    h = await start_harness(nursery)
    client = await h.connect()
    await client.send({"op": "sub", "room": "professional:1", "ref": 1})
    assert (await client.recv())["op"] == "ack"
    for i in range(20):
        await h.publish(["professional:1"], i)
    got = [await client.recv() for _ in range(20)]
    assert [f["data"]["appointmentId"] for f in got] == [str(i) for i in range(20)]
    assert all(f["op"] == "evt" and f["room"] == "professional:1" and f["cursor"] for f in got)


async def test_slow_subscriber_is_closed_without_stalling_the_room(nursery, autojump_clock):
    cfg = config(connection={"outbound_max_bytes": 64 * 1024, "outbound_max_frames": 100_000})
    h = await start_harness(nursery, cfg)
    fast = await h.connect(staff("fast"))
    slow = await h.connect(staff("slow"), rcvbuf=4096)
    for client in (fast, slow):
        await client.send({"op": "sub", "room": "professional:1", "ref": 1})
        assert (await client.recv())["op"] == "ack"
    received = []

    async def read_fast():
        while len(received) < 500:
            received.append(await fast.recv())

    with trio.fail_after(30):
        async with trio.open_nursery() as readers:
            readers.start_soon(read_fast)
            for i in range(500):
                await h.publish(["professional:1"], i, padding="x" * 1000)
                await trio.sleep(0.002)  # 500 KB/s: a reading client keeps up, a stuck one cannot
    assert [f["data"]["appointmentId"] for f in received] == [str(i) for i in range(500)]
    assert metric_value(h.metrics.disconnects, reason="slow consumer") == 1
    with trio.fail_after(30):
        code = await slow.wait_closed()
    assert code in (4001, 1006)  # the close frame cannot always get past a full socket


async def test_commands_over_the_rate_get_errors_then_a_close(nursery, autojump_clock):
    cfg = config(connection={"inbound_rate": 1.0, "inbound_burst": 5, "rate_limit_close_after": 10})
    h = await start_harness(nursery, cfg)
    client = await h.connect()
    for _ in range(30):
        await client.send({"op": "ping"})
    replies = []
    with pytest.raises(EOFError) as closed:
        while True:
            replies.append(await client.recv())
    assert [r["op"] for r in replies[:5]] == ["pong"] * 5
    assert all(r["op"] == "error" and r["code"] == ReplyCode.RATE_LIMITED and r["temporary"]
               for r in replies[5:])
    assert len(replies) == 5 + 9
    assert closed.value.args[0] == 4002


async def test_the_bucket_refills_with_time(nursery, autojump_clock):
    cfg = config(connection={"inbound_rate": 2.0, "inbound_burst": 2})
    h = await start_harness(nursery, cfg)
    client = await h.connect()
    for _ in range(3):
        await client.send({"op": "ping"})
    assert [(await client.recv())["op"] for _ in range(3)] == ["pong", "pong", "error"]
    await trio.sleep(1)
    await client.send({"op": "ping"})
    assert (await client.recv())["op"] == "pong"


async def test_an_empty_room_lingers_then_stops(nursery, autojump_clock):
    cfg = config(rooms={"linger_s": 30.0})
    h = await start_harness(nursery, cfg)
    client = await h.connect()
    key = room_key("t1", "professional:9")
    await client.send({"op": "sub", "room": "professional:9", "ref": 1})
    await client.recv()
    assert h.registry.get(key) is not None
    await client.send({"op": "unsub", "room": "professional:9", "ref": 2})
    assert (await client.recv())["op"] == "ack"
    await trio.sleep(29)
    assert h.registry.get(key) is not None
    await client.send({"op": "sub", "room": "professional:9", "ref": 3})  # rejoin within linger: same room
    await client.recv()
    room = h.registry.get(key)
    await client.send({"op": "unsub", "room": "professional:9", "ref": 4})
    await client.recv()
    await trio.sleep(31)
    assert h.registry.get(key) is None and room is not None


async def test_token_expiry_closes_with_its_code(nursery, autojump_clock):
    h = await start_harness(nursery, config(connection={"idle_timeout_s": 0}))
    client = await h.connect(staff(exp_in=120))
    await trio.sleep(100)
    await client.send({"op": "ping"})
    assert (await client.recv())["op"] == "pong"
    with trio.fail_after(60):
        assert await client.wait_closed() == 4100


async def test_an_oversized_message_closes_with_1009(nursery, autojump_clock):
    cfg = config(server={"max_inbound_message_bytes": 1024})
    h = await start_harness(nursery, cfg)
    client = await h.connect()
    await client.send({"op": "emit", "event": "heartbeat", "data": {"x": "y" * 5000}})
    assert await client.wait_closed() == 1009


async def test_bad_frames_get_errors_and_the_connection_goes_on(nursery, autojump_clock):
    h = await start_harness(nursery)
    client = await h.connect()
    await client.send({"op": "nope"})
    error = await client.recv()
    assert error["op"] == "error" and error["code"] == ReplyCode.BAD_FRAME
    await client.send({"op": "sub", "room": "professional:1", "since": "garbage", "ref": 5})
    error = await client.recv()
    assert (error["ref"], error["code"]) == (5, ReplyCode.BAD_FRAME)
    await client.send({"op": "unsub", "room": "professional:2", "ref": 6})
    assert (await client.recv())["code"] == ReplyCode.NOT_SUBSCRIBED
    await client.send({"op": "ping", "ref": 7})
    assert await client.recv() == {"op": "pong", "ref": 7}


@pytest.mark.parametrize("round", range(8))  # the race (events in flight in the feed) is timing-dependent
async def test_resume_merges_history_and_live_events_with_no_gap_and_no_duplicate(nursery, autojump_clock, round):
    h = await start_harness(nursery)
    first = await h.publish(["professional:1"], 0)
    for i in range(1, 300):
        await h.publish(["professional:1"], i)
    client = await h.connect()

    async def keep_publishing():
        for i in range(300, 600):
            await h.publish(["professional:1"], i)
            await trio.sleep(0)

    async with trio.open_nursery() as publishers:
        publishers.start_soon(keep_publishing)
        await client.send({"op": "sub", "room": "professional:1", "since": first.event.cursor, "ref": 1})
        ack = await client.recv()
        assert ack["op"] == "ack" and ack["recovered"] is True
    got = [await client.recv() for _ in range(599)]
    assert [int(f["data"]["appointmentId"]) for f in got] == list(range(1, 600))


async def test_tenants_never_share_a_room(nursery, autojump_clock):
    h = await start_harness(nursery)
    a = await h.connect(staff("a", tenant="t1"))
    b = await h.connect(staff("b", tenant="t2"))
    for c in (a, b):
        await c.send({"op": "sub", "room": "professional:1", "ref": 1})
        await c.recv()
    await h.publish(["professional:1"], 1, tenant="t2")
    await h.publish(["professional:1"], 2, tenant="t1")
    assert (await a.recv())["data"]["appointmentId"] == "2"
    assert (await b.recv())["data"]["appointmentId"] == "1"


async def test_a_silent_connection_is_closed_after_the_idle_timeout(nursery, autojump_clock):
    h = await start_harness(nursery, config(connection={"idle_timeout_s": 90.0}))
    talking, silent = await h.connect(staff("talking")), await h.connect(staff("silent"))
    for _ in range(4):
        await trio.sleep(30)
        await talking.send({"op": "ping"})
        assert (await talking.recv())["op"] == "pong"
    with trio.fail_after(1):
        assert await silent.wait_closed() == 4003


async def test_emits_are_validated_against_the_catalog_and_acknowledged(nursery, autojump_clock):
    h = await start_harness(nursery)
    client = await h.connect()

    async def emit(event, room=None, **data):
        frame = {"op": "emit", "event": event, "data": data, "ref": 1}
        if room:
            frame["room"] = room
        await client.send(frame)
        return await client.recv()

    assert (await emit("heartbeat"))["op"] == "ack"
    assert (await emit("typing:start", "thread:7"))["code"] == ReplyCode.NOT_SUBSCRIBED
    await client.send({"op": "sub", "room": "thread:7", "ref": 2})
    await client.recv()
    assert await emit("typing:start", "thread:7") == {"op": "ack", "ref": 1, "room": "thread:7", "event": "typing:start"}
    assert (await emit("mark_alert_read", alertId="a1", name="x"))["code"] == ReplyCode.BAD_PAYLOAD
    assert (await emit("appointment.created"))["code"] == ReplyCode.FORBIDDEN
    assert (await emit("nope"))["code"] == ReplyCode.UNKNOWN_EVENT
    assert metric_value(h.metrics.messages_in, kind="typing:start") == 2


async def test_portal_clients_may_not_emit_staff_events(nursery, autojump_clock):
    from protocol.catalog import Namespace
    from rtserver.backends.auth import Claims

    h = await start_harness(nursery)
    patient = Claims(user="p", tenant="t1", roles=frozenset({"patient"}), patient="pt1")
    client = await h.connect(patient, ns=Namespace.PORTAL)
    await client.send({"op": "emit", "event": "mark_alert_read", "data": {"alertId": "a"}, "ref": 1})
    assert (await client.recv())["code"] == ReplyCode.FORBIDDEN
    await client.send({"op": "sub", "room": "professional:1", "ref": 2})
    assert (await client.recv())["code"] == ReplyCode.FORBIDDEN
