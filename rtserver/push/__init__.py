"""``rtserver push``: a discreet notice to the phones of users with no live connection.

Contract (one ``Dispatcher`` per process; several share the work through Redis; on the
memory bus the node runs the one dispatcher itself, on its memory stores)
  reads     the consumer group ``rt:push`` on every shard stream (created at ``$``), as
            consumer ``<host>-<pid>-<random>``: durable events whose type matches
            ``push.events`` and which name a personal room (``user:``, ``patient:``,
            ``professional:``).
  looks up  the devices registered for those rooms (``rtserver.backends.push_store``), and which of
            their owners some node holds as connected (``actors.liveness``).
  sends     to each device of an owner who is not connected and not in a quiet period
            (``push.quiet_s`` after a push to them): a fixed title and body and the ids
            (event type, event id, tenant), through FCM HTTP v1 or APNs, at most
            ``push.max_concurrency`` requests per provider at a time; a timeout, a
            connection error, 429 or 5xx is retried up to ``push.max_attempts`` with a
            jittered backoff; a device the provider calls invalid (FCM ``UNREGISTERED``,
            ``INVALID_ARGUMENT``; APNs 410, ``BadDeviceToken``) is forgotten.
  acks      an entry once its pushes are done (sent, given up, or none due); an entry
            whose lookups failed (Redis) stays pending and is claimed again after
            ``push.claim_idle_s``. A dispatcher that dies leaves its entries to another.
  guarantees  at most one notice per device per event within a run; a crash between a
            send and the ack repeats that event's notices (they say the same thing).
  blocking  a slow provider holds only its own requests; the other provider goes on.
"""

from __future__ import annotations

import fnmatch
import time

import httpx
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter, Histogram

from protocol.envelope import StoredEvent
from protocol.errors import ReplyError
from protocol.push import Device, Notice, Platform, Verdict
from rtserver.backends.auth import PERSONAL_KINDS
from rtserver.backends.bus.groups import ConsumerGroup, GroupWorker, consumer_name
from rtserver.backends.bus.redis import RedisBus
from rtserver.backends.bus.redis_groups import RedisGroup
from rtserver.backends.config import PushConfig
from rtserver.backends.metrics import watch_bus
from rtserver.backends.push_store import DeviceStore, LiveUsers
from rtserver.backends.push_store.redis import RedisDevices, RedisLiveUsers
from rtserver.backends.retry import attempt_delay_s
from rtserver.push.providers import configured_providers

log = structlog.get_logger("rtserver.push")

GROUP = "rt:push"
#: Events handled at a time (each waits for its pushes).
IN_FLIGHT = 256
#: Longest pause between two attempts of one push, seconds.
BACKOFF_MAX_S = 30.0


class PushMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """On ``registry`` (a node's, when it pushes itself), else on one of its own."""
        r = self.registry = registry or CollectorRegistry()
        self.sent = Counter("rt_push_sent_total", "Notices a provider accepted", ["platform"], registry=r)
        self.failures = Counter("rt_push_failures_total", "Failed attempts, by reason (the provider's code)",
                                ["platform", "reason"], registry=r)
        self.forgotten = Counter("rt_push_devices_forgotten_total", "Devices a provider called invalid",
                                 ["platform"], registry=r)
        self.skipped = Counter("rt_push_skipped_total",
                               "Owners of devices not pushed to, by reason (connected, quiet)", ["reason"], registry=r)
        self.latency = Histogram("rt_push_latency_seconds", "Stream append to the provider's acceptance",
                                 ["platform"], registry=r,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        for platform in Platform:  # at 0 until they count, so that rate() sees the first notice
            self.sent.labels(platform.value)
            self.forgotten.labels(platform.value)


#: ``user``, ``patient``, ``professional``: the kinds of the rooms devices are registered for.
_PERSONAL = frozenset(kind.value for kind in PERSONAL_KINDS)


def personal_rooms_of(event: StoredEvent) -> list[str]:
    """The event's rooms that belong to one person (a malformed name is none of them)."""
    return [room for room in event.envelope.rooms if room.partition(":")[0] in _PERSONAL]


def group_settings(config: PushConfig) -> dict:
    """How the dispatcher reads its consumer group (new entries only: a push is news)."""
    return {"batch": config.batch, "claim_idle_s": config.claim_idle_s, "poll_s": config.poll_s, "start": "$"}


class Dispatcher:
    """Pushes for one bus (see the module's contract), through ``group`` (created at ``$``)."""

    def __init__(self, config: PushConfig, *, devices: DeviceStore, live_users: LiveUsers, group: ConsumerGroup,
                 registry: CollectorRegistry | None = None) -> None:
        if not config.enabled:
            raise ValueError("push is not enabled ([push] enabled = true)")
        self._providers = configured_providers(config)
        if not self._providers:
            raise ValueError("no push provider configured ([push.fcm] service_account_file, [push.apns] key_file)")
        self._config = config
        self.metrics = PushMetrics(registry)
        self.devices = devices
        self._live = live_users
        self._group = group
        self._slots = {platform: trio.CapacityLimiter(config.max_concurrency) for platform in self._providers}
        self._http: dict[Platform, httpx.AsyncClient] = {}

    @classmethod
    def on_redis(cls, config: PushConfig, bus: RedisBus) -> Dispatcher:
        """The dispatcher of an ``rtserver push`` process, beside the nodes on ``bus``."""
        dispatcher = cls(config, devices=RedisDevices(bus.link, bus.shards, ttl_s=config.device_ttl_s,
                                                      max_per_user=config.max_devices_per_user),
                         live_users=RedisLiveUsers(bus.link, bus.shards),
                         group=RedisGroup(bus, GROUP, consumer_name(), **group_settings(config)))
        watch_bus(dispatcher.metrics.registry, bus)
        return dispatcher

    def _wanted(self, event: StoredEvent) -> bool:
        return (any(fnmatch.fnmatchcase(event.envelope.event, p) for p in self._config.events)
                and bool(personal_rooms_of(event)))

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        worker = GroupWorker(self._group, in_flight=IN_FLIGHT, select=self._wanted, handle=self._push)
        self._http = {platform: provider.client() for platform, provider in self._providers.items()}
        try:
            await worker.run(task_status=task_status)
        finally:
            with trio.CancelScope(shield=True):
                for client in self._http.values():
                    await client.aclose()

    async def _push(self, event: StoredEvent) -> bool:
        """Push ``event`` to the devices due; false when Redis failed (retried later)."""
        tenant = event.envelope.tenant
        try:
            devices = await self.devices.devices(tenant, personal_rooms_of(event))
            owners = sorted({d.user for d in devices.values()})
            connected = await self._live.connected(tenant, owners) if owners else set()
            due = set()
            for owner in owners:
                if owner in connected:
                    self.metrics.skipped.labels("connected").inc()
                elif await self.devices.quiet(tenant, owner, self._config.quiet_s):
                    due.add(owner)
                else:
                    self.metrics.skipped.labels("quiet").inc()
        except ReplyError as exc:
            log.warning("push_lookup_failed", event_id=event.id, error=exc.message)
            return False
        notice = Notice(event.envelope.event, event.id, tenant)
        async with trio.open_nursery() as nursery:
            for token, device in devices.items():
                if device.user in due and device.platform in self._providers:
                    nursery.start_soon(self._send, event, token, device, notice)
        return True

    async def _send(self, event: StoredEvent, token: str, device: Device, notice: Notice) -> None:
        """One device's notice, with its retries; an invalid device is forgotten."""
        platform = device.platform
        for number in range(1, self._config.max_attempts + 1):
            if number > 1:
                await trio.sleep(attempt_delay_s(number, self._config.backoff_initial_s, BACKOFF_MAX_S))
            async with self._slots[platform]:
                verdict, reason = await self._providers[platform].send(self._http[platform], token, notice)
            if verdict is Verdict.SENT:
                self.metrics.sent.labels(platform.value).inc()
                self.metrics.latency.labels(platform.value).observe(max(0.0, time.time() - event.ts / 1000))
                return
            self.metrics.failures.labels(platform.value, reason).inc()
            if verdict is not Verdict.RETRY:
                break
        if verdict is Verdict.INVALID_TOKEN:
            self.metrics.forgotten.labels(platform.value).inc()
            log.info("push_device_forgotten", platform=platform.value, reason=reason, user=device.user)
            try:
                await self.devices.drop(event.envelope.tenant, token, device)
            except ReplyError as exc:
                log.warning("push_forget_failed", error=exc.message)
        else:
            log.warning("push_failed", platform=platform.value, reason=reason, event_id=event.id, attempts=number)
