"""A node: one rtserver process, with its bus, actors, listener and HTTP app.

``Node.run`` starts, in order, the bus, the writer, the registry (live feed -> rooms), the
presence, typing and schedule projector actors (and with push on, the liveness actor; on
the memory bus, the push dispatcher too), the HTTP frontend and the listener, then reports
the bound port.
``Node.reload`` is the SIGHUP path (TLS certificates read again).
``Node.drain`` is the SIGTERM path: stop accepting, mark not ready, close clients with the
draining code in paced batches and wait for them, all within ``server.drain_deadline_s``.
"""

from __future__ import annotations

import secrets

import structlog
import trio

from actors.connection import Connection, ConnectionServices
from actors.liveness import Liveness
from actors.parking import Parking
from actors.presence import Presence
from actors.registry import Registry
from actors.schedules import ScheduleProjector
from actors.typing import Typing
from actors.writer import Writer
from protocol.errors import CloseCode
from rtserver.backends.auth import TokenVerifier
from rtserver.backends.boundary import contained
from rtserver.backends.config import Config
from rtserver.backends.factory import open_backends
from rtserver.backends.metrics import Metrics
from rtserver.backends.tls import ServerTls
from rtserver.backends.tracing import Tracing
from rtserver.gateway import Gateway
from rtserver.http import HttpFrontend, create_app, create_asgi, post_handlers
from rtserver.listener import Listener
from rtserver.push import GROUP, Dispatcher, group_settings

log = structlog.get_logger("rtserver.node")


class Node:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.catalog = config.catalog()
        self.verifier = TokenVerifier(config.auth)
        holder = secrets.token_hex(6)  # this node, in the stores shared by nodes
        self.backends = backends = open_backends(config, self.metrics, holder)
        self.bus = backends.bus
        self.tracing = Tracing.for_config(config.tracing, "rtserver")
        self.writer = Writer(
            self.metrics,
            flush_max_bytes=config.connection.flush_max_bytes,
            interval_s=config.connection.flush_interval_ms / 1000,
            tracing=self.tracing,
        )
        self.registry = Registry(self.bus, config.rooms, self.metrics, self.writer.fan_outs, self.catalog)
        self.presence = Presence(backends.presence, self.bus, config.presence, heartbeat_s=config.connection.heartbeat_s,
                                 holder=holder, metrics=self.metrics)
        self.typing = Typing(self.bus, config.typing)
        self.schedules = ScheduleProjector(backends.schedules)
        self.metrics.schedule_projected.set_function(lambda: self.schedules.projected)
        self.liveness: Liveness | None = None
        if backends.live_users is not None:
            self.liveness = Liveness(backends.live_users, config.push, holder=holder)
            self.metrics.connected_users.set_function(lambda: self.liveness.connected_users)
        #: On the memory bus the node is the whole cluster: with push on, it pushes itself.
        self.push: Dispatcher | None = None
        if backends.devices is not None and not config.bus.redis_url:
            self.push = Dispatcher(config.push, devices=backends.devices, live_users=backends.live_users,
                                   group=backends.groups(GROUP, holder, **group_settings(config.push)),
                                   registry=self.metrics.registry)
        self.connections: set[Connection] = set()
        self.parking = Parking()
        self.services = services = ConnectionServices(
            config=config, bus=self.bus, registry=self.registry, writer=self.writer,
            metrics=self.metrics, catalog=self.catalog, connections=self.connections,
            presence=self.presence, typing=self.typing, schedules=backends.schedules, parking=self.parking,
            liveness=self.liveness,
            recovery=backends.recovery,
        )
        self.gateway = Gateway(config, metrics=self.metrics, catalog=self.catalog, verifier=self.verifier,
                               tracing=self.tracing, bus=self.bus, presence=self.presence, devices=backends.devices, services=services)
        self.metrics.ready.set_function(lambda: self.gateway.ready())
        self.http = HttpFrontend(create_asgi(create_app(self.gateway), self.metrics))
        self.listener = Listener(
            config.server, services, self.verifier, self.http.serve, post_handlers(self.gateway),
            tls=ServerTls(config.server) if config.server.tls else None,
        )
        self.port: int | None = None

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
            if self.push is not None:
                await nursery.start(self.push.run)
            await nursery.start(self.parking.run)
            await nursery.start(self.http.run)
            self.port = await nursery.start(self.listener.run)
            log.info("listening", host=self.config.server.host, port=self.port)
            task_status.started(self.port)

    def reload(self) -> None:
        """SIGHUP: read the TLS certificate and key again (``server.tls_*``); connections
        already open keep theirs."""
        if self.listener.tls is None:
            log.info("reload", tls="off: nothing to reload")
        else:
            self.listener.tls.reload()

    # -- draining ----------------------------------------------------------------------
    async def drain(self) -> None:
        """Stop accepting and close every client with ``SERVER_DRAINING``, paced, bounded."""
        cfg = self.config.server
        self.gateway.draining = True
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
