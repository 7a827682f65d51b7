"""Presence timers on the memory store, under the autojump clock (the durations of docs/protocol.md, Presence)."""

import trio

from tests.support.actor_harness import config, staff, start_harness

GROUP = ("attendants",)


async def watcher(h):
    """A colleague watching the group: returns the client and the snapshot it got."""
    client = await h.connect(staff("boss"))
    await client.send({"op": "sub", "room": "presence:attendants", "ref": 1})
    assert (await client.recv())["op"] == "ack"
    snapshot = await client.recv()
    assert snapshot["event"] == "presence:snapshot" and "cursor" not in snapshot
    return client, snapshot["data"]["users"]


async def next_presence(client) -> tuple[str, str]:
    frame = await client.recv_until("evt")
    return frame["data"]["userId"], frame["data"]["state"]


async def no_presence_for(client, seconds: float) -> None:
    with trio.move_on_after(seconds):
        frame = await client.recv_until("evt")
        raise AssertionError(f"unexpected {frame}")


def harness_config():
    return config(connection={"idle_timeout_s": 0})


async def test_online_then_away_without_heartbeats_and_back_with_one(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config())
    watch, _ = await watcher(h)
    ana = await h.connect(staff("ana", groups=GROUP))
    assert await next_presence(watch) == ("ana", "online")
    await trio.sleep(60)
    await ana.send({"op": "emit", "event": "heartbeat", "data": {}, "ref": 2})
    await no_presence_for(watch, 74)  # 60 + 74 s, but only 74 s since the heartbeat
    assert await next_presence(watch) == ("ana", "away")  # 2.5 x 30 s without one
    await ana.send({"op": "emit", "event": "heartbeat", "data": {}, "ref": 3})
    assert await next_presence(watch) == ("ana", "online")


async def test_explicit_away_holds_until_explicit_online(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config())
    watch, _ = await watcher(h)
    ana = await h.connect(staff("ana", groups=GROUP))
    assert await next_presence(watch) == ("ana", "online")
    await ana.send({"op": "emit", "event": "presence:away", "data": {}, "ref": 2})
    assert await next_presence(watch) == ("ana", "away")
    await ana.send({"op": "emit", "event": "heartbeat", "data": {}, "ref": 3})
    await no_presence_for(watch, 10)
    await ana.send({"op": "emit", "event": "presence:online", "data": {}, "ref": 4})
    assert await next_presence(watch) == ("ana", "online")


async def test_a_reconnect_within_grace_announces_nothing_and_offline_comes_after_grace(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config())
    watch, _ = await watcher(h)
    ana = await h.connect(staff("ana", groups=GROUP))
    assert await next_presence(watch) == ("ana", "online")
    ana.sock.close()  # abrupt: no close frame
    await trio.sleep(30)
    again = await h.connect(staff("ana", groups=GROUP))
    await no_presence_for(watch, 40)  # the first connection's grace ended meanwhile
    again.sock.close()
    started = trio.current_time()
    assert await next_presence(watch) == ("ana", "offline")
    assert 59.9 < trio.current_time() - started < 61


async def test_a_user_with_two_connections_is_online_while_either_is(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config())
    watch, _ = await watcher(h)
    tab1 = await h.connect(staff("ana", groups=GROUP))
    assert await next_presence(watch) == ("ana", "online")
    tab2 = await h.connect(staff("ana", groups=GROUP))
    await tab2.send({"op": "emit", "event": "presence:away", "data": {}, "ref": 2})
    await no_presence_for(watch, 10)  # tab1 is online
    tab1.sock.close()
    await no_presence_for(watch, 59)  # tab1 counts, online, through its grace period
    assert await next_presence(watch) == ("ana", "away")  # then only the away tab is left
    await tab2.send({"op": "emit", "event": "presence:online", "data": {}, "ref": 3})
    assert await next_presence(watch) == ("ana", "online")


async def test_a_new_watcher_gets_the_current_list_as_a_snapshot(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config())
    ana = await h.connect(staff("ana", groups=GROUP))
    bia = await h.connect(staff("bia", groups=GROUP))
    await bia.send({"op": "emit", "event": "presence:away", "data": {}, "ref": 2})
    cid = await h.connect(staff("cid", groups=("nurses",)))
    await trio.sleep(1)
    assert all(client.close_code is None for client in (ana, bia, cid))
    _, users = await watcher(h)
    assert [(u["userId"], u["state"], u["connections"]) for u in users] == [("ana", "online", 1), ("bia", "away", 1)]
