"""The Redis link against a real redis-server: deadlines, failures counted by kind, and
health that comes back once Redis answers."""

import contextlib

import pytest
import trio

from rtserver.backends.config import BusConfig
from rtserver.backends.redis_link import REFUSED, UNREACHABLE, BusUnavailable, RedisLink
from tests.support.redis_servers import flush_redis


@contextlib.asynccontextmanager
async def connected(redis_url: str, **bus):
    """A link to the emptied Redis at ``redis_url``, with ``bus`` configuration."""
    flush_redis(redis_url)
    link = RedisLink(BusConfig(redis_url=redis_url, **bus), redis_url)
    await link.connect()
    try:
        yield link
    finally:
        link.close()


async def test_a_call_past_its_deadline_fails_and_the_link_is_unhealthy_until_redis_answers(redis_url):
    async with connected(redis_url, call_timeout_s=0.3) as link:
        assert link.healthy
        with pytest.raises(BusUnavailable, match="no answer within 0.3 s"):
            await link.call("BLPOP", "nothing", 5)  # the server waits longer than the deadline
        assert not link.healthy and link.errors[UNREACHABLE] == 1
        assert await link.call("SET", "k", "v") == b"OK"  # a call in time does not say all is well...
        assert not link.healthy
        await link.probe()  # ...every master answering a PING does
        assert link.healthy


async def test_an_error_reply_nobody_expected_is_refused_and_counted(redis_url):
    async with connected(redis_url) as link:
        await link.call("SET", "k", "v")
        with pytest.raises(BusUnavailable, match="WRONGTYPE"):
            await link.execute([("GET", "k"), ("LPUSH", "k", "x")])
        assert link.errors[REFUSED] == 1 and link.healthy
        [missing] = await link.execute([("XINFO", "STREAM", "no-stream")])  # expected: kept in place
        assert "no such key" in str(missing).lower()


async def test_scripts_are_loaded_when_redis_does_not_know_them(redis_url):
    async with connected(redis_url) as link:
        await link.call("SCRIPT", "FLUSH")
        script = "return redis.call('INCR', KEYS[1])"
        assert await link.scripts(script, [(["n"], []), (["n"], [])]) == [1, 2]
        assert await link.scripts(script, [(["n"], [])]) == [3]


async def test_a_reconnect_never_leaves_callers_without_a_client(redis_url, nursery):
    async with connected(redis_url) as link:
        nursery.start_soon(link.connect)  # a reconnect in flight (the bus does one after a failure)
        await trio.lowlevel.checkpoint()  # it has started, not finished
        assert await link.call("PING") == b"PONG"  # served by the previous client meanwhile
