"""A webhook dispatcher on a real Redis, fed by a backbone that appends with plain XADD."""

from __future__ import annotations

import json
import time
import trio
from protocol.cursors import shard_of
from rtserver.backends.bus.redis import RedisBus, stream_key
from rtserver.backends.config import load_config
from rtserver.webhooks import DEAD_LETTERS, Dispatcher, group_name
from tests.support.nodes import wait_until
from tests.support.redis_servers import plain_redis
from tests.support.webhook_receiver import Receiver


SECRET = "partner-secret-0123456789"


FAST = {"timeout_s": 0.5, "max_attempts": 4, "backoff_initial_s": 0.05, "backoff_max_s": 0.2, "poll_s": 0.02}


def webhooks_config(redis_url: str, receiver: Receiver, **subscription):
    return load_config(environ={}, overrides={
        "bus": {"redis_url": redis_url},
        "webhooks": {**FAST, "subscriptions": [
            {"name": "partner", "url": receiver.url, "secret": SECRET, **subscription}]}})


class Backbone:
    """Appends events with a plain XADD, as any backbone does."""

    def __init__(self, redis_url: str) -> None:
        self.redis = plain_redis(redis_url)

    def append(self, event: str = "appointment.created", tenant: str = "t1", event_id: str | None = None,
               **data) -> str:
        event_id = event_id or f"ev-{time.monotonic_ns()}"
        self.redis.xadd(stream_key(shard_of(tenant, 16)), {
            "event": event, "tenant": tenant, "rooms": json.dumps(["schedule:42"]), "data": json.dumps(data),
            "id": event_id})
        return event_id

    def dead_letters(self) -> list[dict]:
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in self.redis.xrange(DEAD_LETTERS)]

    def settled(self, *tenants: str) -> bool:
        """Whether the group read every entry of these tenants' streams and acknowledged
        each (delivered, dead-lettered, or not for the subscription)."""
        for tenant in tenants:
            stream = stream_key(shard_of(tenant, 16))
            [group] = [g for g in self.redis.xinfo_groups(stream) if g["name"] == b"rt:webhooks:partner"]
            if group["pending"] or group["last-delivered-id"] != self.redis.xinfo_stream(stream)["last-generated-id"]:
                return False
        return True

    def pending(self, tenant: str = "t1") -> int:
        return self.redis.xpending(stream_key(shard_of(tenant, 16)), "rt:webhooks:partner")["pending"]


async def start_dispatcher(nursery, config, scope: trio.CancelScope | None = None) -> Dispatcher:
    """A dispatcher on its own bus connection, its groups in place (they start at ``$``)."""
    bus = RedisBus.for_config(config)
    dispatcher = Dispatcher(config.webhooks, bus)

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        with scope or trio.CancelScope():
            async with bus.commands():
                await dispatcher.run(task_status=task_status)

    await nursery.start(run)
    plain, stream = plain_redis(config.bus.redis_url), stream_key(shard_of("t1", 16))
    wanted = group_name(config.webhooks.subscriptions[0]).encode()
    await wait_until(lambda: plain.exists(stream) and any(g["name"] == wanted for g in plain.xinfo_groups(stream)))
    return dispatcher
