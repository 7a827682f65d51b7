"""One typed, frozen configuration object, loaded from TOML and environment variables.

Sections mirror ``config/rtserver.toml``. Unknown keys are errors that name the key.
Environment variables override the file: ``RTSERVER_<SECTION>__<FIELD>`` (for example
``RTSERVER_SERVER__PORT=9000``); values are parsed as TOML values when they can be
(``8080``, ``true``, ``["a","b"]``) and taken as strings otherwise.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from protocol.catalog import Catalog, Namespace
from rtserver.backends.redis_client import Endpoint

ENV_PREFIX = "RTSERVER_"

#: A key whose value is a secret (``rtserver config check`` prints it masked).
Secret = Annotated[str, msgspec.Meta(extra={"secret": "value"})]
#: A URL whose password is a secret (masked, the rest of the URL shown).
SecretUrl = Annotated[str, msgspec.Meta(extra={"secret": "url-password"})]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Section):
    """The listener: WebSocket, SSE, long-poll, Socket.IO and HTTP on one port."""

    #: Address to listen on (``0.0.0.0``: every interface).
    host: str = "127.0.0.1"
    #: TCP port (0: a free one, printed at start).
    port: int = 8080
    #: Origins allowed to open WebSockets (exact ``scheme://host[:port]``). Requests without
    #: ``Origin`` (non-browser clients) are allowed; ``["*"]`` allows every origin; empty
    #: allows only the server's own origin (``Origin`` host equal to ``Host``).
    allowed_origins: list[str] = []
    #: Largest inbound WebSocket message, bytes; larger closes with 1009.
    max_inbound_message_bytes: int = 65536
    #: Compress WebSocket messages (permessage-deflate, RFC 7692; rt.v1 and Socket.IO) for
    #: clients that offer it (browsers do): each message of 128 bytes or more on its own, a
    #: broadcast once for all its recipients; what clients send may come compressed too.
    #: Off: never negotiated.
    permessage_deflate: bool = False
    #: Largest HTTP request head, bytes.
    max_request_head_bytes: int = 16384
    #: Seconds a client has to send a request (head and body) or complete a handshake.
    handshake_timeout_s: float = 10.0
    #: Seconds an idle keep-alive HTTP connection is kept open.
    keep_alive_s: float = 75.0
    #: SIGTERM: seconds until the process exits, whatever is left.
    drain_deadline_s: float = 20.0
    #: SIGTERM: clients closed per batch, and the pause between batches (ms).
    drain_batch: int = 500
    drain_pace_ms: int = 50
    #: Listen backlog.
    backlog: int = 4096
    #: Processes serving ``port`` (``rtserver serve --workers``), each with its own
    #: ``SO_REUSEPORT`` listener; above 1 needs ``bus.redis_url``.
    workers: int = 1
    #: With several workers, worker ``i`` also serves its ``/metrics`` on this port + ``i``
    #: (0: a free port each, logged as ``worker_started``).
    worker_metrics_port: int = 0
    #: PEM certificate chain and private key: with both, the port serves only TLS
    #: (``https://``, ``wss://``), reloaded from these files on SIGHUP.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: PEM CA certificates: with TLS on, every client must present a certificate one of
    #: them signed (mutual TLS, for services and balancers); empty: none asked for.
    tls_client_ca_file: str = ""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("server.workers is at least 1")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("server.tls_cert_file and server.tls_key_file go together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("server.tls_client_ca_file needs server.tls_cert_file and tls_key_file")

    @property
    def tls(self) -> bool:
        """Whether the port serves TLS."""
        return bool(self.tls_cert_file)


class AuthConfig(_Section):
    """Token verification (docs/protocol.md, Authentication)."""

    #: HS256 shared secret; empty disables HS256.
    hs256_secret: Secret = ""
    #: PEM public key file for RS256/ES256; empty disables.
    public_key_file: str = ""
    #: JWKS JSON file (RS256/ES256 keys, chosen by ``kid``); empty disables.
    jwks_file: str = ""
    #: Algorithms accepted; anything else (``none`` included) is refused.
    algorithms: list[str] = msgspec.field(default_factory=lambda: ["HS256", "RS256", "ES256"])
    #: Clock skew tolerated on ``exp``/``nbf``, seconds.
    leeway_s: int = 5
    #: Optional expected ``iss`` / ``aud``; empty means not checked.
    issuer: str = ""
    audience: str = ""


class ConnectionConfig(_Section):
    """Each client connection: its budgets, rates, heartbeats and timeouts."""

    #: Outbound budget per connection; over either, the client is closed as a slow consumer.
    outbound_max_frames: int = 20000
    outbound_max_bytes: int = 8 * 1024 * 1024
    #: Most bytes one connection writes per scheduler tick (bounded latency for others).
    flush_max_bytes: int = 256 * 1024
    #: Coalescing window of the writer, ms: under load, each connection's frames are
    #: written at most once per interval, in one write (an isolated event leaves at once).
    #: Larger batches cost fewer send() calls per delivery; this bounds the added latency.
    flush_interval_ms: float = 5.0
    #: Inbound token bucket: commands per second and burst.
    inbound_rate: float = 20.0
    inbound_burst: int = 40
    #: Refused commands in a row after which the client is closed as rate limited.
    rate_limit_close_after: int = 20
    #: Rooms one connection may be in (auto-joined included).
    max_rooms: int = 256
    #: Interval the client is told to send heartbeats/pings in, seconds.
    heartbeat_s: int = 30
    #: A connection that sends nothing for this long is closed (4003), seconds; 0 = never.
    idle_timeout_s: float = 90.0
    #: Bytes read per ``recv``.
    read_chunk_bytes: int = 65536
    #: SSE: seconds between comments sent on an otherwise idle stream (keeps proxies
    #: from closing it; a dead client is found when they fail).
    sse_keepalive_s: float = 15.0
    #: SSE: the ``retry:`` hint, ms (how long a native ``EventSource`` waits to reconnect).
    sse_retry_ms: int = 2000
    #: Long-poll: seconds a poll with nothing to answer waits before answering empty.
    poll_timeout_s: float = 25.0
    #: Long-poll: seconds a poll that got an event still collects what arrives with it.
    poll_linger_s: float = 0.02


class RoomsConfig(_Section):
    """Room actors and the registry that routes the bus's events to them."""

    #: Seconds an empty room lingers before it stops.
    linger_s: float = 30.0
    #: Capacity of the registry's live feed from the bus, events (full: the bus waits).
    mailbox: int = 4096
    #: Coalescing window, ms (docs/protocol.md, Coalescing): the digest window of a schedule's slot events and
    #: the latest-wins window of types whose catalog rule names no interval. The first
    #: event of a key after a quiet window leaves at once; the next ones within the
    #: window are merged into one frame sent when it ends.
    coalesce_window_ms: float = 250.0


class BusConfig(_Section):
    """The event bus: embedded (one node) or Redis Streams (many)."""

    #: Redis URL (``redis://[user:password@]host:port/db``, ``rediss://`` for TLS); empty
    #: runs the embedded memory bus (one node).
    redis_url: SecretUrl = ""
    #: Redis connections a node's command client opens at most (standalone Redis; calls
    #: beyond it wait for a free one).
    redis_pool_size: int = 64
    #: Number of stream shards (must agree between nodes and publishers).
    shards: int = 16
    #: Entries kept per shard (memory bus; ``MAXLEN ~`` on Redis).
    retention: int = 100_000
    #: Published ids remembered per shard to drop repeats (memory bus).
    dedupe_window: int = 100_000
    #: Seconds an id published through rtserver is remembered (Redis bus).
    dedupe_ttl_s: int = 86_400
    #: Redis bus: an entry whose ``id`` appeared in the previous N entries of its shard
    #: (a producer's retried plain XADD) is dropped when read, the same way on every node.
    read_dedupe_window: int = 1000
    #: Largest answer of ``GET /{ns}/events``, events; and the live events a resuming
    #: connection may have buffered while it replays its history (more: it is closed as a
    #: slow consumer and resumes from where it got).
    max_history: int = 10_000
    #: Redis bus: seconds one call may take (a blocking read: beyond its server-side
    #: wait); past it the call fails like an unreachable Redis (503, 1013, a temporary
    #: error), and the bus reconnects.
    call_timeout_s: float = 2.0
    #: Redis bus: seconds between two health probes (``PING`` of every master).
    health_interval_s: float = 1.0
    #: Redis bus, shard affinity: the shards this process reads (empty: every shard). A
    #: node then reads only their live events and serves only their tenants
    #: (``crc32(tenant) % shards``): a client of another tenant is refused with 4004 / 421
    #: and reconnects through the balancer, which routes by tenant (docs/scaling.md); the
    #: shard of the Socket.IO relays between nodes is read as well. The consumer groups
    #: (the schedule projector; ``rtserver webhooks``, ``rtserver push``) read only these
    #: shards too: every shard needs a process that reads it.
    read_shards: list[int] = []

    def __post_init__(self) -> None:
        if self.redis_url:
            try:
                Endpoint.parse(self.redis_url)
            except ValueError as exc:
                raise ValueError(f"bus.redis_url: {exc}") from None
        elif self.read_shards:
            raise ValueError("bus.read_shards needs bus.redis_url: a node on the memory bus is the whole cluster")
        if any(not 0 <= shard < self.shards for shard in self.read_shards):
            raise ValueError(f"bus.read_shards: each shard is between 0 and {self.shards - 1} (bus.shards)")


class PresenceConfig(_Section):
    """Presence (docs/protocol.md, Presence); the heartbeat interval is ``connection.heartbeat_s``."""

    #: Heartbeat intervals without one after which a user turns away.
    away_after_heartbeats: float = 2.5
    #: Seconds after a user's last connection on a node closes (abruptly or cleanly)
    #: before that node stops holding the user present.
    grace_s: float = 60.0
    #: Seconds between a node's refreshes of its users' leases, and between sweeps for
    #: users held only by a node that stopped refreshing (crashed): those go offline within
    #: ``grace_s + sweep_interval_s``.
    sweep_interval_s: float = 10.0
    #: Redis: TTL of the presence keys, seconds (garbage collection only).
    ttl_s: int = 300
    #: Presence actor mailbox capacity (connects, heartbeats, switches, disconnects).
    mailbox: int = 4096

    def __post_init__(self) -> None:
        if self.grace_s <= self.sweep_interval_s:
            raise ValueError("presence.grace_s must be longer than presence.sweep_interval_s "
                             "(a node's lease must outlive the interval it is refreshed in)")


class SchedulesConfig(_Section):
    """Schedules' last-value records (docs/protocol.md, Schedules)."""

    #: Redis: seconds between polls of the consumer group when there was nothing to read.
    poll_ms: float = 50.0
    #: Redis: entries read per shard per poll.
    batch: int = 500
    #: Redis: seconds an entry may stay pending with a consumer (a crashed node) before
    #: another node claims and projects it.
    claim_idle_s: float = 30.0
    #: Redis: a record nobody wrote for this long expires, seconds (30 days).
    record_ttl_s: int = 2_592_000
    #: Memory bus: capacity of the projector's live feed.
    mailbox: int = 4096


class TypingConfig(_Section):
    """Typing indicators (docs/protocol.md, Typing)."""

    #: Seconds after which a typing indicator not refreshed by ``typing:start`` stops.
    timeout_s: float = 6.0
    #: Typing actor mailbox capacity.
    mailbox: int = 4096


class OutboxConfig(_Section):
    """The outbox relay (``rtserver relay``): PostgreSQL ``outbox_events`` -> shard streams."""

    #: PostgreSQL URL (``postgresql://user:password@host:port/db``) of the backbone's database.
    postgres_dsn: SecretUrl = ""
    #: Rows read and appended per shard per round trip.
    batch: int = 500
    #: Seconds between polls when no notification arrived (notifications are only hints).
    poll_interval_s: float = 1.0
    #: Seconds between a standby's attempts to take the lead of shards nobody leads.
    standby_poll_s: float = 2.0
    #: Relayed rows are deleted once this old, seconds; negative keeps them forever.
    keep_relayed_s: float = 86_400.0
    #: Seconds between two cleanups of relayed rows.
    cleanup_interval_s: float = 60.0


class WebhookSubscription(_Section):
    """One partner endpoint (``[[webhooks.subscriptions]]``)."""

    #: Unique; names the consumer group (``rt:webhooks:<name>``) and the metrics' label.
    name: str
    #: ``http://`` or ``https://`` URL deliveries are POSTed to.
    url: str
    #: HMAC-SHA256 key of the ``Webhook-Signature`` header (at least 16 characters).
    secret: Secret
    #: Event types delivered (``fnmatch`` patterns: ``appointment.*``).
    events: list[str] = msgspec.field(default_factory=lambda: ["*"])
    #: Tenants delivered (``healthUnitTaxId``; ``*`` for all).
    tenants: list[str] = msgspec.field(default_factory=lambda: ["*"])
    #: Requests in flight to this endpoint at most.
    max_concurrency: int = 4

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"webhook subscription name {self.name!r}: letters, digits, - and _ only")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"webhook subscription {self.name}: url must be http:// or https://")
        if len(self.secret) < 16:
            raise ValueError(f"webhook subscription {self.name}: secret must have at least 16 characters")
        if self.max_concurrency < 1:
            raise ValueError(f"webhook subscription {self.name}: max_concurrency must be at least 1")


class WebhooksConfig(_Section):
    """The webhook dispatcher (``rtserver webhooks``)."""

    #: Partner endpoints, one ``[[webhooks.subscriptions]]`` table each (name, url, secret,
    #: events, tenants, max_concurrency).
    subscriptions: list[WebhookSubscription] = []
    #: Seconds one attempt may take (connect to last byte of the answer).
    timeout_s: float = 10.0
    #: Attempts before an event goes to the dead-letter stream (``rt:webhooks:dead``).
    max_attempts: int = 8
    #: Backoff before the second attempt, doubling after each, capped; full jitter.
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    #: Seconds an entry may stay pending with a dispatcher that stopped before another
    #: dispatcher claims it (a live one keeps its entries claimed while it retries).
    claim_idle_s: float = 60.0
    #: Entries read per shard per poll, and seconds between polls when idle.
    batch: int = 100
    poll_s: float = 0.1

    def __post_init__(self) -> None:
        names = [s.name for s in self.subscriptions]
        if len(names) != len(set(names)):
            raise ValueError("webhook subscription names must be unique")


class FcmConfig(_Section):
    """Firebase Cloud Messaging, HTTP v1 API (Android and web apps)."""

    #: The service account's JSON key file (Firebase console: Project settings, Service
    #: accounts); empty leaves FCM off.
    service_account_file: str = ""
    #: Base URL of the HTTP v1 API (``{endpoint}/v1/projects/{project}/messages:send``).
    endpoint: str = "https://fcm.googleapis.com"
    #: OAuth 2.0 token endpoint; empty: the ``token_uri`` of the service account file.
    token_uri: str = ""
    #: PEM bundle of the CAs trusted for both (a private gateway, a test stand-in); empty:
    #: the system's.
    ca_file: str = ""


class ApnsConfig(_Section):
    """Apple Push Notification service, HTTP/2 provider API with token authentication."""

    #: The ``.p8`` signing key (Apple Developer: Keys); empty leaves APNs off.
    key_file: str = ""
    #: The key's id (``kid``) and the team id (``iss``) of the provider tokens.
    key_id: str = ""
    team_id: str = ""
    #: The app's bundle id (``apns-topic``).
    topic: str = ""
    #: ``https://api.push.apple.com``; development builds: ``https://api.sandbox.push.apple.com``.
    endpoint: str = "https://api.push.apple.com"
    #: PEM bundle of the CAs trusted (a test stand-in); empty: the system's.
    ca_file: str = ""

    def __post_init__(self) -> None:
        if self.key_file and not (self.key_id and self.team_id and self.topic):
            raise ValueError("push.apns: key_file needs key_id, team_id and topic")


class PushConfig(_Section):
    """Mobile push (``rtserver push``, and the nodes' device endpoint): a discreet notice,
    ids only, for users with no live connection. On the memory bus the node pushes itself."""

    #: Push on (the nodes' device endpoint, and ``rtserver push``).
    enabled: bool = False
    #: Event types pushed (``fnmatch`` patterns), when they go to a personal room (``user:``,
    #: ``patient:``, ``professional:``) whose owner registered a device.
    events: list[str] = msgspec.field(default_factory=lambda: [
        "appointment.*", "forwarding.*", "critical_alert", "conversation_update", "thread:message"])
    #: The notice's visible text: the same for every event (no detail leaves the platform).
    title: str = "New activity"
    body: str = "Open the app to see what changed."
    #: After a push to a user, later events within this many seconds push nothing more
    #: (the app syncs everything from its cursor when opened); 0 pushes every event.
    quiet_s: float = 60.0
    #: A registration is forgotten after this long without being renewed (apps register
    #: at each start), seconds.
    device_ttl_s: int = 60 * 86_400
    #: Devices kept per user; registering one more forgets the least recently registered.
    max_devices_per_user: int = 10
    #: A user counts as connected until this many seconds after their last connection
    #: closed (a poll's next request, a reload).
    live_grace_s: float = 5.0
    #: Seconds between a node's renewals of its connected users (a crashed node's users
    #: count as connected for three times this).
    live_renew_s: float = 10.0
    #: Seconds one request to a provider may take.
    timeout_s: float = 10.0
    #: Attempts per device on a timeout, a connection error, 429 or 5xx; backoff with full
    #: jitter from ``backoff_initial_s``, doubling.
    max_attempts: int = 3
    backoff_initial_s: float = 1.0
    #: Requests in flight per provider at most.
    max_concurrency: int = 32
    #: Seconds an entry may stay pending with a dispatcher that stopped before another
    #: claims it; entries read per shard per poll; seconds between polls when idle.
    claim_idle_s: float = 60.0
    batch: int = 100
    poll_s: float = 0.1
    fcm: FcmConfig = FcmConfig()
    apns: ApnsConfig = ApnsConfig()


class SocketIONamespace(_Section):
    """One Socket.IO namespace (``docs/socketio.md``): whom it admits and what it carries."""

    #: The rtserver namespace whose audience and rooms it has (``hub``: staff; ``portal``:
    #: patients and professionals).
    ns: str = "hub"
    #: Event types it carries (``fnmatch`` patterns); empty: every event of its rooms.
    events: list[str] = []

    def __post_init__(self) -> None:
        if self.ns not in {n.value for n in Namespace}:
            raise ValueError(f"socketio namespace: ns is one of {sorted(n.value for n in Namespace)}")


class SocketIOConfig(_Section):
    """Socket.IO v5 / Engine.IO v4 clients (socket.io-client v4) at ``path``."""

    #: Serve socket.io-client v4 frontends, at ``path``.
    enabled: bool = True
    path: str = "/socket.io/"
    #: The Engine.IO heartbeat: the server pings this often; a pong must follow within the timeout.
    ping_interval_ms: int = 25_000
    ping_timeout_ms: int = 20_000
    #: Largest Engine.IO payload (bytes) a client may send.
    max_payload: int = 1_000_000
    #: Seconds after its token expires that a session's subscribed rooms are still kept for
    #: its connection state recovery (socket.io's ``maxDisconnectionDuration``).
    recovery_s: float = 120.0
    #: Namespaces by path (the seeds' frontends use ``/hub``, ``/portal`` and ``/alerts``).
    namespaces: dict[str, SocketIONamespace] = msgspec.field(default_factory=lambda: {
        "/hub": SocketIONamespace(ns="hub"),
        "/portal": SocketIONamespace(ns="portal"),
        "/alerts": SocketIONamespace(ns="hub", events=[
            "critical_alert", "conversation_update", "priority_update", "patient_status_change", "new_patient"]),
    })

    def __post_init__(self) -> None:
        if not (self.path.startswith("/") and self.path.endswith("/")):
            raise ValueError("socketio.path starts and ends with /")
        if self.ping_interval_ms <= 0 or self.ping_timeout_ms <= 0 or self.max_payload <= 0:
            raise ValueError("socketio: ping_interval_ms, ping_timeout_ms and max_payload are positive")
        for name in self.namespaces:
            if not name.startswith("/"):
                raise ValueError(f"socketio.namespaces: {name!r} is not a namespace path like /hub (or /)")


class TracingConfig(_Section):
    """OpenTelemetry traces of each event's path, over OTLP/HTTP (docs/operations.md,
    Tracing). The standard ``OTEL_*`` variables decide what is left empty here."""

    #: Export traces (``OTEL_SDK_DISABLED=true`` turns them off whatever this says).
    enabled: bool = False
    #: OTLP/HTTP traces URL (``http://collector:4318/v1/traces``); empty:
    #: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` or the SDK's default.
    endpoint: str = ""
    #: Share of the traces started here that are recorded, 0 to 1; a producer's
    #: ``traceparent`` decides for its own trace. ``OTEL_TRACES_SAMPLER``, when set, decides instead.
    sample_ratio: float = 1.0
    #: The ``service.name`` of the spans; empty: ``OTEL_SERVICE_NAME``, else the command's
    #: (``rtserver``, ``rtserver-relay``, ``rtserver-cli``).
    service_name: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise ValueError("tracing.sample_ratio is between 0 and 1")


class LogConfig(_Section):
    """JSON log lines on standard output (one object per line; the start banner goes to standard error)."""

    #: ``debug``, ``info``, ``warning`` or ``error``.
    level: str = "info"


class Config(_Section):
    """The whole configuration: one section per part of the node (``rtserver config defaults``
    prints every key with its default)."""

    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    connection: ConnectionConfig = ConnectionConfig()
    rooms: RoomsConfig = RoomsConfig()
    bus: BusConfig = BusConfig()
    presence: PresenceConfig = PresenceConfig()
    typing: TypingConfig = TypingConfig()
    schedules: SchedulesConfig = SchedulesConfig()
    outbox: OutboxConfig = OutboxConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    push: PushConfig = PushConfig()
    socketio: SocketIOConfig = SocketIOConfig()
    tracing: TracingConfig = TracingConfig()
    log: LogConfig = LogConfig()
    #: Catalog allow-list overrides: event type -> list of allowed payload fields.
    catalog_fields: dict[str, list[str]] = {}

    def __post_init__(self) -> None:
        self.catalog()  # an override naming an unknown event type is an error here
        if self.server.workers > 1 and not self.bus.redis_url:
            raise ValueError("server.workers above 1 needs bus.redis_url: each worker is a process of its own, and "
                             "only a shared Redis bus carries one worker's events to another's clients")
        push = self.push
        if push.enabled and not self.bus.redis_url and not (push.fcm.service_account_file or push.apns.key_file):
            raise ValueError("push.enabled on the memory bus: the node pushes itself, so it needs a provider "
                             "([push.fcm] service_account_file or [push.apns] key_file)")


    def catalog(self) -> Catalog:
        """The event catalog, with this configuration's allow-list overrides."""
        return Catalog.default().with_fields(self.catalog_fields)


class ConfigError(ValueError):
    pass


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, field = name[len(ENV_PREFIX) :].lower().partition("__")
        data.setdefault(section, {})[field] = _env_value(raw)


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Build the configuration: defaults < TOML file < environment < ``overrides``.

    Raises ``ConfigError`` naming the offending key or value.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
    _apply_env(data, os.environ if environ is None else environ)
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    try:
        return msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
