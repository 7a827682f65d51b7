"""Presence timers on the memory store, under the autojump clock (the durations of docs/protocol.md, Presence)."""

import trio

from actors.presence import PUT_CHUNK, RENEWAL_PARTS
from protocol.presence import PresenceKey, PresenceState, View
from rtserver.backends.presence import SWEEP_CHUNK, MemoryPresence
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


class RecordedPuts(trio.abc.Instrument):
    """The node's presence store, recording each put: its keys, when, and the number of task
    steps Trio had begun by then (an instrument: two puts in one step see the same number)."""

    def __init__(self, store) -> None:
        self._store = store
        self.puts: list[tuple[list, float, int]] = []
        self.steps = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def before_task_step(self, task) -> None:
        self.steps += 1

    async def put(self, views, *args):
        self.puts.append(([view.key for view in views], trio.current_time(), self.steps))
        return await self._store.put(views, *args)


async def connect_many(h, users: int) -> RecordedPuts:
    """``users`` staff connected at once (through the presence mailbox), their first views
    put; the store recording from then on."""
    store = h.presence.store = RecordedPuts(h.presence.store)
    trio.lowlevel.add_instrument(store)
    for i in range(users):
        await h.presence.connected(("connection", i), "t1", f"user-{i}", GROUP)
    await trio.sleep(0.5)
    return store


async def test_a_burst_of_changes_is_put_in_chunks_with_the_node_running_between(nursery, autojump_clock):
    h = await start_harness(nursery, config(connection={"idle_timeout_s": 0},
                                            presence={"grace_s": 200, "sweep_interval_s": 100}))
    users = 2 * PUT_CHUNK + 1
    store = await connect_many(h, users)
    away_at = trio.current_time() + h.config.connection.heartbeat_s * h.config.presence.away_after_heartbeats - 0.5
    await trio.sleep(away_at - trio.current_time() + 1)  # no heartbeats: every away timer fires at once
    trio.lowlevel.remove_instrument(store)
    burst = [(len(keys), step) for keys, when, step in store.puts if when >= away_at]  # no renewal part then
    assert [size for size, _ in burst] == [PUT_CHUNK, PUT_CHUNK, 1]
    steps = [step for _, step in burst]
    assert steps == sorted(set(steps))  # each chunk in a step of its own: the node ran between
    now = await h.presence.snapshot("t1", GROUP[0])
    assert len(now) == users and {entry.state.value for entry in now} == {"away"}


async def test_a_renewal_puts_every_view_once_per_interval_in_parts_spread_over_it(nursery, autojump_clock):
    h = await start_harness(nursery, harness_config())
    users = 3 * PUT_CHUNK * RENEWAL_PARTS  # a part is more than a chunk
    store = await connect_many(h, users)
    store.puts.clear()
    await trio.sleep(h.config.presence.sweep_interval_s)
    trio.lowlevel.remove_instrument(store)
    renewed = [key for keys, _, _ in store.puts for key in keys]
    assert len(renewed) == len(set(renewed)) == users  # every view once
    assert len({when for _, when, _ in store.puts}) == RENEWAL_PARTS  # at as many moments
    assert max(len(keys) for keys, _, _ in store.puts) <= PUT_CHUNK
    steps = [step for _, _, step in store.puts]
    assert steps == sorted(set(steps))  # each chunk in a step of its own (nothing to announce)


async def test_each_view_is_renewed_within_the_interval_of_its_last_put_whenever_its_user_came(
        nursery, autojump_clock):
    """The parts of a renewal cycle are drawn at its start: a user who comes later is still
    renewed within ``sweep_interval_s`` of the put that announced them, in this cycle's
    part when it has not come yet, else in the next cycle's."""
    h = await start_harness(nursery, harness_config())
    interval = h.config.presence.sweep_interval_s
    store = await connect_many(h, 0)
    comers = 4 * RENEWAL_PARTS
    for i in range(comers):  # over two cycles, at moments that fall between the parts
        await h.presence.connected(("late", i), "t1", f"late-{i}", GROUP)
        await trio.sleep(2 * interval / comers + 0.013)
    await trio.sleep(2 * interval)
    end = trio.current_time()
    trio.lowlevel.remove_instrument(store)
    puts: dict = {}
    for keys, when, _ in store.puts:
        for key in keys:
            puts.setdefault(key.user, []).append(when)
    assert len(puts) == comers
    for times in puts.values():
        gaps = [later - earlier for earlier, later in zip(times, [*times[1:], end])]
        assert max(gaps) <= interval + 0.01, gaps


async def test_a_sweep_of_the_memory_store_lets_the_node_s_other_tasks_run_between_chunks(nursery):
    store = MemoryPresence()
    chunks = 4
    users = [PresenceKey("t1", "attendants", f"user-{i}") for i in range(chunks * SWEEP_CHUNK)]
    await store.put([View(user, PresenceState.ONLINE, 1) for user in users], "node-a", 1000, 60_000)
    turns = []

    async def another_task() -> None:
        while True:
            turns.append(None)
            await trio.lowlevel.checkpoint()

    nursery.start_soon(another_task)
    await trio.lowlevel.checkpoint()  # it has started
    before = len(turns)
    assert await store.sweep(2000) == []
    # Trio runs the tasks of each batch in a random order, so of the three turns the other
    # task has between the four chunks, the first and last may fall before or after them;
    # one sweep in one step would leave it none.
    assert len(turns) - before >= chunks - 2
