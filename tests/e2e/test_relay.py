"""The outbox relay against a real PostgreSQL (initdb/pg_ctl on a free port) and a real Redis:
late commits, commit order, kill -9, standbys, fencing, PostgreSQL down for 10 s."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
from contextlib import asynccontextmanager

import trio
from trio_asyncio import aio_as_trio

from protocol.cursors import shard_of
from rtserver.backends.bus.redis import dead_letter_key
from rtserver.client import open_client
from rtserver.node import Node
from rtserver.outbox import migrate
from rtserver.outbox.relay import relay_cursor_key
from tests.support.metrics import metric_value
from tests.support.nodes import Server, server_config, wait_until
from tests.support.outbox import SHARDS, T1_STREAM, Outbox
from tests.support.postgres import PostgresServer
from tests.support.redis_servers import flush_redis
from tests.support.webhook_receiver import Receiver
from tests.support.webhooks import Backbone, start_dispatcher, webhooks_config

@asynccontextmanager
async def relayed_subscriber(outbox: Outbox, nursery):
    """A node and a relay on the outbox's Redis, and a client of ``schedule:42`` past its snapshot."""
    node = Node(server_config(bus={"redis_url": outbox.redis_url}))
    server = Server(node, await nursery.start(node.run))
    await nursery.start(outbox.relay().run)
    async with open_client(server.ws(), server.token()) as client:
        await client.subscribe("schedule:42")
        assert (await client.next_event())["event"] == "schedule.snapshot"
        yield client


async def test_committed_rows_reach_a_client_in_commit_order_with_their_event_ids(outbox, nursery):
    async with relayed_subscriber(outbox, nursery) as client:
        ids = await outbox.commit_rows(30)
        with trio.fail_after(10):
            got = [await client.next_event() for _ in ids]
    assert [evt["id"] for evt in got] == ids
    assert [evt["data"]["appointmentId"] for evt in got] == [f"a{i}" for i in range(30)]
    assert got[0]["event"] == "appointment.created" and got[0]["room"] == "schedule:42"


async def test_a_transaction_that_commits_late_is_relayed_after_those_that_committed_first(outbox, nursery):
    relay = outbox.relay()
    await nursery.start(relay.run)
    late, early = await outbox.connect(), await outbox.connect()
    late_tx, early_tx = late.transaction(), early.transaction()
    await aio_as_trio(late_tx.start)()
    late_id = await outbox.write(late, note="inserted first, committed last")  # the lower bigserial id
    await aio_as_trio(early_tx.start)()
    early_ids = [await outbox.write(early, note=f"early {i}") for i in range(3)]
    await aio_as_trio(early_tx.commit)()
    assert await outbox.wait_stream(3) == early_ids  # relayed while the other is still open
    await trio.sleep(0.5)  # polls pass the open transaction's row by: a bigserial cursor would now be past it
    await aio_as_trio(late_tx.commit)()
    assert await outbox.wait_stream(4) == [*early_ids, late_id]
    for conn in (late, early):
        await aio_as_trio(conn.close)()


async def test_concurrent_writers_committing_out_of_order_lose_nothing_and_keep_each_aggregate_in_order(
        outbox, nursery):
    """Writers interleave inserts and commits at random, some roll back; each aggregate's
    changes serialize on its row lock, as a backbone's would. Every committed row arrives
    once, none of the rolled-back ones, and each aggregate's versions arrive in order."""
    conn = await outbox.connect()
    await aio_as_trio(conn.execute)(
        "CREATE TABLE appointments (id text PRIMARY KEY, version int NOT NULL);"
        "INSERT INTO appointments SELECT 'a' || i, 0 FROM generate_series(1, 5) i")
    await aio_as_trio(conn.close)()
    await nursery.start(outbox.relay().run)
    committed: list[str] = []
    rng = random.Random(5)

    async def writer(name: int) -> None:
        conn = await outbox.connect()
        for _ in range(12):
            tx = conn.transaction()
            await aio_as_trio(tx.start)()
            event_ids = [await outbox.write(conn, note=f"w{name} first")]  # before the lock: early id
            await trio.sleep(rng.uniform(0, 0.02))
            appointment = f"a{rng.randint(1, 5)}"
            version = await aio_as_trio(conn.fetchval)(
                "UPDATE appointments SET version = version + 1 WHERE id = $1 RETURNING version", appointment)
            event_ids.append(await outbox.write(conn, event="appointment.updated", appointmentId=appointment,
                                                version=version))
            await trio.sleep(rng.uniform(0, 0.02))
            if rng.random() < 0.15:
                await aio_as_trio(tx.rollback)()
            else:
                await aio_as_trio(tx.commit)()
                committed.extend(event_ids)
        await aio_as_trio(conn.close)()

    async with trio.open_nursery() as writers:
        for name in range(8):
            writers.start_soon(writer, name)
    [sentinel] = await outbox.commit_rows(1)  # committed after every writer: relayed after all of theirs
    ids = await outbox.wait_stream(len(committed) + 1)
    assert ids[-1] == sentinel and sorted(ids[:-1]) == sorted(committed)  # nothing more, nothing twice
    entries = outbox.redis.xrange(T1_STREAM)[:-1]
    versions: dict[str, list[int]] = {}
    for _, fields in entries:
        data = json.loads(fields[b"data"])
        if "version" in data:
            versions.setdefault(data["appointmentId"], []).append(data["version"])
    assert versions and all(v == list(range(1, len(v) + 1)) for v in versions.values()), versions


async def test_a_leader_fenced_by_another_relay_appends_nothing_and_gives_the_shard_up(outbox, nursery):
    relay = outbox.relay(standby_poll_s=60)  # does not take the shard back in this test
    await nursery.start(relay.run)
    await outbox.commit_rows(5)
    await outbox.wait_stream(5)
    shard = shard_of("t1", SHARDS)
    with trio.fail_after(5):
        while relay.led[shard].cursor < 5:
            await trio.sleep(0.05)
    outbox.redis.set(relay_cursor_key(shard, relay.outbox_id), 1000)  # another relay moved on (a partition healed)
    await outbox.commit_rows(5)
    with trio.fail_after(5):
        while shard in relay.led:
            await trio.sleep(0.05)
    assert len(outbox.stream_ids()) == 5
    assert metric_value(relay.metrics.fenced) == 1


def start_relay_process(outbox: Outbox, folder) -> subprocess.Popen:
    config = os.path.join(folder, f"relay-{secrets.token_hex(3)}.toml")
    with open(config, "w") as f:
        f.write(f'[outbox]\npostgres_dsn = "{outbox.dsn}"\npoll_interval_s = 0.2\nstandby_poll_s = 0.3\n'
                f'batch = 20\n[bus]\nredis_url = "{outbox.redis_url}"\n')
    with open(config.replace(".toml", ".log"), "w") as log:
        return subprocess.Popen([sys.executable, "-m", "rtserver", "relay", "--config", config],
                                stdout=subprocess.DEVNULL, stderr=log)


async def test_kill_9_mid_stream_then_the_standby_lose_nothing_and_repeat_nothing(outbox, tmp_path):
    """A leader killed while relaying, two relays started (one leads, one stands by), the
    leading one killed too, rows committed all along: each row is in the stream once, in
    commit order."""
    ids = await outbox.commit_rows(20_000, per_transaction=500)
    relays = [start_relay_process(outbox, tmp_path)]
    try:
        await outbox.wait_stream(1000, poll_s=0.01)
        relays[0].send_signal(signal.SIGKILL)
        assert len(outbox.stream_ids()) < len(ids), "the relay finished before it could be killed"
        relays += [start_relay_process(outbox, tmp_path), start_relay_process(outbox, tmp_path)]
        ids += await outbox.commit_rows(2000)
        await outbox.wait_stream(8000, poll_s=0.01)
        relays[1].send_signal(signal.SIGKILL)  # the leader or the standby: the other one goes on
        ids += await outbox.commit_rows(2000)
        await outbox.wait_stream(len(ids), timeout=60)
        ids += await outbox.commit_rows(1)  # a sentinel, committed last: any repeat lands before it
        await outbox.wait_stream(len(ids), timeout=60)
        assert outbox.stream_ids() == ids
    finally:
        for relay in relays:
            relay.kill()
            relay.wait()


async def test_postgres_down_for_10_s_the_relay_waits_reconnects_and_loses_nothing(redis_url, aio_loop, nursery):
    flush_redis(redis_url)
    server = PostgresServer()
    server.start()
    try:
        await migrate(server.dsn, SHARDS)
        outbox = Outbox(server.dsn, redis_url)
        relay = outbox.relay()
        await nursery.start(relay.run)
        before = await outbox.commit_rows(100)
        await outbox.wait_stream(100)
        await trio.to_thread.run_sync(server.stop)
        await trio.sleep(10)
        assert not relay.led  # it noticed, and holds nothing
        await trio.to_thread.run_sync(server.start)
        after = await outbox.commit_rows(100)
        assert await outbox.wait_stream(200) == before + after
        assert metric_value(relay.metrics.reconnects) >= 1
    finally:
        await trio.to_thread.run_sync(server.remove)


async def test_the_relay_refuses_a_database_without_the_outbox_and_migrate_refuses_another_shard_count(
        postgres, redis_url, tmp_path):
    dsn = postgres.create_database(f"empty_{secrets.token_hex(4)}")
    config = tmp_path / "relay.toml"
    config.write_text(f'[outbox]\npostgres_dsn = "{dsn}"\n[bus]\nredis_url = "{redis_url}"\n')
    command = [sys.executable, "-m", "rtserver", "relay", "--config", str(config)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "rtserver relay migrate" in refused.stderr
    assert subprocess.run([*command, "migrate"], capture_output=True, timeout=30).returncode == 0
    other = subprocess.run([*command, "migrate"], capture_output=True, text=True, timeout=30,
                           env={**os.environ, "RTSERVER_BUS__SHARDS": "8"})
    assert other.returncode != 0 and "made for 16 shards" in other.stderr


async def test_an_outbox_row_the_catalog_refuses_reaches_no_client_and_no_partner(outbox, nursery):
    receiver = Receiver()
    await nursery.start(receiver.serve)
    await start_dispatcher(nursery, webhooks_config(outbox.redis_url, receiver))
    async with relayed_subscriber(outbox, nursery) as client:
        conn = await outbox.connect()
        try:
            async with aio_as_trio(conn.transaction()):
                await outbox.write(conn, event="patient.discharged", appointmentId="a0")  # not in the catalog
                await outbox.write(conn, appointmentId="a1", patientName="Maria")  # outside the allow-list
                await outbox.write(conn, appointmentId="a2", slotId=["s1"])  # an id of the wrong type
                accepted = await outbox.write(conn, appointmentId="a3")
        finally:
            await aio_as_trio(conn.close)()
        with trio.fail_after(10):
            evt = await client.next_event()
    assert evt["id"] == accepted
    await wait_until(lambda: len(receiver.requests) == 1)
    assert json.loads(receiver.requests[0].body)["id"] == accepted
    dead = outbox.redis.xrange(dead_letter_key(shard_of("t1", SHARDS)))
    assert [fields[b"code"] for _, fields in dead] == [b"unknown_event", b"bad_payload", b"bad_payload"]
    await wait_until(lambda: Backbone(outbox.redis_url).settled("t1"))  # the dispatcher acknowledged every entry
    assert len(receiver.requests) == 1 and not any(b"Maria" in r.body for r in receiver.requests)


async def test_redis_refusing_writes_pauses_the_relay_and_the_webhooks_and_both_catch_up(outbox, nursery):
    receiver = Receiver()
    await nursery.start(receiver.serve)
    await start_dispatcher(nursery, webhooks_config(outbox.redis_url, receiver))
    relay = outbox.relay()
    await nursery.start(relay.run)
    outbox.redis.config_set("maxmemory-policy", "noeviction")
    outbox.redis.config_set("maxmemory", 1)  # every write is refused: OOM
    try:
        ids = await outbox.commit_rows(5)
        await wait_until(lambda: relay.metrics.registry.get_sample_value(
            "rt_bus_errors_total", {"kind": "refused"}) >= 1)
        assert outbox.stream_ids() == [] and receiver.requests == []
    finally:
        outbox.redis.config_set("maxmemory", 0)
    await wait_until(lambda: len(receiver.requests) == 5, timeout=20)
    assert {json.loads(r.body)["id"] for r in receiver.requests} == set(ids)  # delivered concurrently
