"""One place that chooses a node's backends from its configuration.

Without ``bus.redis_url``: the memory bus and the memory stores (one node). With it: the
Redis Streams bus and the Redis stores, every node sharing them. With ``push.enabled``,
the push device and connected-user stores too. ``groups`` opens consumer groups on the
chosen bus. The Redis bus's gauges (errors, reconnects, lag per shard, dead letters) are
registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from rtserver.backends.bus import Bus
from rtserver.backends.bus.groups import ConsumerGroup
from rtserver.backends.bus.memory import MemoryBus, MemoryGroup
from rtserver.backends.bus.redis import RedisBus
from rtserver.backends.bus.redis_groups import RedisGroup
from rtserver.backends.config import Config
from rtserver.backends.metrics import Metrics
from rtserver.backends.presence import MemoryPresence, PresenceStore
from rtserver.backends.presence.redis import RedisPresence
from rtserver.backends.push_store import DeviceStore, LiveUsers, MemoryDevices, MemoryLiveUsers
from rtserver.backends.push_store.redis import RedisDevices, RedisLiveUsers
from rtserver.backends.recovery import MemoryRecovery, RecoveryStore, RedisRecovery
from rtserver.backends.schedules import MemorySchedules, ScheduleStore
from rtserver.backends.schedules.redis import RedisSchedules


@dataclass(frozen=True, slots=True)
class Backends:
    """What a node runs on."""

    bus: Bus
    presence: PresenceStore
    schedules: ScheduleStore
    #: ``groups(name, consumer, *, batch, claim_idle_s, poll_s, start)``: a consumer group
    #: of the bus (``rtserver.backends.bus.groups``).
    groups: Callable[..., ConsumerGroup]
    #: Socket.IO sessions' rooms, for their recovery on any node.
    recovery: RecoveryStore
    #: With push on: the devices registered through ``/{ns}/push/devices``, and who is
    #: connected (``rtserver push`` pushes to the others).
    devices: DeviceStore | None = None
    live_users: LiveUsers | None = None


def open_backends(config: Config, metrics: Metrics, holder: str) -> Backends:
    """The backends ``config`` names, for the node called ``holder`` in the shared stores."""
    push = config.push
    if not config.bus.redis_url:
        bus = MemoryBus(config.bus)
        return Backends(
            bus, MemoryPresence(), MemorySchedules(bus, config.schedules.mailbox), partial(MemoryGroup, bus),
            MemoryRecovery(),
            devices=MemoryDevices(ttl_s=push.device_ttl_s, max_per_user=push.max_devices_per_user)
            if push.enabled else None,
            live_users=MemoryLiveUsers() if push.enabled else None,
        )
    bus = RedisBus.for_config(config, on_dead_letter=lambda code: metrics.dead_letters.labels(code).inc())
    metrics.watch_bus(bus)
    for shard in range(bus.shards):
        metrics.stream_lag_entries.labels(str(shard)).set_function(lambda s=shard: bus.lag[s][0])
        metrics.stream_lag_seconds.labels(str(shard)).set_function(lambda s=shard: bus.lag[s][1])
    return Backends(
        bus,
        RedisPresence(bus.link, bus.shards, config.presence.ttl_s),
        RedisSchedules(bus, config.schedules, consumer=holder),
        partial(RedisGroup, bus),
        RedisRecovery(bus.link),
        devices=RedisDevices(bus.link, bus.shards, ttl_s=push.device_ttl_s, max_per_user=push.max_devices_per_user)
        if push.enabled else None,
        live_users=RedisLiveUsers(bus.link, bus.shards) if push.enabled else None,
    )
