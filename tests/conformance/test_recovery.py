"""The Socket.IO recovery store's contract (rtserver/backends/recovery.py), on memory and on
Redis (standalone and cluster): a session's rooms by pid, rewritten at each change, expiring."""

import trio


async def test_the_last_rooms_remembered_for_a_pid_are_recalled_until_they_expire(bus_env):
    store = bus_env.recovery(await bus_env.bus())
    assert await store.recall("pid-1") == []
    await store.remember("pid-1", ["patient:p1", "thread:t1"], ttl_s=60)
    await store.remember("pid-2", ["patient:p2"], ttl_s=0.3)
    assert await store.recall("pid-1") == ["patient:p1", "thread:t1"]
    await store.remember("pid-1", ["thread:t1"], ttl_s=60)  # unsubscribed from one
    assert await store.recall("pid-1") == ["thread:t1"]
    assert await store.recall("pid-2") == ["patient:p2"]
    with trio.fail_after(5):
        while await store.recall("pid-2"):
            await trio.sleep(0.05)
    assert await store.recall("pid-1") == ["thread:t1"]
