"""A node: one rtserver process, with its bus, actors, listener and HTTP app.

``Node.run`` starts, in order, the bus, the writer, the registry (live feed -> rooms), the
presence, typing and schedule projector actors (and with push on, the liveness actor), the
HTTP frontend and the listener, then reports the bound port.
``Node.drain`` is the SIGTERM path: stop accepting, mark not ready, close clients with the
draining code in paced batches and wait for them, all within ``server.drain_deadline_s``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import structlog
import trio

from actors.connection import Connection, ConnectionServices
from actors.liveness import Liveness
from actors.presence import Presence
from actors.registry import Registry
from actors.schedules import ScheduleProjector
from actors.typing import Typing
from actors.writer import Writer
from protocol.cursors import Cursor
from protocol.envelope import Envelope
from protocol.errors import CloseCode
from protocol.frames import Evt
from protocol.rooms import parse_room
from rtserver.auth import TokenVerifier
from rtserver.boundary import contained
from rtserver.bus import Bus, read_rooms
from rtserver.bus.memory import MemoryBus
from rtserver.bus.redis import RedisBus
from rtserver.config import Config
from rtserver.http import HttpFrontend, create_app, create_asgi, post_handlers
from rtserver.listener import Listener
from rtserver.metrics import Metrics
from rtserver.presence import MemoryPresence
from rtserver.presence.redis import RedisPresence
from rtserver.push.store import DeviceStore, LiveUsers
from rtserver.schedules import MemorySchedules
from rtserver.schedules.redis import RedisSchedules

log = structlog.get_logger("rtserver.node")


@dataclass(frozen=True, slots=True)
class CatchUp:
    events: list[Evt]
    cursor: Cursor
    recovered: bool
    more: bool


class Node:
    def __init__(self, config: Config, *, bus: Bus | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.catalog = config.catalog()
        self.verifier = TokenVerifier(config.auth)
        self.bus: Bus = bus or self._make_bus()
        self.writer = Writer(
            self.metrics,
            flush_max_bytes=config.connection.flush_max_bytes,
            interval_s=config.connection.flush_interval_ms / 1000,
        )
        self.registry = Registry(self.bus, config.rooms, self.metrics, self.writer.fanned_out_at, self.catalog)
        holder = secrets.token_hex(6)  # this node, in the stores shared by nodes
        if isinstance(self.bus, RedisBus):
            presence_store = RedisPresence(self.bus, config.presence.ttl_s)
            schedule_store = RedisSchedules(self.bus, config.schedules, consumer=holder)
        else:
            presence_store, schedule_store = MemoryPresence(), MemorySchedules(self.bus, config.schedules.mailbox)
        self.presence = Presence(presence_store, self.bus, config.presence, heartbeat_s=config.connection.heartbeat_s,
                                 holder=holder, metrics=self.metrics)
        self.typing = Typing(self.bus, config.typing)
        self.schedules = ScheduleProjector(schedule_store)
        self.metrics.schedule_projected.set_function(lambda: self.schedules.projected)
        #: With push on: the devices registered through ``/{ns}/push/devices``, and who is
        #: connected (``rtserver push`` pushes to the others).
        self.devices: DeviceStore | None = None
        self.liveness: Liveness | None = None
        if config.push.enabled:  # the configuration ensures the Redis bus
            push = config.push
            self.devices = DeviceStore(self.bus, ttl_s=push.device_ttl_s, max_per_user=push.max_devices_per_user)
            self.liveness = Liveness(LiveUsers(self.bus), push, holder=holder)
            self.metrics.connected_users.set_function(lambda: self.liveness.connected_users)
        self.connections: set[Connection] = set()
        self.draining = False
        self.http = HttpFrontend(create_asgi(create_app(self), self.metrics))
        self.services = services = ConnectionServices(
            config=config, bus=self.bus, registry=self.registry, writer=self.writer,
            metrics=self.metrics, catalog=self.catalog, connections=self.connections,
            presence=self.presence, typing=self.typing, schedules=schedule_store, liveness=self.liveness,
        )
        self.listener = Listener(
            config.server, services, self.verifier, self.http.serve, post_handlers(self)
        )
        self.port: int | None = None

    def _make_bus(self) -> Bus:
        """The memory bus, or the Redis bus when ``bus.redis_url`` is set."""
        if not self.config.bus.redis_url:
            return MemoryBus(self.config.bus)

        bus = RedisBus.for_config(self.config, on_dead_letter=lambda code: self.metrics.dead_letters.labels(code).inc())
        self.metrics.watch_bus(bus)
        for shard in range(bus.shards):
            self.metrics.stream_lag_entries.labels(str(shard)).set_function(lambda s=shard: bus.lag[s][0])
            self.metrics.stream_lag_seconds.labels(str(shard)).set_function(lambda s=shard: bus.lag[s][1])
        return bus

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.bus.run)
            await nursery.start(self.writer.run)
            await nursery.start(self.registry.run)
            await nursery.start(self.presence.run)
            await nursery.start(self.typing.run)
            await nursery.start(self.schedules.run)
            if self.liveness is not None:
                await nursery.start(self.liveness.run)
            await nursery.start(self.http.run)
            self.port = await nursery.start(self.listener.run)
            log.info("listening", host=self.config.server.host, port=self.port)
            task_status.started(self.port)

    # -- publishing and catch-up -------------------------------------------------------
    async def publish(self, envelope: Envelope) -> dict:
        """Validate against the catalog and append (durable) or publish (ephemeral)."""
        etype = self.catalog.validate_publish(envelope.event, envelope.tenant, envelope.rooms, envelope.data)
        if etype.durable:
            result = await self.bus.append(envelope)
            outcome = "duplicate" if result.duplicate else "appended"
            self.metrics.published.labels(envelope.event, outcome).inc()
            log.debug("published", event_type=envelope.event, id=result.event.id, outcome=outcome,
                      traceparent=envelope.traceparent)
            return {"id": result.event.id, "cursor": result.event.cursor, "duplicate": result.duplicate}
        [event] = await self.bus.publish_ephemeral(envelope)
        self.metrics.published.labels(envelope.event, "ephemeral").inc()
        return {"id": event.id, "cursor": None, "duplicate": False}

    async def catch_up(self, tenant: str, names: list[str], since: Cursor, limit: int) -> CatchUp:
        """The events of ``names`` after ``since`` (about ``limit``; ``more`` when cut)."""
        for name in names:
            parse_room(name)
        history = await read_rooms(self.bus, tenant, set(names), since, limit)
        events = [event.frame(room) for event, room in history.events]
        return CatchUp(events, history.cursor, history.recovered, history.more)

    # -- draining ----------------------------------------------------------------------
    async def drain(self) -> None:
        """Stop accepting and close every client with ``SERVER_DRAINING``, paced, bounded."""
        cfg = self.config.server
        self.draining = True
        self.listener.stop_accepting()
        log.info("draining", connections=len(self.connections))
        with trio.move_on_after(cfg.drain_deadline_s):
            pending = list(self.connections)
            for start in range(0, len(pending), cfg.drain_batch):
                for connection in pending[start : start + cfg.drain_batch]:
                    with contained(self.metrics, "drain", session=connection.session):  # the others still close
                        connection.close(CloseCode.SERVER_DRAINING)
                await trio.sleep(cfg.drain_pace_ms / 1000)
            while self.connections:
                await trio.sleep(0.05)
        log.info("drained", left=len(self.connections))
