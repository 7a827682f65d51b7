"""The push stores' contract (rtserver/backends/push_store), on memory and on Redis
(standalone and cluster): registered devices and connected users."""

import trio

from protocol.push import Platform, Registration

TOKENS = [f"fcm-device-{i:04d}-abcdefghijklmnop" for i in range(4)]


def fcm(token: str) -> Registration:
    return Registration(Platform.FCM, token)


async def until(read, wanted, timeout: float = 5) -> None:
    """Wait for the coroutine function ``read`` to answer ``wanted`` (an expiry on the store's clock)."""
    with trio.fail_after(timeout):
        while await read() != wanted:
            await trio.sleep(0.05)


async def test_a_device_is_found_through_every_room_it_was_registered_for(bus_env):
    devices = bus_env.devices(await bus_env.bus())
    assert await devices.register("t1", "ana", ["user:ana", "patient:p1"], fcm(TOKENS[0])) == []
    await devices.register("t2", "ana", ["user:ana"], fcm(TOKENS[1]))  # another tenant
    for rooms in (["user:ana"], ["patient:p1"], ["patient:p1", "user:ana"]):
        found = await devices.devices("t1", rooms)
        assert list(found) == [TOKENS[0]]
        assert (found[TOKENS[0]].user, found[TOKENS[0]].rooms) == ("ana", ["user:ana", "patient:p1"])
    assert await devices.devices("t1", ["patient:p2"]) == {}


async def test_one_device_too_many_forgets_the_oldest_others(bus_env):
    devices = bus_env.devices(await bus_env.bus(), max_per_user=2)
    for token in TOKENS[:2]:
        assert await devices.register("t1", "ana", ["user:ana"], fcm(token)) == []
        await trio.sleep(0.002)  # registration times are in ms
    assert await devices.register("t1", "ana", ["user:ana"], fcm(TOKENS[2])) == [TOKENS[0]]
    assert sorted(await devices.devices("t1", ["user:ana"])) == TOKENS[1:3]
    assert await devices.register("t1", "ana", ["user:ana"], fcm(TOKENS[1])) == []  # a renewal is no new device


async def test_only_its_owner_unregisters_a_device(bus_env):
    devices = bus_env.devices(await bus_env.bus())
    await devices.register("t1", "ana", ["user:ana"], fcm(TOKENS[0]))
    assert await devices.unregister("t1", "bia", ["user:bia"], TOKENS[0]) is False
    assert list(await devices.devices("t1", ["user:ana"])) == [TOKENS[0]]
    assert await devices.unregister("t1", "ana", ["user:ana"], TOKENS[0]) is True
    assert await devices.devices("t1", ["user:ana"]) == {}


async def test_a_token_that_moved_to_another_user_or_was_dropped_is_found_by_nobody_else(bus_env):
    devices = bus_env.devices(await bus_env.bus())
    await devices.register("t1", "ana", ["user:ana"], fcm(TOKENS[0]))
    await devices.register("t1", "bia", ["user:bia"], fcm(TOKENS[0]))  # the phone changed hands
    assert await devices.devices("t1", ["user:ana"]) == {}
    [(token, device)] = (await devices.devices("t1", ["user:bia"])).items()
    assert (token, device.user) == (TOKENS[0], "bia")
    await devices.drop("t1", token, device)
    assert await devices.devices("t1", ["user:bia"]) == {}


async def test_a_registration_not_renewed_expires(bus_env):
    devices = bus_env.devices(await bus_env.bus(), ttl_s=1)
    await devices.register("t1", "ana", ["user:ana"], fcm(TOKENS[0]))
    assert list(await devices.devices("t1", ["user:ana"])) == [TOKENS[0]]
    await until(lambda: devices.devices("t1", ["user:ana"]), {})


async def test_a_quiet_period_starts_once_and_runs_out(bus_env):
    devices = bus_env.devices(await bus_env.bus())
    assert await devices.quiet("t1", "ana", 0.3) is True
    assert await devices.quiet("t1", "ana", 0.3) is False
    assert await devices.quiet("t1", "bia", 0.3) is True  # each user their own
    assert await devices.quiet("t1", "ana", 0) is True  # 0: no quiet period
    await until(lambda: devices.quiet("t1", "ana", 0.3), True)


async def test_a_user_is_connected_while_any_holder_holds_them(bus_env):
    live = bus_env.live_users(await bus_env.bus())
    await live.hold("node-a", [("t1", "ana"), ("t1", "bia")], [], lease_s=60, grace_s=0)
    await live.hold("node-b", [("t1", "ana")], [], lease_s=60, grace_s=0)
    assert await live.connected("t1", ["ana", "bia", "cid"]) == {"ana", "bia"}
    assert await live.connected("t2", ["ana"]) == set()
    await live.hold("node-a", [], [("t1", "ana"), ("t1", "bia")], lease_s=60, grace_s=0.2)
    assert await live.connected("t1", ["ana", "bia"]) == {"ana", "bia"}  # within the grace
    await until(lambda: live.connected("t1", ["ana", "bia"]), {"ana"})  # node-b still holds ana


async def test_a_holder_that_stops_renewing_lets_its_users_go_when_the_lease_ends(bus_env):
    live = bus_env.live_users(await bus_env.bus())
    await live.hold("crashed", [("t1", "ana")], [], lease_s=0.3, grace_s=0)
    assert await live.connected("t1", ["ana"]) == {"ana"}
    await until(lambda: live.connected("t1", ["ana"]), set())
