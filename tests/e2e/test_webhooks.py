"""The webhook dispatcher against a real Redis and a real local HTTP receiver that fails,
hangs past the timeout, recovers, or is slow; signatures checked as a partner would."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import trio

from protocol.webhooks import verify
from rtserver.backends.bus.redis import RedisBus
from rtserver.backends.config import load_config
from rtserver.webhooks import replay
from tests.support.metrics import metric_value
from tests.support.net import free_port
from tests.support.nodes import wait_until
from tests.support.redis_servers import flush_redis, start_redis
from tests.support.webhook_receiver import Receiver
from tests.support.webhooks import FAST, SECRET, Backbone, start_dispatcher, webhooks_config


@pytest.fixture
async def receiver(nursery) -> Receiver:
    receiver = Receiver()
    await nursery.start(receiver.serve)
    return receiver


@pytest.fixture
def backbone(redis_url) -> Backbone:
    flush_redis(redis_url)
    return Backbone(redis_url)


async def test_matching_events_are_posted_signed_and_the_others_not(nursery, redis_url, receiver,
                                                                     backbone):
    config = webhooks_config(redis_url, receiver, events=["appointment.*"], tenants=["t1"])
    dispatcher = await start_dispatcher(nursery, config)
    backbone.append("schedule.slots.changed", slotId="s1")  # another type
    backbone.append("appointment.created", tenant="t2", appointmentId="other")  # another tenant
    wanted = backbone.append("appointment.created", appointmentId="a1")
    await wait_until(lambda: backbone.settled("t1", "t2"))  # an event wrongly matched would be answered by now
    [request] = receiver.requests
    assert verify(SECRET, request.headers, request.body, now=time.time())
    assert not verify("another-secret-0123456", request.headers, request.body, now=time.time())
    assert not verify(SECRET, request.headers, request.body + b" ", now=time.time())
    assert not verify(SECRET, request.headers, request.body, now=time.time() + 3600)  # a replayed old one
    assert request.headers["webhook-id"] == wanted and request.headers["content-type"] == "application/json"
    body = json.loads(request.body)
    assert body["id"] == wanted and body["event"] == "appointment.created" and body["tenant"] == "t1"
    assert body["data"] == {"appointmentId": "a1"} and body["rooms"] == ["schedule:42"]
    assert metric_value(dispatcher.metrics.deliveries, subscription="partner") == 1


async def test_failures_and_a_timeout_are_retried_until_the_endpoint_recovers(nursery, redis_url,
                                                                               receiver, backbone):
    receiver.script = [500, "hang", 503]
    dispatcher = await start_dispatcher(nursery, webhooks_config(redis_url, receiver))
    event_id = backbone.append(appointmentId="a1")
    await wait_until(lambda: len(receiver.requests) == 4)
    await wait_until(lambda: backbone.pending() == 0)
    assert {r.headers["webhook-id"] for r in receiver.requests} == {event_id}
    assert all(verify(SECRET, r.headers, r.body, now=time.time()) for r in receiver.requests)
    metrics = dispatcher.metrics
    assert metric_value(metrics.deliveries, subscription="partner") == 1
    assert metric_value(metrics.retries, subscription="partner") == 3
    assert [metric_value(metrics.failures, subscription="partner", reason=reason) for reason in ("500", "timeout", "503")] == [1] * 3
    assert backbone.dead_letters() == []


async def test_after_the_last_attempt_it_is_dead_lettered_and_replay_delivers_it(nursery, redis_url,
                                                                                  receiver, backbone):
    receiver.answer_for = lambda request: 400 if b'"a2"' in request.body else 503  # 400 is final: no retry
    config = webhooks_config(redis_url, receiver)
    dispatcher = await start_dispatcher(nursery, config)
    event_id = backbone.append(appointmentId="a1")
    refused = backbone.append(appointmentId="a2")
    await wait_until(lambda: len(backbone.dead_letters()) == 2 and backbone.pending() == 0)  # then acknowledged
    dead = {d["event_id"]: d for d in backbone.dead_letters()}
    assert dead[refused]["attempts"] == "1" and dead[refused]["reason"] == "400"
    assert dead[event_id]["attempts"] == "4" and dead[event_id]["reason"] == "503"
    assert metric_value(dispatcher.metrics.dead_letters, subscription="partner") == 2
    receiver.answer_for = None
    bus = RedisBus.for_config(config)
    async with bus.commands():
        assert await replay(config.webhooks, bus, "partner") == (2, 0)
    assert backbone.dead_letters() == []
    replayed = receiver.requests[-2:]
    assert {r.headers["webhook-id"] for r in replayed} == {event_id, refused}
    assert all(verify(SECRET, r.headers, r.body, now=time.time()) for r in replayed)


async def test_a_crashed_dispatchers_pending_entries_are_claimed_and_delivered_by_another(
        nursery, redis_url, receiver, backbone):
    receiver.script = ["hang"] * 3
    config = load_config(environ={}, overrides={
        "bus": {"redis_url": redis_url},
        "webhooks": {**FAST, "timeout_s": 30, "claim_idle_s": 0.5,
                     "subscriptions": [{"name": "partner", "url": receiver.url, "secret": SECRET}]}})
    crashed = trio.CancelScope()
    await start_dispatcher(nursery, config, crashed)
    ids = [backbone.append(appointmentId=f"a{i}") for i in range(3)]
    await wait_until(lambda: len(receiver.requests) == 3)
    crashed.cancel()  # no ack: the three stay pending with the dead consumer
    await trio.sleep(0.1)
    assert backbone.pending() == 3
    survivor = await start_dispatcher(nursery, config)
    await wait_until(lambda: backbone.pending() == 0)
    # each once (concurrent deliveries arrive in any order)
    assert sorted(r.headers["webhook-id"] for r in receiver.requests[3:]) == sorted(ids)
    assert metric_value(survivor.metrics.deliveries, subscription="partner") == 3


async def test_a_slow_endpoint_gets_at_most_its_concurrency_and_everything_arrives(nursery, redis_url,
                                                                                   receiver, backbone):
    receiver.delay_s = 0.1
    await start_dispatcher(nursery, webhooks_config(redis_url, receiver, max_concurrency=3))
    ids = [backbone.append(appointmentId=f"a{i}") for i in range(20)]
    await wait_until(lambda: backbone.pending() == 0 and len(receiver.requests) == 20)
    assert receiver.max_in_flight == 3
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(ids)


async def test_a_redis_outage_pauses_the_dispatcher_and_it_goes_on_after(nursery, tmp_path, receiver):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis_proc = start_redis(port, tmp_path, aof=True)  # the group and the entries survive the restart
    try:
        backbone = Backbone(url)
        await start_dispatcher(nursery, webhooks_config(url, receiver))
        before = backbone.append(appointmentId="a1")
        await wait_until(lambda: len(receiver.requests) == 1)
        redis_proc.kill()
        redis_proc.wait()
        await trio.sleep(1.5)  # the dispatcher's reads fail meanwhile
        redis_proc = start_redis(port, tmp_path, aof=True)
        after = Backbone(url).append(appointmentId="a2")
        await wait_until(lambda: len(receiver.requests) >= 2, timeout=20)
        assert [r.headers["webhook-id"] for r in receiver.requests] == [before, after]
    finally:
        redis_proc.kill()
        redis_proc.wait()


def test_the_cli_refuses_a_configuration_without_subscriptions(tmp_path, redis_url):
    config = tmp_path / "hooks.toml"
    config.write_text(f'[bus]\nredis_url = "{redis_url}"\n')
    answer = subprocess.run([sys.executable, "-m", "rtserver", "webhooks", "--config", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert answer.returncode != 0 and "no [[webhooks.subscriptions]]" in answer.stderr
