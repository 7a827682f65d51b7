"""The presence store contract, on the memory store and on Redis (standalone and cluster)."""

from protocol.presence import PresenceState
from rtserver.backends.presence import PresenceKey, View

ON, AWAY, OFF = PresenceState.ONLINE, PresenceState.AWAY, PresenceState.OFFLINE
ANA = PresenceKey("t1", "attendants", "ana")
BIA = PresenceKey("t1", "attendants", "bia")
LEASE = 60_000


async def store_of(bus_env):
    return bus_env.presence(await bus_env.bus())


def states(changes):
    return [(key.user, entry.state, entry.connections) for key, entry in changes]


async def test_a_user_is_online_while_any_holder_holds_them_and_changes_are_reported_once(bus_env):
    store = await store_of(bus_env)
    assert states(await store.put([View(ANA, ON, 1)], "node-a", 1000, LEASE)) == [("ana", ON, 1)]
    assert await store.put([View(ANA, ON, 2)], "node-b", 1001, LEASE) == []  # already online
    assert await store.put([View(ANA, OFF, 0)], "node-a", 1002, LEASE) == []  # node-b still holds her
    assert states(await store.put([View(ANA, AWAY, 2)], "node-b", 1003, LEASE)) == [("ana", AWAY, 2)]
    assert states(await store.put([View(ANA, OFF, 0)], "node-b", 1004, LEASE)) == [("ana", OFF, 0)]
    assert await store.snapshot("t1", "attendants") == []


async def test_the_snapshot_lists_who_is_not_offline_with_since_and_connections(bus_env):
    store = await store_of(bus_env)
    await store.put([View(BIA, AWAY, 1), View(ANA, ON, 1)], "node-a", 1000, LEASE)
    await store.put([View(ANA, ON, 2)], "node-b", 2000, LEASE)
    await store.put([View(PresenceKey("t2", "attendants", "cid"), ON, 1)], "node-a", 1000, LEASE)
    await store.put([View(PresenceKey("t1", "nurses", "dan"), ON, 1)], "node-a", 1000, LEASE)
    snapshot = await store.snapshot("t1", "attendants")
    assert [(e.user, e.state, e.since, e.connections) for e in snapshot] == [
        ("ana", ON, 1000, 3), ("bia", AWAY, 1000, 1)]


async def test_since_changes_only_with_the_state(bus_env):
    store = await store_of(bus_env)
    await store.put([View(ANA, ON, 1)], "node-a", 1000, LEASE)
    await store.put([View(ANA, ON, 2)], "node-a", 5000, LEASE)
    [ana] = await store.snapshot("t1", "attendants")
    assert (ana.since, ana.connections) == (1000, 2)
    [(_, away)] = await store.put([View(ANA, AWAY, 2)], "node-a", 7000, LEASE)
    assert away.since == 7000


async def test_a_holder_that_stops_renewing_is_swept_once(bus_env):
    store = await store_of(bus_env)
    await store.put([View(ANA, ON, 1)], "crashed", 1000, 5000)
    await store.put([View(BIA, ON, 1)], "crashed", 1000, 5000)
    await store.put([View(BIA, AWAY, 1)], "alive", 1000, 60_000)
    assert await store.sweep(5999) == []
    assert sorted(states(await store.sweep(6001))) == [("ana", OFF, 0), ("bia", AWAY, 1)]
    assert await store.sweep(6002) == []  # a second node's sweep finds nothing left
    assert [e.user for e in await store.snapshot("t1", "attendants")] == ["bia"]


async def test_a_renewed_lease_is_not_swept(bus_env):
    store = await store_of(bus_env)
    await store.put([View(ANA, ON, 1)], "node-a", 1000, 5000)
    await store.put([View(ANA, ON, 1)], "node-a", 5000, 5000)  # renewal
    assert await store.sweep(7000) == []
    assert states(await store.sweep(10_001)) == [("ana", OFF, 0)]


async def test_a_renewal_after_another_holders_lease_ran_out_reports_the_change(bus_env):
    store = await store_of(bus_env)
    await store.put([View(ANA, ON, 1)], "crashed", 1000, 5000)
    await store.put([View(ANA, AWAY, 1)], "alive", 1000, 60_000)
    assert states(await store.put([View(ANA, AWAY, 1)], "alive", 5000, 60_000)) == []  # renewal
    assert states(await store.put([View(ANA, AWAY, 1)], "alive", 6001, 60_000)) == [("ana", AWAY, 1)]
    assert await store.sweep(6002) == []


async def test_redis_presence_keys_expire_as_garbage_collection(bus_env):
    if bus_env.kind == "memory":
        return  # nothing to collect: the memory store lives and dies with its node
    bus = await bus_env.bus()
    store = bus_env.presence(bus, ttl_s=120)
    await store.put([View(ANA, ON, 1)], "node-a", 1000, LEASE)
    raw = bus_env.raw()
    keys = [k for k in raw.keys("*presence*")] if not hasattr(raw, "get_nodes") else [
        k for node in raw.get_primaries() for k in raw.keys("*presence*", target_nodes=node)]
    assert len(keys) == 3
    assert all(0 < raw.ttl(k) <= 120 for k in keys)
