"""The Trio-native Redis client against real redis-servers: pipelines, error replies in
place, deadlines that discard a connection, credentials, a cluster's routing."""

import pytest
import trio

from rtserver.backends.redis_client import Endpoint, ErrorReply, Redis, Unreachable, pairs, stream_entries
from tests.support.net import free_port
from tests.support.redis_servers import flush_redis, plain_redis, start_redis


async def test_a_pipeline_answers_in_order_with_error_replies_in_place(redis_url):
    flush_redis(redis_url)
    client = await Redis.connect(redis_url, pool_size=2)
    try:
        answers = await client.execute([
            ("SET", "k", "v"), ("LPUSH", "k", "x"), ("GET", "k"), ("GET", "missing"),
            ("XADD", "s", "*", "a", "1", "b", b"\x00\xff"), ("HSET", "h", "f", 7), ("HGETALL", "h")])
        [(entry_id, fields)] = stream_entries(await client.call("XRANGE", "s", "-", "+"))
    finally:
        client.close()
    assert answers[0] == b"OK"
    assert isinstance(answers[1], ErrorReply) and str(answers[1]).startswith("WRONGTYPE")
    assert answers[2:4] == [b"v", None]
    assert pairs(answers[6]) == {b"f": b"7"}
    assert entry_id == answers[4] and fields == {b"a": b"1", b"b": b"\x00\xff"}


async def test_a_call_cut_by_its_deadline_never_hands_its_reply_to_the_next(redis_url):
    flush_redis(redis_url)
    client = await Redis.connect(redis_url, pool_size=1)  # one connection: the next call reuses it, or a new one
    try:
        with trio.move_on_after(0.2) as cut:
            await client.call("BLPOP", "empty-list", 1)  # answers nil after 1 s, on the abandoned connection
        assert cut.cancelled_caught
        plain_redis(redis_url).rpush("empty-list", "late")
        assert await client.call("GET", "nothing-here") is None
        assert await client.call("ECHO", "mine") == b"mine"
    finally:
        client.close()


async def test_credentials_and_database_come_from_the_url(tmp_path):
    port = free_port()
    proc = start_redis(port, tmp_path)
    try:
        admin = plain_redis(f"redis://127.0.0.1:{port}/0")
        admin.acl_setuser("rt", enabled=True, passwords=["+s3cret"], commands=["+@all"], keys=["*"])
        client = await Redis.connect(f"redis://rt:s3cret@127.0.0.1:{port}/3", pool_size=1)
        try:
            await client.call("SET", "where", "db3")
        finally:
            client.close()
        assert plain_redis(f"redis://127.0.0.1:{port}/3").get("where") == b"db3"
        with pytest.raises(Unreachable, match="WRONGPASS"):
            await Redis.connect(f"redis://rt:wrong@127.0.0.1:{port}/0", pool_size=1)
    finally:
        proc.terminate()
        proc.wait(10)


async def test_a_server_that_is_not_there_is_unreachable():
    with pytest.raises(Unreachable):
        await Redis.connect(f"redis://127.0.0.1:{free_port()}/0", pool_size=1)


def test_urls_other_than_redis_are_refused():
    with pytest.raises(ValueError, match="redis:// or rediss://"):
        Endpoint.parse("http://127.0.0.1:6379")
    assert Endpoint.parse("rediss://u:p%40ss@cache.internal:6380/2") == Endpoint(
        "cache.internal", 6380, tls=True, username="u", password="p@ss", db=2)


async def test_on_a_cluster_each_command_goes_to_the_master_of_its_key(redis_cluster_url):
    flush_redis(redis_cluster_url)
    client = await Redis.connect(redis_cluster_url, pool_size=2)
    try:
        assert client.clustered and len(client.masters()) == 3
        keys = [f"rt:{{{shard}}}:probe" for shard in range(16)]
        await client.execute([("SET", key, key) for key in keys])
        scripted = await client.execute([("EVAL", "return redis.call('GET', KEYS[1])", 1, key) for key in keys])
        read = await client.execute([("XADD", f"rt:{{{shard}}}:s", "*", "n", shard) for shard in range(16)]
                                    + [("XREAD", "STREAMS", f"rt:{{{shard}}}:s", "0") for shard in range(16)])
    finally:
        client.close()
    assert scripted == [key.encode() for key in keys]
    assert [stream_entries(answer[0][1])[0][1] for answer in read[16:]] == [{b"n": b"%d" % s} for s in range(16)]
    backbone = plain_redis(redis_cluster_url)
    assert [backbone.get(key) for key in keys] == [key.encode() for key in keys]
