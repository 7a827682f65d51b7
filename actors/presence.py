"""Presence actor: this node's view of the presence of the staff it serves (docs/protocol.md, Presence).

Contract
--------
Mailbox
    ``connected`` / ``heartbeat`` / ``switch`` / ``disconnected`` from the connection
    actors, through one bounded channel (a connection waits when it is full; the
    ``_nowait`` forms, for commands forwarded through a room, drop and log instead).
    Whatever is queued is handled together: one store round trip for a burst.
Owns
    Per presence id (a WebSocket connection, or an SSE / long-poll *session*, whose
    streams and polls come and go): its tenant, user, presence groups, the state it asked
    for (``presence:online`` / ``presence:away``) and its last heartbeat. Per (tenant,
    group, user): the view this node last put in the store. A closed one is kept, in the
    state it had, until its grace period ends; ``connected`` again within it (the next
    poll of a session) takes it back as it was, with the state it asked for. All of it is
    a ``protocol.presence_table.PresenceTable``, pure state that takes ``now``; this actor
    feeds it, puts what it says changed in the store and announces what the store says.
Replies
    None. Changes of a user's combined state (all nodes together, decided by the store)
    are announced as ephemeral ``attendant:online|away|offline`` events to the
    ``presence:{group}`` room of the tenant, through the bus (so on every node).
Timers
    Away: a connection with no heartbeat for ``heartbeat_s * away_after_heartbeats`` counts
    as away until its next heartbeat. Grace: a connection that closed (abruptly or
    cleanly) still counts, as it was, for ``grace_s``; a reconnect within it, here or on
    another node, announces nothing. Every ``sweep_interval_s`` the node renews the
    leases of its views (``grace_s`` long), a tenth of them at a time, and sweeps the
    views of holders that stopped renewing (a crashed node): their users go offline within
    ``grace_s + sweep_interval_s``.
Failure
    A store call that fails (Redis unreachable) is logged; the views are put again at the
    next renewal, so the store converges once Redis is back. Announcements are
    best-effort, as every ephemeral event.
Blocking
    On the store and the bus only, never on a connection. Views are put ``PUT_CHUNK``
    keys at a time, the node's other tasks running between chunks (a renewal's thousands
    never hold the node in one step).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import structlog
import trio

from protocol.envelope import Envelope
from protocol.errors import ReplyError
from protocol.presence import PresenceEntry, PresenceState
from protocol.presence_table import PresenceTable
from rtserver.backends.bus import Bus
from rtserver.backends.config import PresenceConfig
from rtserver.backends.metrics import Metrics
from rtserver.backends.presence import Change, PresenceKey, PresenceStore, View

log = structlog.get_logger("rtserver.presence")

#: Presence keys whose views are computed and put in one go; a burst of more (thousands
#: of connects, or of away timers) is put in chunks, the node's other tasks running in
#: between.
PUT_CHUNK = 256
#: A renewal puts every view again: 5,000 users' took ~70-100 ms of CPU in one go, which
#: a big room's broadcast then waited for (bench/RESULTS.md §28). It is spread over the
#: interval instead, this many parts each renewed once per ``sweep_interval_s``.
RENEWAL_PARTS = 10
#: Keys drawn into a renewal cycle's parts between two yields to the node's other tasks.
DRAW_CHUNK = 2048


@dataclass(frozen=True, slots=True)
class _Connected:
    id: Hashable
    tenant: str
    user: str
    groups: tuple[str, ...]
    asked: PresenceState | None = None


@dataclass(frozen=True, slots=True)
class _Heartbeat:
    id: Hashable


@dataclass(frozen=True, slots=True)
class _Switch:
    id: Hashable
    state: PresenceState


@dataclass(frozen=True, slots=True)
class _Disconnected:
    id: Hashable


class Presence:
    def __init__(self, store: PresenceStore, bus: Bus, config: PresenceConfig, *, heartbeat_s: float,
                 holder: str, metrics: Metrics) -> None:
        self.store = store
        self._metrics = metrics
        self._bus = bus
        self._config = config
        self._holder = holder
        self._send, self._receive = trio.open_memory_channel(config.mailbox)
        self._table = PresenceTable(away_after_s=heartbeat_s * config.away_after_heartbeats, grace_s=config.grace_s)
        #: The keys each part of this renewal cycle renews (drawn at its first part, see
        #: ``_renew``), and all of them.
        self._parts: list[list[PresenceKey]] = [[] for _ in range(RENEWAL_PARTS)]
        self._in_parts: set[PresenceKey] = set()
        # Wall-clock ms (shared by the nodes) derived from Trio's clock, anchored at start.
        self._anchor = (time.time(), 0.0)
        metrics.presence_connections.set_function(lambda: len(self._table))

    # -- the mailbox (called by connections) ---------------------------------------------
    async def connected(self, connection_id: Hashable, tenant: str, user: str, groups: tuple[str, ...],
                        asked: PresenceState | None = None) -> None:
        """Track a connection (a session's next stream or poll: take it back); ``asked``,
        when given, is the state its client asks for (else online, or as it was)."""
        await self._send.send(_Connected(connection_id, tenant, user, groups, asked))

    async def heartbeat(self, connection_id: Hashable) -> None:
        await self._send.send(_Heartbeat(connection_id))

    async def switch(self, connection_id: Hashable, state: PresenceState) -> None:
        await self._send.send(_Switch(connection_id, state))

    async def disconnected(self, connection_id: Hashable) -> None:
        await self._send.send(_Disconnected(connection_id))

    def heartbeat_nowait(self, connection_id: Hashable) -> None:
        """``heartbeat`` without waiting; dropped (and logged) when the mailbox is full."""
        self._send_nowait(_Heartbeat(connection_id))

    def switch_nowait(self, connection_id: Hashable, state: PresenceState) -> None:
        """``switch`` without waiting; dropped (and logged) when the mailbox is full."""
        self._send_nowait(_Switch(connection_id, state))

    def _send_nowait(self, message: _Heartbeat | _Switch) -> None:
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            log.warning("presence_mailbox_full", dropped=type(message).__name__)

    async def snapshot(self, tenant: str, group: str) -> list[PresenceEntry]:
        """The group's users who are not offline (read from the store, every node's)."""
        return await self.store.snapshot(tenant, group)

    # -- the actor -----------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self._anchor = (time.time(), trio.current_time())
        part_s = self._config.sweep_interval_s / RENEWAL_PARTS
        renew_at, part = trio.current_time() + part_s, 0
        task_status.started()
        while True:
            timer_due = self._table.next_due()
            due = renew_at if timer_due is None else min(renew_at, timer_due)
            message = None
            with trio.move_on_at(due):  # only the wait: a store call is never cut short
                message = await self._receive.receive()
            if message is not None:
                keys = self._handle(message)
                while True:  # what else is queued joins the same store round trip
                    try:
                        keys |= self._handle(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._update(keys)
                continue
            now = trio.current_time()
            if now >= renew_at:
                renew_at = now + part_s
                await self._renew(part)
                part = (part + 1) % RENEWAL_PARTS
            await self._update(self._table.expire(now))

    def _now_ms(self) -> int:
        wall, trio_start = self._anchor
        return int((wall + trio.current_time() - trio_start) * 1000)

    def _handle(self, message: object) -> set[PresenceKey]:
        """Apply one message to the table; the keys whose view may have changed."""
        now, table = trio.current_time(), self._table
        if isinstance(message, _Connected):
            return table.connected(message.id, message.tenant, message.user, message.groups, message.asked, now)
        if isinstance(message, _Disconnected):
            return table.disconnected(message.id, now)
        if isinstance(message, _Switch):
            return table.switch(message.id, message.state, now)
        return table.heartbeat(message.id, now)

    async def _update(self, keys: set[PresenceKey]) -> None:
        """Put the views of ``keys`` that changed; announce what changed for the cluster.
        A key new to this renewal cycle joins its part."""
        for key in keys - self._in_parts:
            self._in_parts.add(key)
            self._parts[hash(key.user) % RENEWAL_PARTS].append(key)
        await self._put_views(sorted(keys), self._table.changed_views)

    async def _put_views(self, keys: list[PresenceKey],
                         views_of: Callable[[list[PresenceKey], float], list[View]]) -> None:
        """Put ``views_of(chunk, now)`` for ``keys``, ``PUT_CHUNK`` keys at a time with the
        node's other tasks running between chunks (a renewal puts every user's view); stop
        at a store failure (the next renewal puts them again)."""
        for start in range(0, len(keys), PUT_CHUNK):
            if start:
                await trio.lowlevel.checkpoint()
            views = views_of(keys[start:start + PUT_CHUNK], trio.current_time())
            if views and not await self._put(views):
                return

    async def _put(self, views: list[View]) -> bool:
        """Put ``views`` and announce what changed; False when the store failed."""
        try:
            changes = await self.store.put(views, self._holder, self._now_ms(), self._lease_ms)
        except ReplyError as exc:  # the store is unreachable: the next renewal puts them again
            log.warning("presence_store_failed", error=exc.message)
            self._metrics.presence_store_errors.inc()
            return False
        self._table.put(views)
        await self._announce(changes)
        return True

    @property
    def _lease_ms(self) -> int:
        return int(self._config.grace_s * 1000)

    async def _renew(self, part: int) -> None:
        """Put the views of one part (of ``RENEWAL_PARTS``) of the keys again, renewing their
        leases and retrying what failed; after the last part, sweep.

        The parts are drawn from the held keys once per cycle, at its first part, and a
        key new since then joins its part (``_update``): one that comes after its part
        was renewed is in the next cycle's, so each key is renewed within
        ``sweep_interval_s`` of its last put, as with a draw per part, without going
        over every key ten times a cycle (bench/RESULTS.md §30)."""
        if part == 0:
            self._in_parts = self._table.held_keys()
            self._parts = [[] for _ in range(RENEWAL_PARTS)]
            for i, key in enumerate(self._in_parts):
                if i and not i % DRAW_CHUNK:  # 15,000 keys are ~10 ms: the node runs between
                    await trio.lowlevel.checkpoint()
                self._parts[hash(key.user) % RENEWAL_PARTS].append(key)
        keys = sorted(key for key in self._parts[part] if self._table.holds(key))
        await self._put_views(keys, self._table.views)
        if part < RENEWAL_PARTS - 1:
            return
        try:
            await self._announce(await self.store.sweep(self._now_ms()))
        except ReplyError as exc:
            log.warning("presence_sweep_failed", error=exc.message)
            self._metrics.presence_store_errors.inc()

    async def _announce(self, changes: list[Change]) -> None:
        """Publish the changes, all in one bus round trip."""
        for _key, entry in changes:
            self._metrics.presence_announcements.labels(entry.state.value).inc()
        try:
            await self._bus.publish_ephemeral(*(
                Envelope(event=entry.event, tenant=key.tenant, rooms=[f"presence:{key.group}"],
                         data=entry.data(key.group))
                for key, entry in changes))
        except ReplyError as exc:
            log.warning("presence_announce_failed", error=exc.message, changes=len(changes))
