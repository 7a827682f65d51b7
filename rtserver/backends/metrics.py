"""Prometheus metrics of one node, on a registry of its own (several nodes may share a process in tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from protocol.frames import ClientFrame, Emit

if TYPE_CHECKING:
    from protocol.catalog import Catalog
    from rtserver.backends.bus.redis import RedisBus

# No ``*_created`` series beside each counter and histogram: a series per label set that
# dashboards and alerts never use (every process of rtserver imports this module).
disable_created_metrics()

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge(
            "rt_connections", "Open client connections", ["ns", "transport"], registry=r
        )
        self.messages_in = Counter(
            "rt_messages_in_total", "Client frames received: by op, or by event name for emits of a client "
            "event type of the catalog ('unknown' for any other name, 'invalid' for undecodable frames)",
            ["kind"], registry=r
        )
        self.messages_out = Counter(
            "rt_messages_out_total",
            "Event frames queued to clients (one per recipient), by event type",
            ["event"],
            registry=r,
        )
        self.published = Counter(
            "rt_published_total", "Events appended or published, by event type and outcome",
            ["event", "outcome"], registry=r,
        )
        self.delivery_latency = Histogram(
            "rt_delivery_latency_seconds",
            "Bus append to the end of the socket flush that wrote the event (one sample per event per room)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.outbound_queued_bytes = Gauge(
            "rt_outbound_queued_bytes", "Bytes queued to clients and not yet written", registry=r
        )
        self.outbound_queued_frames = Gauge(
            "rt_outbound_queued_frames", "Frames queued to clients and not yet written", registry=r
        )
        self.socket_writes = Gauge(
            "rt_socket_writes", "Socket writes by the writer since start (monotonic)", registry=r
        )
        self.frames_written = Gauge(
            "rt_frames_written", "Frames those writes carried since start (monotonic)", registry=r
        )
        self.disconnects = Counter(
            "rt_disconnects_total", "Closed connections, by reason", ["reason"], registry=r
        )
        self.rate_limited = Counter(
            "rt_rate_limited_total", "Client commands refused by the inbound rate limit", registry=r
        )
        self.rooms = Gauge("rt_rooms", "Room actors alive", registry=r)
        self.dead_letters = Counter(
            "rt_dead_letters_total", "Stream entries never forwarded (dead-lettered), by reason code",
            ["code"], registry=r,
        )
        self.internal_errors = Counter(
            "rt_internal_errors_total",
            "Unexpected exceptions contained in one request, connection or stream (logged with its "
            "correlation id), by where they happened", ["where"], registry=r,
        )
        self.stream_lag_entries = Gauge(
            "rt_stream_lag_entries", "Entries this node's reader is behind, per shard",
            ["shard"], registry=r,
        )
        self.stream_lag_seconds = Gauge(
            "rt_stream_lag_seconds", "Age of this node's read position when behind, per shard",
            ["shard"], registry=r,
        )
        self.auth_failures = Counter(
            "rt_auth_failures_total", "Handshakes refused, by reason", ["reason"], registry=r
        )
        self.tls_certificate_expiry = Gauge(
            "rt_tls_certificate_expiry_timestamp_seconds",
            "When the TLS certificate this node serves expires (notAfter, s since the epoch); 0 with TLS off",
            registry=r,
        )
        self.tls_handshake_failures = Counter(
            "rt_tls_handshake_failures_total", "TLS handshakes that failed, by reason (server.tls_cert_file set)",
            ["reason"], registry=r,
        )

        self.presence_connections = Gauge(
            "rt_presence_connections",
            "Connections this node's presence actor counts (open, or closed and within grace)", registry=r,
        )
        self.presence_announcements = Counter(
            "rt_presence_announcements_total", "attendant:* changes announced by this node, by state",
            ["state"], registry=r,
        )
        self.presence_store_errors = Counter(
            "rt_presence_store_errors_total", "Presence store calls that failed (retried at the next renewal)",
            registry=r,
        )
        self.coalesced = Counter(
            "rt_coalesced_events_total", "Events that got no frame of their own (a room merged them into a later one), by event type",
            ["event"], registry=r,
        )
        self.socketio_relayed = Counter(
            "rt_socketio_relayed_total", "Engine.IO long-polling requests this node relayed to the node holding "
            "their session (a balancer without affinity), by method", ["method"], registry=r,
        )
        self.schedule_projected = Gauge(
            "rt_schedule_projected_events", "Events this node projected into schedule records since start",
            registry=r,
        )
        self.ready = Gauge(
            "rt_ready", "1 while the node is ready (GET /readyz answers 200: its bus is ready and it is not "
            "draining), else 0", registry=r,
        )
        self.connected_users = Gauge(
            "rt_connected_users", "Users with a connection on this node (held in Redis for push; push on only)",
            registry=r,
        )

    def count_inbound(self, frame: ClientFrame, catalog: Catalog) -> None:
        """Count one client frame under a label that never comes from client input."""
        if not isinstance(frame, Emit):
            kind = type(frame).__name__.lower()
        else:
            known = catalog.types.get(frame.event)
            kind = frame.event if known is not None and known.emitters else "unknown"
        self.messages_in.labels(kind).inc()

    def watch_bus(self, bus: RedisBus) -> None:
        """Export ``bus``'s failures and reconnects (see ``watch_bus``)."""
        watch_bus(self.registry, bus)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _BusFailures(Collector):
    """``rt_bus_errors_total{kind}`` and ``rt_bus_reconnects`` of one Redis bus."""

    def __init__(self, bus: RedisBus) -> None:
        self._bus = bus

    def collect(self) -> Iterator:
        errors = CounterMetricFamily(
            "rt_bus_errors", "Redis calls that failed, by kind: unreachable (down, connection lost) or "
            "refused (an error reply: out of memory, read-only replica, script error...)", labels=["kind"])
        for kind, count in self._bus.link.errors.items():
            errors.add_metric([kind], count)
        yield errors
        yield GaugeMetricFamily("rt_bus_reconnects", "Times the connection to Redis was lost since start",
                                value=self._bus.reconnects)


def watch_bus(registry: CollectorRegistry, bus: RedisBus) -> None:
    """Export the failures of ``bus`` on ``registry`` (a node's, a dispatcher's, the relay's)."""
    registry.register(_BusFailures(bus))
