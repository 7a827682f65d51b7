"""Writer actor: flushes every connection's queued frames, one write per connection per tick.

Contract
--------
Mailbox
    ``OutboundQueue.push`` (synchronous, never blocks) appends a pre-encoded frame to a
    connection's queue and, on the first frame since the last flush, puts the queue on the
    writer's dirty list (bounded by the number of connections) and wakes the writer.
Owns
    The dirty list, the set of live queues (for metrics), and one drain task per connection
    whose socket is full.
Replies
    None. A queue that overflows its budget calls its owner's ``slow_consumer()`` (the
    connection closes itself); a socket that breaks calls the owner's ``connection_lost()``.
Broadcasts
    A room's event to more than ``BROADCAST_MIN`` queues is not pushed to each: the room
    hands the writer one ``Broadcast`` (the frame and the set of queues, ``broadcast``),
    and the pass writes the frame straight to each queue's socket (those with nothing
    queued in a loop that runs in C, ``_send_direct``). Order per socket is
    kept: a queue that gets any other frame while a broadcast it is in is pending first
    queues that broadcast's frame (``OutboundQueue.push`` catches up), and a queue in
    several pending broadcasts gets their frames in one write, in order.
Failure
    An unexpected exception ends the writer and so the node's nursery: every connection
    depends on it, so the node stops rather than silently stop writing.
Blocking
    Waits only for work (an event), for the coalescing window (at most one flush per
    ``flush_interval_ms``, or per up to twice the last flush's duration when that is longer,
    as the process gets short of CPU and the writer falls behind; when quiet, just until
    the runnable tasks are done)
    and, in drain tasks, for a socket to become writable. A flush is a non-blocking ``send`` of
    the joined frames, capped at ``flush_max_bytes`` per connection per flush so that one
    backlog cannot delay the others. A pass over many sockets lets the other tasks run
    every ``FLUSH_CHUNK`` sockets, so an event published meanwhile is routed at once and
    leaves in the same pass for the sockets not written yet. When idle, it writes the
    first ``FLUSH_CHUNK`` queues of a bigger fan-out while the room is still pushing to
    the rest (``flush_head``, called synchronously by the room), and the first
    ``FLUSH_CHUNK`` sockets of a broadcast as the room makes it.

Why not one writer task per connection: measured on this stack before the project started,
Trio scheduling costs ~2.4 µs per wake-up with 1,000 tasks, and task-per-socket libraries
~20 KB per connection. Here an idle WebSocket connection costs no task (it waits in the parking,
``actors.parking``); its frames leave in one ``send`` per tick from this actor, and only a connection whose socket is full gets a
task of its own (``_drain``) that waits for writability, so a slow client never delays a
broadcast or another client.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from typing import TYPE_CHECKING, Protocol

import trio
import trio.testing

from rtserver.backends.metrics import Metrics
from rtserver.backends.sockets import Sock
from rtserver.backends.tls import TlsSocket
from rtserver.backends.tracing import Tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

#: Largest share of time the writer spends flushing under sustained load (see ``run``)...
FLUSH_SHARE = 0.5
#: ...unless the process has CPU to spare: under ``LOAD_LOW`` of a core (the load, see
#: below), the next flush may follow the last one as soon as the other tasks are idle (a
#: broadcast to a big room is long: its next event does not wait a whole flush's time
#: more); between ``LOAD_LOW`` and ``LOAD_HIGH`` the share goes down from 1 to
#: ``FLUSH_SHARE`` in proportion. Batching saves CPU (one ``send`` for several frames) at
#: the price of latency; it is bought as the CPU gets short (bench/RESULTS.md §17, §29),
#: and only while the writer is behind: its last pass ended with more waiting than one
#: event's broadcast (two broadcasts made, or a queue pushed to, while it ran). A pass
#: that ended with nothing waiting batches nothing by waiting: the next event would only
#: be late. Nor does one that ended with one broadcast waiting (a big room's next event):
#: the window would batch it only with an event that came within it, and would delay it
#: by a part of the pass's time, and the one after it by more (bench/RESULTS.md §33).
#: That is a big room whose passes fill most of the time between its events, as in the
#: first seconds after a connect storm, when the storm's load still counts and every
#: ``send`` costs more (bench/RESULTS.md §32). A burst ends its passes with several
#: broadcasts waiting.
LOAD_LOW = 0.75
LOAD_HIGH = 0.95
#: The load is the share of a core the process used, measured every ``LOAD_PERIOD_S``:
#: a higher measure is taken at once, a lower one lets it down by ``LOAD_EASING`` of the
#: difference per period measured. The writer's own flushes are most of the load in a big
#: room, so a share set from each second alone swings: a full second halves the share, the
#: next second is light, the share goes back to 1, and so on. Eased down, it settles where
#: load and share agree; taken at once, a burst gets the batching from its first second
#: (bench/RESULTS.md §29, §30).
LOAD_PERIOD_S = 1.0
LOAD_EASING = 0.25

#: Queues flushed between two yields to the other tasks: an event that arrives while a
#: broadcast to many sockets is being written is routed at once and reaches, in the same
#: pass, the sockets not written yet (bench/RESULTS.md §22).
FLUSH_CHUNK = 256
#: A fan-out to more queues than this is one ``Broadcast`` rather than a push to each: the
#: first socket is written without waiting for the last queue to be touched, and each
#: delivery costs a ``send`` and a few checks (bench/RESULTS.md §26).
BROADCAST_MIN = FLUSH_CHUNK

_EMPTY = 0
_MORE = 1
_BLOCKED = 2
_BROKEN = 3


#: What ``Writer._send_direct`` maps over a chunk's queues: each one's socket, and its ``send``.
_send = socket.socket.send
_sock_of = attrgetter("_sock")


class QueueOwner(Protocol):
    def slow_consumer(self) -> None: ...

    def connection_lost(self) -> None: ...


class Broadcast:
    """One frame for many queues (see the module contract): ``seq`` orders broadcasts;
    ``queues`` is filled once the head is written (``Writer.broadcast``)."""

    __slots__ = ("seq", "frame", "queues")

    def __init__(self, seq: int, frame: bytes) -> None:
        self.seq = seq
        self.frame = frame
        self.queues: dict[OutboundQueue, None] = {}


class OutboundQueue:
    """One connection's outbound frames, budgeted in frames and bytes. Calling the queue
    pushes a frame (it is a room member's ``push``, and so can be in a ``Broadcast``).

    Frames leave whole: a frame the socket took only part of stays first in the queue
    (``partial``) until the rest is written, and nothing, not even a close frame, is ever
    written inside it (``discard`` keeps it). A TLS socket takes whole frames, encrypted,
    and holds the records the kernel did not take (``TlsSocket.unsent``): the queue is
    then blocked, empty or not, until they are written."""

    __slots__ = (
        "_sock", "_writer", "frames", "nbytes", "max_frames", "max_bytes",
        "scheduled", "blocked", "closed", "partial", "through", "_owner", "_flushed", "plain",
    )

    def __init__(
        self,
        sock: Sock,
        writer: Writer,
        *,
        max_frames: int,
        max_bytes: int,
        owner: QueueOwner,
    ) -> None:
        self._sock = sock
        self._writer = writer
        self.frames: list[bytes] = []
        self.nbytes = 0
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.scheduled = False
        self.blocked = False
        self.closed = False
        #: Whether ``frames[0]`` is the unwritten rest of a frame the socket took part of.
        self.partial = False
        #: The ``seq`` of the last broadcast this queue has had (written or queued) or
        #: was found not to be in.
        self.through = writer.last_broadcast
        self._owner = owner
        self._flushed: trio.Event | None = None
        #: Whether the socket is a plain ``socket.socket`` (not TLS): a broadcast's pass
        #: writes to it in its C loop (``Writer._send_direct``).
        self.plain = type(sock) is socket.socket
        writer.queues.add(self)

    def push(self, frame: bytes) -> None:
        """Queue ``frame``, after the pending broadcasts this queue is in; never blocks.
        Over budget, the connection is told it overflowed."""
        if self.closed:
            return
        if self._writer.broadcasts:
            self.catch_up()
        self.frames.append(frame)
        self.nbytes += len(frame)
        self.queued()

    __call__ = push

    def push_final(self, frame: bytes) -> None:
        """Queue a last frame (a close frame) even past the budget; nothing is queued after it."""
        if self not in self._writer.queues:
            return
        if self._writer.broadcasts and not self.closed:
            self.catch_up()
        self.frames.append(frame)
        self.nbytes += len(frame)
        self.closed = True
        if not self.scheduled and not self.blocked:
            self.scheduled = True
            self._writer.schedule(self)

    def catch_up(self) -> bool:
        """Queue, in order, the frames of the pending broadcasts this queue is in and has
        not had yet; returns whether there were any (the caller then calls ``queued``)."""
        writer = self._writer
        through = self.through
        if through >= writer.last_broadcast:
            return False
        caught_up = False
        for broadcast in writer.broadcasts:
            if broadcast.seq > through and self in broadcast.queues:
                self.frames.append(broadcast.frame)
                self.nbytes += len(broadcast.frame)
                caught_up = True
        self.through = writer.last_broadcast
        return caught_up

    def queued(self) -> None:
        """Frames were added: over budget, the owner is told; else the writer will write them."""
        if len(self.frames) > self.max_frames or self.nbytes > self.max_bytes:
            self.closed = True
            self._owner.slow_consumer()
        elif not self.scheduled and not self.blocked:
            self.scheduled = True
            self._writer.schedule(self)

    def discard(self) -> None:
        """Drop whatever is queued (a slow consumer's backlog) but the rest of a frame
        partly written, so that what follows it starts on a frame boundary."""
        if self.partial:
            del self.frames[1:]
            self.nbytes = len(self.frames[0])
        else:
            self.frames.clear()
            self.nbytes = 0

    async def wait_flushed(self) -> None:
        """Return once every frame queued so far, pending broadcasts' included, has been
        written (or the socket broke)."""
        if self._writer.broadcasts and not self.closed and self.catch_up():
            self.queued()
        while self.blocked or (self.frames and self.scheduled):
            self._flushed = trio.Event()
            await self._flushed.wait()

    def detach(self) -> None:
        """The connection is gone: stop writing and forget the queue."""
        self.closed = True
        self.partial = False
        self.discard()
        self._writer.queues.discard(self)
        self._notify_flushed()

    def _notify_flushed(self) -> None:
        if self._flushed is not None:
            self._flushed.set()
            self._flushed = None

    def _on_the_wire(self) -> int:
        """Every frame was handed to the socket: _EMPTY once all of it is written, else
        _BLOCKED (a TLS socket's records the kernel did not take yet) or _BROKEN.
        A broadcast's pass skips it where it has nothing to do (``_send_direct``: a plain
        socket, and nobody waits for the flush of a queue neither scheduled nor blocked):
        a change here goes there too."""
        if type(self._sock) is TlsSocket and self._sock.unsent:
            try:
                self._sock.flush()
            except BlockingIOError:
                return _BLOCKED
            except OSError:
                return _BROKEN
        self._notify_flushed()
        return _EMPTY

    def flush_nowait(self, max_bytes: int) -> int:
        """Write what fits without blocking; returns _EMPTY, _MORE, _BLOCKED or _BROKEN."""
        frames = self.frames
        if not frames:
            return self._on_the_wire()
        if len(frames) == 1:
            count, data = 1, frames[0]
        else:
            count, size = 0, 0
            for frame in frames:
                count += 1
                size += len(frame)
                if size >= max_bytes:
                    break
            data = b"".join(frames[:count]) if count > 1 else frames[0]
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return _BROKEN
        self.nbytes -= sent
        if sent == len(data):
            del frames[:count]
            self.partial = False
            return _MORE if frames else self._on_the_wire()
        # Keep frame boundaries: the rest of the frame the socket cut, then the others.
        written = 0
        for cut, frame in enumerate(frames[:count]):
            if written + len(frame) > sent:
                break
            written += len(frame)
        self.partial = sent > written or (cut == 0 and self.partial)
        frames[:count] = [frames[cut][sent - written:], *frames[cut + 1:count]]
        return _BLOCKED

    def send_now(self, frame: bytes) -> int:
        """Write ``frame`` with nothing queued before it (the queue is empty and not
        blocked); what the socket does not take is queued, the rest of the frame first.
        Returns _EMPTY, _BLOCKED or _BROKEN."""
        try:
            sent = self._sock.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            return _BROKEN
        if sent == len(frame):
            return self._on_the_wire()
        return self.keep_unsent(frame, sent)

    def keep_unsent(self, frame: bytes, sent: int) -> int:
        """The socket took ``sent`` bytes of ``frame``, written with nothing queued before
        it, and no more: queue the rest; returns _BLOCKED."""
        self.frames.append(frame[sent:] if sent else frame)
        self.nbytes += len(frame) - sent
        self.partial = sent > 0
        return _BLOCKED


def push_each(frame: bytes, queues: Iterable[OutboundQueue]) -> None:
    """A broadcast without a writer's pass: ``frame`` pushed to each queue."""
    for queue in queues:
        queue.push(frame)


class FanOuts:
    """What the rooms tell the writer of their fan-outs, settled at the end of the pass that
    writes them: each event's append time (``rt_delivery_latency_seconds``) and, with
    tracing on, one ``rt.socket.write`` span per event (``rtserver.backends.tracing``)."""

    __slots__ = ("appended_at", "write_spans", "tracing", "flush_head", "broadcast")

    def __init__(self, tracing: Tracing, flush_head: Callable[[], None] = lambda: None,
                 broadcast: Callable[[bytes, Iterable[OutboundQueue]], None] = push_each) -> None:
        #: Append times (s since the epoch) of the events fanned out since the last pass.
        self.appended_at: list[float] = []
        self.write_spans: list[Span] = []
        self.tracing = tracing
        #: Called by a room after the first ``FLUSH_CHUNK`` pushes of a bigger fan-out
        #: (``Writer.flush_head``).
        self.flush_head = flush_head
        #: Hands the writer one frame for many queues (``Writer.broadcast``).
        self.broadcast = broadcast

    def traced_write(self, parent: str, recipients: int) -> None:
        """A write span, child of ``parent``, for an event pushed to ``recipients`` queues;
        it ends when the pass that writes them does."""
        self.write_spans.append(self.tracing.start("rt.socket.write", parent, **{"rt.recipients": recipients}))


class Writer:
    """The node's flush scheduler (see the module contract)."""

    def __init__(self, metrics: Metrics, *, flush_max_bytes: int, interval_s: float,
                 tracing: Tracing = Tracing.off()) -> None:
        self._metrics = metrics
        self._flush_max_bytes = flush_max_bytes
        self._interval_s = interval_s
        self._last_flush = -interval_s
        self._last_cost = 0.0
        self._share = 1.0  # of the time the writer may spend flushing, by the load
        self._load_mark = (time.perf_counter(), time.process_time())
        self._load = 0.0  # of a core, eased down (``LOAD_EASING``)
        self._behind = False  # the last pass ended with more than one event waiting (``FLUSH_SHARE``)
        self._dirty: list[OutboundQueue] = []
        #: Broadcasts not written to every queue yet, in ``seq`` order.
        self.broadcasts: list[Broadcast] = []
        self.last_broadcast = 0
        self._wakeup = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.fan_outs = FanOuts(tracing, self.flush_head, self.broadcast)
        #: Seconds written by ``flush_head`` and broadcasts' heads since the last pass
        #: (counted in its cost).
        self._head_cost = 0.0
        self.queues: set[OutboundQueue] = set()
        #: Socket writes and the frames they carried, since start (frames per write is
        #: the batching the whole design is about).
        self.writes = 0
        self.frames_written = 0
        metrics.outbound_queued_bytes.set_function(lambda: sum(q.nbytes for q in self.queues))
        metrics.outbound_queued_frames.set_function(lambda: sum(len(q.frames) for q in self.queues))
        metrics.socket_writes.set_function(lambda: self.writes)
        metrics.frames_written.set_function(lambda: self.frames_written)

    def schedule(self, queue: OutboundQueue) -> None:
        self._dirty.append(queue)
        if not self._wakeup.is_set():
            self._wakeup.set()

    def broadcast(self, frame: bytes, queues: Iterable[OutboundQueue]) -> None:
        """Write ``frame`` to each of ``queues`` in the next pass, after what each has
        queued (see the module contract). When the writer is idle and no other broadcast
        is pending, the first ``FLUSH_CHUNK`` sockets with nothing queued are written at
        once, as ``flush_head`` does for pushed fan-outs: the first recipients wait neither
        for the writer's turn nor for the set of the others to be made."""
        self.last_broadcast += 1
        broadcast = Broadcast(self.last_broadcast, frame)
        if not self.broadcasts and self._idle():
            began = time.perf_counter()
            queues = iter(queues)
            passed_over: list[OutboundQueue] = []
            self._write_chunk(broadcast, queues, passed_over)
            queues = itertools.chain(passed_over, queues)
            self._head_cost += time.perf_counter() - began
        broadcast.queues = dict.fromkeys(queues)
        self.broadcasts.append(broadcast)
        if not self._wakeup.is_set():
            self._wakeup.set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                if not (self._dirty or self.broadcasts):
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                # Coalescing window: at most one flush per interval, so that under load every
                # connection's frames of the interval leave in one write (bench/RESULTS.md §2: the
                # cost is the number of send() calls). When quiet, flush as soon as the runnable
                # producers of this round are done, so an isolated event is not delayed.
                # The window grows with the cost of the last flush so that writing takes at most
                # a share of the time (down to FLUSH_SHARE as the process gets short of CPU and
                # the writer falls behind) and the rest stays for reading and routing.
                due = self._due()
                if trio.current_time() < due:
                    await trio.sleep_until(due)
                else:
                    with trio.move_on_after(self._interval_s):
                        await trio.testing.wait_all_tasks_blocked()
                self._last_flush = trio.current_time()
                self._last_cost = await self._flush_dirty()
                self._measure_load()

    def _due(self) -> float:
        """When the next flush may start (the coalescing window, see ``run``)."""
        return self._last_flush + max(self._interval_s, self._last_cost / self._window_share())

    def _window_share(self) -> float:
        """The share of the time the writer may spend flushing: the load's while the writer
        is behind, else all of it (see ``FLUSH_SHARE``)."""
        return self._share if self._behind else 1.0

    def flush_head(self) -> None:
        """Write at once what is queued, if the writer is idle: it has its whole share of
        the time (see ``_idle``), no coalescing window is running, and nothing is queued but
        the head of this fan-out. Called by a room part way through a fan-out to many
        sockets, it sends the first recipients' frames before the others are pushed, so the
        first bytes of a broadcast leave ~4 ms sooner at 5,000 recipients
        (bench/RESULTS.md §23). Frames stay in order: a socket's queue is written in order,
        only earlier."""
        if 0 < len(self._dirty) <= FLUSH_CHUNK and self._idle():
            dirty, self._dirty = self._dirty, []
            began = time.perf_counter()
            self._flush(dirty)
            self._head_cost += time.perf_counter() - began

    def _idle(self) -> bool:
        """Whether a write now takes nothing from the coalescing: the process has CPU to
        spare (under ``LOAD_LOW``) or the writer keeps up, and no coalescing window is
        running."""
        return self._window_share() == 1.0 and self._nursery is not None and trio.current_time() >= self._due()

    def _measure_load(self) -> None:
        """Every ``LOAD_PERIOD_S``: the load, from the share of a core the process used (its
        CPU time, system time included, over the wall time) since the last time, and the
        flush share for it."""
        wall, cpu = time.perf_counter(), time.process_time()
        since_wall, since_cpu = self._load_mark
        span = wall - since_wall
        if span >= LOAD_PERIOD_S:
            used = (cpu - since_cpu) / span
            if used >= self._load:
                self._load = used
            else:  # eased per period measured (a quiet stretch with no flush is measured late)
                self._load = used + (1.0 - LOAD_EASING) ** (span / LOAD_PERIOD_S) * (self._load - used)
            short = min(1.0, max(0.0, (self._load - LOAD_LOW) / (LOAD_HIGH - LOAD_LOW)))
            self._share = 1.0 - short * (1.0 - FLUSH_SHARE)
            self._load_mark = (wall, cpu)

    async def _flush_dirty(self) -> float:
        """One pass: the dirty queues, then the broadcasts pending when it began, yielding
        to the other tasks every ``FLUSH_CHUNK`` sockets (a queue not reached yet takes
        what they push, or broadcast, in the same write); returns the seconds spent writing.
        Whether more than one broadcast, or a pushed queue, was waiting when it ended sets
        ``_behind``."""
        dirty, self._dirty = self._dirty, []
        broadcasts = self.broadcasts[:]
        fan_outs = self.fan_outs
        appended_at, fan_outs.appended_at = fan_outs.appended_at, []
        write_spans, fan_outs.write_spans = fan_outs.write_spans, []
        cost, self._head_cost = self._head_cost, 0.0
        for start in range(0, len(dirty), FLUSH_CHUNK):
            if start:
                await trio.lowlevel.checkpoint()
            began = time.perf_counter()
            self._flush(dirty[start:start + FLUSH_CHUNK])
            cost += time.perf_counter() - began
        for broadcast in broadcasts:
            cost += await self._write_broadcast(broadcast)
        if appended_at:
            now = time.time()
            observe = self._metrics.delivery_latency.observe
            for appended in appended_at:
                observe(max(0.0, now - appended))
        for span in write_spans:
            span.end()
        self._behind = bool(self._dirty) or len(self.broadcasts) > 1
        return cost

    def _flush(self, dirty: list[OutboundQueue]) -> None:
        max_bytes = self._flush_max_bytes
        writes = frames = 0
        for queue in dirty:
            if self.broadcasts and queue.catch_up():
                queue.queued()  # still scheduled: the budget is checked, and it is written now
            queue.scheduled = False
            if queue.blocked:
                continue
            queued = len(queue.frames)
            state = queue.flush_nowait(max_bytes)
            writes += 1
            frames += queued - len(queue.frames)
            self._settle(queue, state)
        self.writes += writes
        self.frames_written += frames

    async def _write_broadcast(self, broadcast: Broadcast) -> float:
        """Write ``broadcast`` to its queues that have not had it, yielding to the other
        tasks every ``FLUSH_CHUNK`` writes; returns the seconds spent writing. It is then no
        longer pending."""
        queues = iter(broadcast.queues)
        cost = 0.0
        while True:
            began = time.perf_counter()
            done = self._write_chunk(broadcast, queues)
            cost += time.perf_counter() - began
            if done:
                break
            await trio.lowlevel.checkpoint()
        self.broadcasts.remove(broadcast)
        return cost

    def _write_chunk(self, broadcast: Broadcast, queues: Iterator[OutboundQueue],
                     passed_over: list[OutboundQueue] | None = None) -> bool:
        """Write ``broadcast`` to the next of its ``queues`` that have not had it, up to
        ``FLUSH_CHUNK`` writes: straight to the socket when nothing else is queued or
        pending for it, else through the queue (caught up, so in order, and in one write
        with later broadcasts it is in); returns whether ``queues`` is exhausted. With
        ``passed_over`` (the head of a broadcast not pending yet, when none is), a queue
        with frames queued is added to it instead: the pass writes the broadcast after them."""
        if passed_over is None and self.broadcasts[-1] is not broadcast:
            return self._write_behind(broadcast, queues)
        writes = 0
        while writes < FLUSH_CHUNK:
            wanted = FLUSH_CHUNK - writes
            chunk = list(itertools.islice(queues, wanted))
            writes += self._write_latest(broadcast, chunk, passed_over)
            if len(chunk) < wanted:
                return True
        return False

    def _write_latest(self, broadcast: Broadcast, queues: list[OutboundQueue],
                      passed_over: list[OutboundQueue] | None) -> int:
        """``_write_chunk`` for the latest broadcast: its frame to each of ``queues`` with
        nothing queued, most in one ``_send_direct``; returns the writes made."""
        seq, frame = broadcast.seq, broadcast.frame
        # Most often every queue: empty (so nobody waits for its flush), on a plain socket.
        direct = [queue for queue in queues if queue.through < seq and queue.plain
                  and not (queue.scheduled or queue.blocked or queue.closed)]
        writes = len(direct)
        frames = self._send_direct(seq, frame, direct) if direct else 0
        for queue in queues if writes < len(queues) else ():  # the others (direct ones have had it)
            if queue.through >= seq or queue.closed:
                continue
            if queue.scheduled or queue.blocked:
                if passed_over is not None:
                    passed_over.append(queue)
                elif queue.catch_up():
                    queue.queued()  # written by the pass it is scheduled for, or its drain
                continue
            queue.through = seq
            state = queue.send_now(frame)  # a TLS socket
            frames += state == _EMPTY
            writes += 1
            if state != _EMPTY:
                self._settle(queue, state)
        self.writes += writes
        self.frames_written += frames
        return writes

    def _write_behind(self, broadcast: Broadcast, queues: Iterator[OutboundQueue]) -> bool:
        """``_write_chunk`` for a broadcast others are pending after: each queue that has
        not had it is caught up with every pending broadcast it is in, written in one
        ``send`` (a burst's batching)."""
        seq = broadcast.seq
        writes = frames = 0
        for queue in queues:
            if queue.through >= seq or queue.closed:
                continue
            if queue.scheduled or queue.blocked:
                if queue.catch_up():
                    queue.queued()  # written by the pass it is scheduled for, or its drain
                continue
            queue.catch_up()
            queued = len(queue.frames)
            state = queue.flush_nowait(self._flush_max_bytes)
            frames += queued - len(queue.frames)
            writes += 1
            if state != _EMPTY:
                self._settle(queue, state)
            if writes == FLUSH_CHUNK:
                break
        self.writes += writes
        self.frames_written += frames
        return writes < FLUSH_CHUNK

    def _send_direct(self, seq: int, frame: bytes, queues: list[OutboundQueue]) -> int:
        """Write broadcast ``seq``'s ``frame`` to ``queues``, each empty (neither scheduled nor
        blocked) and ``plain``, in one loop that runs in C (~0.2 µs less per
        socket than a Python loop, bench/RESULTS.md §31); returns how many sockets took it
        whole. A socket that takes part of it, or none, or breaks, is settled after."""
        for queue in queues:
            queue.through = seq
        size = len(frame)
        sent: list[int] = []
        while len(sent) < len(queues):
            try:  # a send that raises ends the loop; ``extend`` keeps what came before
                sent.extend(map(_send, map(_sock_of, queues[len(sent):]), itertools.repeat(frame)))
            except BlockingIOError:
                sent.append(0)
            except OSError:
                sent.append(-1)
        whole = sent.count(size)
        if whole < len(queues):
            for queue, took in zip(queues, sent):
                if took != size:
                    self._settle(queue, _BROKEN if took < 0 else queue.keep_unsent(frame, took))
        return whole

    def _settle(self, queue: OutboundQueue, state: int) -> None:
        """After a write: more to write next pass, a drain task for a full socket, or the
        connection lost."""
        if state == _MORE:
            queue.scheduled = True
            self._dirty.append(queue)
        elif state == _BLOCKED:
            queue.blocked = True
            self._nursery.start_soon(self._drain, queue)
        elif state == _BROKEN:
            queue.detach()
            queue._owner.connection_lost()

    async def _drain(self, queue: OutboundQueue) -> None:
        """Wait for a full socket to take more; hand the queue back to ticks once drained."""
        try:
            while True:
                try:
                    await trio.lowlevel.wait_writable(queue._sock)
                except (trio.ClosedResourceError, OSError):
                    state = _BROKEN
                else:
                    state = queue.flush_nowait(self._flush_max_bytes)
                if state == _BROKEN:
                    queue.detach()
                    queue._owner.connection_lost()
                    return
                if state == _EMPTY:
                    return
                if state == _MORE:
                    await trio.lowlevel.checkpoint()
        finally:
            queue.blocked = False

