"""``rtserver webhooks``: signed deliveries of the shard streams' events to partner URLs.

Contract (one ``Destination`` task per configured subscription)
  reads     its own consumer group ``rt:webhooks:<name>`` on every shard stream (created
            at ``$``: events appended from then on), as consumer ``<host>-<pid>-<random>``;
            dispatchers sharing a Redis share the work.
  sends     each matching event (``events`` patterns, ``tenants``) as a signed ``POST``
            (``protocol.webhooks``), at most ``max_concurrency`` at a time; 2xx is done;
            a timeout, a connection error, 408, 425, 429 or 5xx is retried after an
            exponential backoff with full jitter; after ``max_attempts``, or at once on any
            other 4xx, the delivery goes to the dead-letter stream ``rt:webhooks:dead``.
  acks      an entry once it is delivered, dead-lettered, or not for this subscription;
            until then it stays pending with this consumer, which keeps it claimed
            (``XCLAIM JUSTID``) while it retries. A dispatcher that dies leaves its entries
            pending; after ``claim_idle_s`` another claims them (``XAUTOCLAIM``).
  guarantees  at least once per subscription (a crash after the POST and before the ack
            sends it again): receivers deduplicate on ``Webhook-Id``.
  blocking  a slow endpoint holds only its own deliveries (bounded by ``max_concurrency``
            and the in-flight cap); subscriptions are independent groups.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass

import httpx
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter, Histogram

from protocol.envelope import StoredEvent
from protocol.webhooks import delivery_body, signed_headers
from rtserver.backends.bus.groups import GroupWorker, consumer_name
from rtserver.backends.bus.redis import RedisBus
from rtserver.backends.bus.redis_groups import RedisGroup
from rtserver.backends.config import WebhookSubscription, WebhooksConfig
from rtserver.backends.metrics import watch_bus
from rtserver.backends.redis_client import stream_entries
from rtserver.backends.retry import attempt_delay_s

log = structlog.get_logger("rtserver.webhooks")

DEAD_LETTERS = "rt:webhooks:dead"
#: Dead letters kept (``MAXLEN ~``).
DEAD_LETTERS_KEPT = 100_000
#: Statuses worth another attempt; any other non-2xx is final.
RETRIED_STATUSES = frozenset({408, 425, 429})
#: Deliveries in flight per subscription (retries included) per concurrency slot.
IN_FLIGHT_PER_SLOT = 16


def group_name(subscription: WebhookSubscription) -> str:
    return f"rt:webhooks:{subscription.name}"


class WebhookMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.deliveries = Counter("rt_webhook_deliveries_total", "Events delivered (a 2xx answer)",
                                  ["subscription"], registry=r)
        self.failures = Counter("rt_webhook_failures_total", "Failed attempts, by reason (status, timeout, error)",
                                ["subscription", "reason"], registry=r)
        self.retries = Counter("rt_webhook_retries_total", "Attempts after the first", ["subscription"], registry=r)
        self.dead_letters = Counter("rt_webhook_dead_letters_total", "Deliveries given up (dead-lettered)",
                                    ["subscription"], registry=r)
        self.latency = Histogram("rt_webhook_latency_seconds", "Stream append to the delivering 2xx answer",
                                 ["subscription"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))

    def start_at_zero(self, subscriptions: list[str]) -> None:
        """The counters of each subscription, at 0 until they count (so that ``rate()`` and
        ``increase()`` see their first event)."""
        for name in subscriptions:
            for counter in (self.deliveries, self.retries, self.dead_letters):
                counter.labels(name)


@dataclass(slots=True)
class Outcome:
    """One attempt: delivered, or why not and whether another attempt may succeed."""

    delivered: bool
    reason: str = ""
    retry: bool = False


def matches(subscription: WebhookSubscription, event: StoredEvent) -> bool:
    envelope = event.envelope
    return (any(fnmatch.fnmatchcase(envelope.event, p) for p in subscription.events)
            and any(t == "*" or t == envelope.tenant for t in subscription.tenants))


async def attempt(http: httpx.AsyncClient, subscription: WebhookSubscription, event_id: str, body: bytes,
                  timeout_s: float) -> Outcome:
    """One signed POST of ``body``."""
    headers = signed_headers(subscription.secret, event_id, int(time.time()), body)
    try:
        with trio.fail_after(timeout_s):
            answer = await http.post(subscription.url, content=body, headers=headers)
    except trio.TooSlowError:
        return Outcome(False, "timeout", retry=True)
    except httpx.HTTPError as exc:
        return Outcome(False, type(exc).__name__, retry=True)
    if 200 <= answer.status_code < 300:
        return Outcome(True)
    status = answer.status_code
    return Outcome(False, str(status), retry=status >= 500 or status in RETRIED_STATUSES)


class Destination:
    """The deliveries of one subscription (see the module's contract)."""

    def __init__(self, bus: RedisBus, config: WebhooksConfig, subscription: WebhookSubscription,
                 metrics: WebhookMetrics, consumer: str) -> None:
        self._bus = bus
        self._config = config
        self.subscription = subscription
        self._metrics = metrics
        self._group = RedisGroup(bus, group_name(subscription), consumer, batch=config.batch,
                                 claim_idle_s=config.claim_idle_s, poll_s=config.poll_s, start="$")
        self._slots = trio.CapacityLimiter(subscription.max_concurrency)
        self._http: httpx.AsyncClient | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        timeout = httpx.Timeout(self._config.timeout_s)
        limits = httpx.Limits(max_connections=self.subscription.max_concurrency)
        worker = GroupWorker(self._group, in_flight=self.subscription.max_concurrency * IN_FLIGHT_PER_SLOT,
                             select=lambda event: matches(self.subscription, event), handle=self._deliver)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as self._http:
            await worker.run(task_status=task_status)

    async def _deliver(self, event: StoredEvent) -> bool:
        """Deliver ``event`` with its retries, or dead-letter it: either way it is done."""
        name = self.subscription.name
        body = delivery_body(event)
        for number in range(1, self._config.max_attempts + 1):
            if number > 1:
                self._metrics.retries.labels(name).inc()
                await trio.sleep(attempt_delay_s(number, self._config.backoff_initial_s, self._config.backoff_max_s))
            async with self._slots:
                outcome = await attempt(self._http, self.subscription, event.id, body, self._config.timeout_s)
            if outcome.delivered:
                self._metrics.deliveries.labels(name).inc()
                self._metrics.latency.labels(name).observe(max(0.0, time.time() - event.ts / 1000))
                return True
            self._metrics.failures.labels(name, outcome.reason).inc()
            if not outcome.retry:
                break
        await dead_letter(self._bus, name, event.id, body, number, outcome.reason)
        self._metrics.dead_letters.labels(name).inc()
        log.warning("webhook_dead_lettered", subscription=name, event_id=event.id, attempts=number,
                    reason=outcome.reason)
        return True


async def dead_letter(bus: RedisBus, subscription: str, event_id: str, body: bytes, attempts: int,
                      reason: str) -> None:
    await bus.link.call("XADD", DEAD_LETTERS, "MAXLEN", "~", DEAD_LETTERS_KEPT, "*",
                   "subscription", subscription, "event_id", event_id, "body", body, "attempts", attempts,
                   "reason", reason, "at", int(time.time() * 1000))


class Dispatcher:
    """Every configured subscription's ``Destination``, on one Redis."""

    def __init__(self, config: WebhooksConfig, bus: RedisBus, metrics: WebhookMetrics | None = None) -> None:
        if not config.subscriptions:
            raise ValueError("no webhook subscriptions configured ([[webhooks.subscriptions]])")
        self.metrics = metrics or WebhookMetrics()
        self.metrics.start_at_zero([s.name for s in config.subscriptions])
        watch_bus(self.metrics.registry, bus)
        consumer = consumer_name()
        self.destinations = [Destination(bus, config, s, self.metrics, consumer) for s in config.subscriptions]

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for destination in self.destinations:
                await nursery.start(destination.run)
            task_status.started()


async def replay(config: WebhooksConfig, bus: RedisBus, subscription: str | None = None) -> tuple[int, int]:
    """One new attempt for each dead letter (of ``subscription``, or all); delivered ones
    leave the dead-letter stream. Returns (delivered, still dead)."""
    by_name = {s.name: s for s in config.subscriptions}
    delivered = failed = 0
    async with httpx.AsyncClient(timeout=httpx.Timeout(config.timeout_s)) as http:
        start = "-"
        while True:
            entries = stream_entries(await bus.link.call("XRANGE", DEAD_LETTERS, start, "+", "COUNT", 100))
            for entry_id, fields in entries:
                name = fields[b"subscription"].decode()
                if subscription is not None and name != subscription:
                    continue
                target = by_name.get(name)
                if target is None:
                    log.warning("webhook_replay_unknown_subscription", subscription=name)
                    failed += 1
                    continue
                outcome = await attempt(http, target, fields[b"event_id"].decode(), fields[b"body"], config.timeout_s)
                if outcome.delivered:
                    await bus.link.call("XDEL", DEAD_LETTERS, entry_id)
                    delivered += 1
                else:
                    failed += 1
            if len(entries) < 100:
                return delivered, failed
            start = "(" + entries[-1][0].decode()
