"""The gateway: what a node answers besides its live transports — publishing, catch-up,
readiness — and the services those answers use.

The HTTP app (``rtserver.http``) and the fast-path POST handlers take a ``Gateway``, not
the node: ``rtserver.node`` assembles the actors and the gateway and runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import structlog

from actors.connection import ConnectionServices
from actors.presence import Presence
from protocol.catalog import Catalog
from protocol.cursors import Cursor
from protocol.envelope import Envelope
from protocol.frames import Evt
from protocol.rooms import parse_room
from rtserver.backends.auth import TokenVerifier
from rtserver.backends.bus import Bus, read_rooms
from rtserver.backends.config import Config
from rtserver.backends.metrics import Metrics
from rtserver.backends.push_store import DeviceStore
from rtserver.backends.tracing import Tracing

log = structlog.get_logger("rtserver.node")


@dataclass(frozen=True, slots=True)
class CatchUp:
    events: list[Evt]
    cursor: Cursor
    recovered: bool
    more: bool


class Gateway:
    def __init__(self, config: Config, *, metrics: Metrics, catalog: Catalog, verifier: TokenVerifier,
                 tracing: Tracing, bus: Bus, presence: Presence, devices: DeviceStore | None,
                 services: ConnectionServices) -> None:
        self.config = config
        self.tracing = tracing
        self.metrics = metrics
        self.catalog = catalog
        self.verifier = verifier
        self.bus = bus
        self.presence = presence
        #: With push on: the devices registered through ``/{ns}/push/devices``.
        self.devices = devices
        self.services = services
        #: Set when the node starts draining: not ready from then on.
        self.draining = False

    def readiness(self) -> dict[str, bool]:
        """What ``/readyz`` checks: the bus is ready and the node is not draining."""
        return {"bus": self.bus.ready(), "draining": self.draining}

    def ready(self) -> bool:
        """Whether ``/readyz`` answers 200."""
        checks = self.readiness()
        return checks["bus"] and not checks["draining"]

    async def publish(self, envelope: Envelope) -> dict:
        """Validate against the catalog and append (durable) or publish (ephemeral); with
        tracing on, in an ``rt.publish`` span whose ``traceparent`` the entry carries on."""
        if not self.tracing.enabled:
            return await self._publish(envelope)
        with self.tracing.span("rt.publish", envelope.traceparent, "server", **{
                "rt.event_type": envelope.event, "rt.tenant": envelope.tenant}) as traceparent:
            return await self._publish(msgspec.structs.replace(envelope, traceparent=traceparent))

    async def _publish(self, envelope: Envelope) -> dict:
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
