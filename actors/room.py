"""Room actor: fans each event of one tenant-scoped room out to its members.

Contract
--------
Mailbox
    A bounded memory channel (``rooms.mailbox``) of ``StoredEvent`` sent by the registry
    in bus order, and ``Promote`` messages from members that finished reading their
    history. Other membership changes are synchronous calls (``add``, ``remove``,
    ``begin_recovery``), so they take effect between two broadcasts.
Owns
    Its members, grouped by wire (each member is the ``push`` of an outbound queue), the
    recovery buffers of members still reading their history, and its coalescing state
    (``protocol.coalesce``: held events per key, and their offsets in the shard's
    ``HeldOffsets`` shared by the node's rooms of that shard).
Replies
    None. Each event is encoded once per wire in use and the same bytes are pushed to
    every member of that wire with ``push`` (never blocks: a member over budget closes
    itself as a slow consumer, nobody else waits). An event of a member's own (``origin``)
    is not pushed back to it.
Failure
    Ends when it has had no member for ``linger_s`` (it unregisters itself first, so the
    registry starts a fresh one on the next join); an exception ends the node.
Blocking
    Only on its mailbox, bounded by the end of the first coalescing window held.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog
import trio

from protocol.catalog import CoalesceRule
from protocol.coalesce import Coalescer, HeldOffsets
from protocol.cursors import Offset
from protocol.envelope import StoredEvent
from protocol.frames import Evt
from protocol.rooms import room_name
from protocol.wires import Wire
from rtserver.backends.metrics import Metrics

Push = Callable[[bytes], None]
log = structlog.get_logger("rtserver.room")


class RecoveryBuffer:
    """Live events that reached a member while it was reading its history (bounded)."""

    __slots__ = ("events", "limit", "overflowed")

    def __init__(self, limit: int) -> None:
        self.events: list[StoredEvent] = []
        self.limit = limit
        self.overflowed = False

    def add(self, event: StoredEvent) -> None:
        if len(self.events) >= self.limit:
            self.overflowed = True
        else:
            self.events.append(event)


@dataclass(frozen=True, slots=True)
class Promote:
    """A recovering member read its history up to ``after``: deliver what was buffered
    since (newer than ``after``; everything when None) and make it a live member.

    Sent through the mailbox, so events routed before it were buffered and events after
    it are live. An event can still be on its way from the bus (in the registry's feed)
    while already in the history, so the member skips live events up to ``after`` until
    the first newer one: nothing is missed and nothing is sent twice."""

    member: str
    buffer: RecoveryBuffer
    wire: Wire
    push: Push
    after: Offset | None
    on_overflow: Callable[[], None]
    #: History events of this room to send first (up to ``after``), when the member read
    #: only this room: sent here, an event merged into a frame not sent yet is skipped.
    replay: tuple[StoredEvent, ...] = ()
    #: Called once the room has handled this message (whether or not the member is still
    #: there): what it had buffered is pushed by then.
    on_done: Callable[[], None] | None = None


class Room:
    def __init__(
        self,
        key: str,
        *,
        mailbox: int,
        linger_s: float,
        metrics: Metrics,
        fanned_out_at: list[float],
        on_stop: Callable[[Room], None],
        rules: Mapping[str, CoalesceRule],
        window_s: float,
        held_offsets: HeldOffsets,
    ) -> None:
        self.key = key
        self.name = room_name(key)
        self._linger_s = linger_s
        self._metrics = metrics
        self._fanned_out_at = fanned_out_at
        self._on_stop = on_stop
        self._rules = rules
        self._coalescer = Coalescer(window_s)
        #: This shard's held durable events on this node: those coalescing here, and those
        #: routed to a room that has not taken them from its mailbox yet (``Registry.route``).
        self.held_offsets = held_offsets
        self.mailbox, self._inbox = trio.open_memory_channel[StoredEvent | Promote](mailbox)
        self._members: dict[Wire, dict[str, Push]] = {}
        self._recovering: dict[str, RecoveryBuffer] = {}
        self._catching_up: dict[str, tuple[Wire, Push, Offset]] = {}
        self._idle_at = math.inf  # when an empty room stops
        self._wait = trio.CancelScope()

    # -- membership (synchronous) ------------------------------------------------------
    def add(self, member: str, wire: Wire, push: Push) -> None:
        self._members.setdefault(wire, {})[member] = push
        self._recovering.pop(member, None)
        self._rearm()

    def begin_recovery(self, member: str, limit: int) -> RecoveryBuffer:
        """Buffer this member's live events until ``add`` (history read first)."""
        buffer = self._recovering[member] = RecoveryBuffer(limit)
        self._rearm()
        return buffer

    def remove(self, member: str) -> None:
        for members in self._members.values():
            members.pop(member, None)
        self._recovering.pop(member, None)
        self._catching_up.pop(member, None)
        self._rearm()

    @property
    def empty(self) -> bool:
        return not (self._recovering or self._catching_up or any(self._members.values()))

    def _rearm(self) -> None:
        """Wake at the end of the first held window, or when an empty room has lingered."""
        if not self.empty:
            self._idle_at = math.inf
        elif self._idle_at == math.inf:
            self._idle_at = trio.current_time() + self._linger_s
        due = self._coalescer.next_due
        self._wait.deadline = self._idle_at if due is None else min(due, self._idle_at)

    # -- the actor --------------------------------------------------------------------
    async def run(self) -> None:
        """Started with ``start_soon`` (``Registry.open_room``): the mailbox and the
        membership exist from construction, so a join never waits for the task to start."""
        self._metrics.rooms.inc()
        try:
            while True:
                with trio.CancelScope() as self._wait:
                    self._rearm()
                    message = await self._inbox.receive()
                if self._wait.cancelled_caught:
                    now = trio.current_time()
                    self._release_held(now)
                    if self.empty and now >= self._idle_at:
                        return
                    continue
                # Handle what is already queued before yielding, so frames batch per flush.
                while True:
                    self.take(message)
                    try:
                        message = self._inbox.receive_nowait()
                    except trio.WouldBlock:
                        break
        finally:
            for held in self._coalescer.held.values():
                if held.first.offset is not None:
                    self.held_offsets.remove(held.first.offset)
            self._on_stop(self)
            self.mailbox.close()
            while True:  # what was routed here and will never be fanned out
                try:
                    message = self._inbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                if type(message) is not Promote and message.offset is not None:
                    self.held_offsets.remove(message.offset)
            self._inbox.close()
            self._metrics.rooms.dec()

    def take(self, message: StoredEvent | Promote) -> None:
        """Handle one message of the mailbox."""
        if type(message) is Promote:
            self._promote(message)
            return
        if message.offset is not None:
            self.held_offsets.remove(message.offset)  # routed here: from now on it is ours
        self.fan_out(message)

    async def promote(self, message: Promote) -> None:
        await self.mailbox.send(message)

    def _promote(self, message: Promote) -> None:
        try:
            self._promote_member(message)
        finally:
            if message.on_done is not None:
                message.on_done()

    def _promote_member(self, message: Promote) -> None:
        if self._recovering.get(message.member) is not message.buffer:
            return  # the member left (or started over) meanwhile
        del self._recovering[message.member]
        if message.buffer.overflowed:
            message.on_overflow()
            return
        for event in message.replay:
            if not self._held(event):
                message.push(message.wire.frame(event.frame(self.name)))
        after = message.after
        for event in message.buffer.events:
            if after is None or event.offset is None or event.offset > after:
                after = None  # buffered events are in bus order: all later ones are newer
                if not self._held(event):  # else the merged frame will bring it
                    message.push(message.wire.frame(self._frame(event)))
        if after is None:
            self._members.setdefault(message.wire, {})[message.member] = message.push
        else:
            self._catching_up[message.member] = (message.wire, message.push, after)

    def _release_caught_up(self, event: StoredEvent) -> None:
        """Make live the catching-up members for which ``event`` is newer than their history."""
        if event.offset is None:  # ephemeral: never in a history, says nothing of the stream
            for member, (wire, push, _) in self._catching_up.items():
                if member != event.envelope.origin:
                    push(wire.frame(event.frame(self.name)))
            return
        for member, (wire, push, after) in list(self._catching_up.items()):
            if event.offset > after:
                del self._catching_up[member]
                self._members.setdefault(wire, {})[member] = push

    def _held(self, event: StoredEvent) -> bool:
        rule = self._rules.get(event.envelope.event)
        return rule is not None and self._coalescer.holds(event, rule)

    def _frame(self, event: StoredEvent) -> Evt:
        """``event``'s frame here, with a cursor that never passes an event held back."""
        evt = event.frame(self.name)
        if self.held_offsets and event.offset is not None:
            evt.cursor = self.held_offsets.cursor_for(event)
        return evt

    def fan_out(self, event: StoredEvent) -> None:
        """Deliver ``event`` to every member now, or hold it to coalesce; never blocks."""
        for buffer in self._recovering.values():
            buffer.add(event)
        if self._catching_up:
            self._release_caught_up(event)
        rule = self._rules.get(event.envelope.event)
        if rule is not None:
            held = self._coalescer.offer(event, rule, trio.current_time())
            if held is not None:
                if held.first is event:
                    if event.offset is not None:
                        self.held_offsets.add(event.offset)
                    self._rearm()
                else:
                    self._metrics.coalesced.labels(event.envelope.event).inc()
                return
        self._deliver(self._frame(event), event)

    def _release_held(self, now: float) -> None:
        for held in self._coalescer.pop_due(now):
            if held.first.offset is not None:
                self.held_offsets.remove(held.first.offset)
            last = held.last
            cursor = self.held_offsets.cursor_for(last) if last.offset is not None else None
            evt = held.frame(self.name, cursor)
            if self._catching_up and last.offset is not None:
                self._release_caught_up(last)  # those for whom it is new go live and get it below
                for wire, push, _ in self._catching_up.values():
                    push(wire.frame(evt))  # it stands for history events they skipped as held
            self._deliver(evt, last)

    def _deliver(self, evt: Evt, event: StoredEvent) -> None:
        """Encode ``evt`` once per wire and push it to every member but its origin."""
        envelope = event.envelope
        origin = envelope.origin
        delivered = 0
        for wire, members in self._members.items():
            if not members:
                continue
            frame = wire.frame(evt)
            if origin is not None and origin in members:
                for member, push in members.items():
                    if member != origin:
                        push(frame)
                delivered += len(members) - 1
                continue
            for push in members.values():
                push(frame)
            delivered += len(members)
        if envelope.traceparent:
            log.info("deliver", event_id=event.id, event_type=envelope.event, room=self.name,
                     tenant=envelope.tenant, traceparent=envelope.traceparent, recipients=delivered)
        if delivered:
            self._metrics.messages_out.labels(evt.event).inc(delivered)
            appended_ms = event.offset.ms if event.offset is not None else event.ts
            self._fanned_out_at.append(appended_ms / 1000 if appended_ms else time.time())
