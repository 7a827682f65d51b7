"""Room: fans each event of one tenant-scoped room out to its members on this node.

Contract
--------
Mailbox
    None of its own: a room is state driven by the registry's task (``actors.registry``),
    which calls ``take`` for each of its events in bus order and ``wake`` at the time the
    room asked for (the end of a coalescing window, or of its linger once empty).
    Membership changes are synchronous calls from connections (``add``, ``remove``,
    ``begin_recovery``, ``promote``), so they take effect between two events. A room
    with one member and no traffic is a few dicts: no task, no channel.
Owns
    Its members, each in a ``MemberState``: LIVE ones grouped by wire, those whose push is
    a socket's ``OutboundQueue`` apart from the others (a function: a polling answer, a
    Socket.IO namespace, an internal subscriber); RECOVERING ones (reading their history:
    their live events are buffered) and CATCHING_UP ones (skipping live events their history had), each a
    ``Recovery``; and its coalescing state
    (``protocol.coalesce``: held events per key, and their offsets in the shard's
    ``HeldOffsets`` shared by the node's rooms of that shard).
Replies
    None. Each event is encoded once per wire in use and the same bytes are pushed to
    every member of that wire with ``push`` (never blocks: a member over budget closes
    itself as a slow consumer, nobody else waits), or, to more than ``BROADCAST_MIN``
    queues, handed to the writer as one broadcast (``Writer.broadcast``). An event of a
    member's own (``origin``) is not pushed back to it.
Failure
    Stops when it has had no member for ``linger_s`` (it unregisters itself, so the
    registry opens a fresh one on the next join); an exception ends the registry's task,
    and so the node.
Blocking
    Never: every method returns at once.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

import structlog
import trio

from actors.writer import BROADCAST_MIN, FLUSH_CHUNK, OutboundQueue
from protocol.catalog import CoalesceRule
from protocol.coalesce import Coalescer, HeldOffsets
from protocol.cursors import Offset
from protocol.envelope import StoredEvent
from protocol.frames import Evt
from protocol.rooms import room_name
from protocol.session import hand_over
from protocol.states import MEMBER_TRANSITIONS, MemberState, advance
from protocol.wires import Wire
from rtserver.backends.metrics import Metrics
from rtserver.backends.tracing import room_kind

if TYPE_CHECKING:
    from actors.writer import FanOuts

Push = Callable[[bytes], None]
log = structlog.get_logger("rtserver.room")


class Recovery:
    """A member of the room on its way to live delivery (``MemberState``): reading its
    history while the room buffers its live events (bounded), then skipping live events
    up to its history's end."""

    __slots__ = ("member", "wire", "push", "on_overflow", "state", "events", "limit", "overflowed", "after")

    def __init__(self, member: str, wire: Wire, push: Push, limit: int, on_overflow: Callable[[], None]) -> None:
        self.member = member
        self.wire = wire
        self.push = push
        self.on_overflow = on_overflow
        self.state = MemberState.RECOVERING
        self.events: list[StoredEvent] = []
        self.limit = limit
        self.overflowed = False
        self.after: Offset | None = None  # CATCHING_UP: live events up to here are skipped

    def buffer(self, event: StoredEvent) -> None:
        if len(self.events) >= self.limit:
            self.overflowed = True
        else:
            self.events.append(event)

    def move(self, state: MemberState) -> None:
        self.state = advance(MEMBER_TRANSITIONS, self.state, state)


class Room:
    def __init__(
        self,
        key: str,
        *,
        linger_s: float,
        metrics: Metrics,
        fan_outs: FanOuts,
        wake_at: Callable[[Room, float], None],
        on_stop: Callable[[Room], None],
        rules: Mapping[str, CoalesceRule],
        window_s: float,
        held_offsets: HeldOffsets,
    ) -> None:
        self.key = key
        self.name = room_name(key)
        self._linger_s = linger_s
        self._metrics = metrics
        self._fan_outs = fan_outs
        #: Asks the registry to call ``wake`` at a time (``math.inf``: never).
        self._wake_at = wake_at
        self._on_stop = on_stop
        self._rules = rules
        self._coalescer = Coalescer(window_s)
        #: This shard's durable events held back by this node's rooms (coalescing).
        self.held_offsets = held_offsets
        #: Members by state: LIVE ones grouped by wire (those with a socket's queue apart);
        #: RECOVERING and CATCHING_UP ones.
        self._members: dict[Wire, dict[str, Push]] = {}
        self._queues: dict[Wire, dict[str, OutboundQueue]] = {}
        self._recovering: dict[str, Recovery] = {}
        self._catching_up: dict[str, Recovery] = {}
        #: Members handed over while events were held here, with their history's end: a
        #: merged frame of events all within it is not theirs (they had each in the replay).
        self._replayed: dict[str, Offset] = {}
        self._idle_at = math.inf  # when an empty room stops
        self._stopped = False
        metrics.rooms.inc()
        self._rearm()

    # -- membership (synchronous) ------------------------------------------------------
    def add(self, member: str, wire: Wire, push: Push) -> None:
        """Make ``member`` a LIVE member at once (its answer then precedes any event)."""
        self._live(member, wire, push)
        self._rearm()

    def _live(self, member: str, wire: Wire, push: Push) -> None:
        live = self._queues if type(push) is OutboundQueue else self._members
        live.setdefault(wire, {})[member] = push

    def begin_recovery(self, member: str, wire: Wire, push: Push, limit: int,
                       on_overflow: Callable[[], None]) -> Recovery:
        """Make ``member`` a RECOVERING member: its live events are buffered (at most
        ``limit``; more calls ``on_overflow`` at the hand-over) until ``promote``."""
        recovery = self._recovering[member] = Recovery(member, wire, push, limit, on_overflow)
        self._rearm()
        return recovery

    def remove(self, member: str) -> None:
        """``member`` is GONE, whatever its state."""
        for members in self._live_groups():
            members.pop(member, None)
        for joining in (self._recovering, self._catching_up):
            if (recovery := joining.pop(member, None)) is not None:
                recovery.move(MemberState.GONE)
        self._replayed.pop(member, None)
        self._rearm()

    def member_state(self, member: str) -> MemberState:
        """Where ``member`` is in this room (GONE when not a member)."""
        if (recovery := self._recovering.get(member) or self._catching_up.get(member)) is not None:
            return recovery.state
        return MemberState.LIVE if any(member in members for members in self._live_groups()) else MemberState.GONE

    def _live_groups(self) -> itertools.chain[dict[str, Push]]:
        return itertools.chain(self._members.values(), self._queues.values())

    @property
    def empty(self) -> bool:
        return not (self._recovering or self._catching_up or any(self._live_groups()))

    def _rearm(self) -> None:
        """Wake at the end of the first held window, or when an empty room has lingered."""
        if self._stopped:  # a member still calling in after the room stopped
            return
        if not self.empty:
            self._idle_at = math.inf
        elif self._idle_at == math.inf:
            self._idle_at = trio.current_time() + self._linger_s
        due = self._coalescer.next_due
        self._wake_at(self, self._idle_at if due is None else min(due, self._idle_at))

    # -- driven by the registry -------------------------------------------------------
    def wake(self, now: float) -> None:
        """The time asked for has come: release the coalescing windows that ended, and stop
        if the room has been empty for ``linger_s``."""
        self._release_held(now)
        if self.empty and now >= self._idle_at:
            self._stop()
        else:
            self._rearm()

    def _stop(self) -> None:
        self._stopped = True
        for held in self._coalescer.held.values():
            if held.first.offset is not None:
                self.held_offsets.remove(held.first.offset)
        self._on_stop(self)
        self._metrics.rooms.dec()

    def take(self, event: StoredEvent) -> int:
        """Deliver ``event`` to every member now, or hold it to coalesce; never blocks.
        Returns the queues it was pushed to now (0 when held)."""
        for recovery in self._recovering.values():
            recovery.buffer(event)
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
                return 0
        return self._deliver(self._frame(event), event)

    def promote(self, recovery: Recovery, after: Offset | None) -> None:
        """A recovering member read its history up to ``after`` (None: it read none): hand
        it over to live delivery (``protocol.session.hand_over``). Events taken before this
        call were buffered; those after it are live."""
        if self._recovering.get(recovery.member) is not recovery:
            return  # the member left (or started over) meanwhile
        del self._recovering[recovery.member]
        if recovery.overflowed:
            recovery.move(MemberState.GONE)
            recovery.on_overflow()
            return
        deliver, skip_to = hand_over(recovery.events, after, self._held)
        for event in deliver:
            recovery.push(recovery.wire.frame(self._frame(event)))
        if after is not None and self._coalescer.held:
            self._replayed[recovery.member] = after
        if skip_to is None:
            self._go_live(recovery)
        else:
            recovery.after = skip_to
            recovery.move(MemberState.CATCHING_UP)
            self._catching_up[recovery.member] = recovery

    def _go_live(self, recovery: Recovery) -> None:
        recovery.move(MemberState.LIVE)
        self._live(recovery.member, recovery.wire, recovery.push)

    def _release_caught_up(self, event: StoredEvent) -> None:
        """Make live the catching-up members for which ``event`` is newer than their history."""
        if event.offset is None:  # ephemeral: never in a history, says nothing of the stream
            for member, recovery in self._catching_up.items():
                if member != event.envelope.origin:
                    recovery.push(recovery.wire.frame(event.frame(self.name)))
            return
        for member, recovery in list(self._catching_up.items()):
            if event.offset > recovery.after:
                del self._catching_up[member]
                self._go_live(recovery)

    def _held(self, event: StoredEvent) -> bool:
        rule = self._rules.get(event.envelope.event)
        return rule is not None and self._coalescer.holds(event, rule)

    def _frame(self, event: StoredEvent) -> Evt:
        """``event``'s frame here, with a cursor that never passes an event held back."""
        evt = event.frame(self.name)
        if self.held_offsets and event.offset is not None:
            evt.cursor = self.held_offsets.cursor_for(event)
        return evt

    def _release_held(self, now: float) -> None:
        for held in self._coalescer.pop_due(now):
            if held.first.offset is not None:
                self.held_offsets.remove(held.first.offset)
            last = held.last
            cursor = self.held_offsets.cursor_for(last) if last.offset is not None else None
            evt = held.frame(self.name, cursor)
            if self._catching_up and last.offset is not None:
                self._release_caught_up(last)  # those for whom it is new go live and get it below
            replayed = self._replayed
            skip = () if not replayed or last.offset is None else {
                member for member, through in replayed.items() if last.offset <= through}
            delivered = self._deliver(evt, last, skip)
            if delivered and self._fan_outs.tracing.enabled and last.envelope.traceparent:
                self._fan_outs.traced_write(last.envelope.traceparent, delivered)
        if not self._coalescer.held:
            self._replayed.clear()  # what is held from now on came after every hand-over

    def _deliver(self, evt: Evt, event: StoredEvent, skip: Collection[str] = ()) -> int:
        """Encode ``evt`` once per wire and push it to every live member but its origin
        (and those in ``skip``); returns how many it was pushed to."""
        envelope = event.envelope
        tracing = self._fan_outs.tracing
        if not (tracing.enabled and envelope.traceparent):
            return self._push(evt, event, skip)
        span = tracing.start("rt.room.fanout", envelope.traceparent, **{
            "rt.room_kind": room_kind(self.name), "rt.event_type": envelope.event})
        try:
            delivered = self._push(evt, event, skip)
            span.set_attribute("rt.recipients", delivered)
            return delivered
        finally:
            span.end()

    def _push(self, evt: Evt, event: StoredEvent, skip: Collection[str]) -> int:
        envelope = event.envelope
        origin = envelope.origin
        if origin is not None:
            skip = {origin, *skip}
        delivered = 0
        frames: dict[Wire, bytes] = {}
        flushed_head = False
        for queued, groups in ((True, self._queues), (False, self._members)):
            for wire, members in groups.items():
                if not members:
                    continue
                frame = frames.get(wire)
                if frame is None:
                    frame = frames[wire] = wire.frame(evt)
                if skip and any(member in members for member in skip):
                    members = {member: push for member, push in members.items() if member not in skip}
                delivered += len(members)
                if queued and len(members) > BROADCAST_MIN:
                    self._fan_outs.broadcast(frame, members.values())
                    continue
                pushes = iter(members.values())
                if len(members) > FLUSH_CHUNK and not flushed_head:
                    # The head of a big fan-out leaves before its tail is pushed (Writer.flush_head).
                    for push in itertools.islice(pushes, FLUSH_CHUNK):
                        push(frame)
                    self._fan_outs.flush_head()
                    flushed_head = True
                for push in pushes:
                    push(frame)
        if envelope.traceparent and not self._fan_outs.tracing.enabled:  # traced: the spans say it
            log.info("deliver", event_id=event.id, event_type=envelope.event, room=self.name,
                     tenant=envelope.tenant, traceparent=envelope.traceparent, recipients=delivered)
        if delivered:
            self._metrics.messages_out.labels(evt.event).inc(delivered)
            appended_ms = event.offset.ms if event.offset is not None else event.ts
            self._fan_outs.appended_at.append(appended_ms / 1000 if appended_ms else time.time())
        return delivered
