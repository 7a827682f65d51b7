"""The writer actor's pass over many sockets (actors/writer.py)."""

import socket
import time

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.registry import Registry
from actors.writer import BROADCAST_MIN, FLUSH_CHUNK, FLUSH_SHARE, LOAD_PERIOD_S, OutboundQueue, Writer
from protocol.catalog import Catalog
from protocol.envelope import Envelope
from protocol.wires import POLL_JSON
from rtserver.backends.bus.memory import MemoryBus
from rtserver.backends.metrics import Metrics
from tests.support.actor_harness import QueueOwner, config


async def test_a_frame_pushed_during_a_pass_leaves_in_that_pass_for_the_sockets_not_written_yet(monkeypatch):
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    pairs = [socket.socketpair() for _ in range(FLUSH_CHUNK * 2)]
    queues = [OutboundQueue(ours, writer, max_frames=10, max_bytes=1000, owner=QueueOwner()) for ours, _ in pairs]
    for queue in queues:
        queue.push(b"A")
    yielded = trio.lowlevel.checkpoint

    async def broadcast_b_at_the_yield() -> None:  # what a task routing an event does then
        for queue in queues:
            queue.push(b"B")
        await yielded()

    monkeypatch.setattr(trio.lowlevel, "checkpoint", broadcast_b_at_the_yield)
    await writer._flush_dirty()
    monkeypatch.undo()
    received = [theirs.recv(16) for _, theirs in pairs]
    # The first chunk was written before B was routed: B waits for the next pass. The
    # second chunk, not written yet when B came, carried both in one write.
    assert received == [b"A"] * FLUSH_CHUNK + [b"AB"] * FLUSH_CHUNK
    assert writer.writes == FLUSH_CHUNK * 2 and writer.frames_written == FLUSH_CHUNK * 3
    await writer._flush_dirty()
    assert [theirs.recv(16) for _, theirs in pairs[:FLUSH_CHUNK]] == [b"B"] * FLUSH_CHUNK
    for pair in pairs:
        for s in pair:
            s.close()


def has_data(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(65536, socket.MSG_DONTWAIT | socket.MSG_PEEK))
    except BlockingIOError:
        return False


async def test_the_head_of_a_big_fan_out_is_written_before_its_tail_is_pushed(nursery):
    """With no coalescing window running, a room's fan-out to more than ``FLUSH_CHUNK``
    members has the writer send the first ``FLUSH_CHUNK`` frames before it pushes the rest."""
    cfg = config()
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    await nursery.start(writer.run)
    bus = MemoryBus(cfg.bus)
    registry = Registry(bus, cfg.rooms, Metrics(), writer.fan_outs, Catalog.default())
    room = registry.open_room("t1/professional:1")
    pairs = [socket.socketpair() for _ in range(FLUSH_CHUNK)]
    for i, (ours, _) in enumerate(pairs):
        room.add(f"head{i}", POLL_JSON, OutboundQueue(ours, writer, max_frames=10, max_bytes=1 << 16,
                                                      owner=QueueOwner()).push)
    written_when_the_tail_came: list[int] = []
    room.add("tail", POLL_JSON, lambda frame: written_when_the_tail_came.append(
        sum(has_data(theirs) for _, theirs in pairs)))
    appended = await bus.append(Envelope(event="appointment.created", tenant="t1", rooms=["professional:1"]))
    assert registry.route(appended.event) == FLUSH_CHUNK + 1
    assert written_when_the_tail_came == [FLUSH_CHUNK]
    for pair in pairs:
        for s in pair:
            s.close()


# -- broadcasts ----------------------------------------------------------------------------

def stuffed_pairs(count: int) -> list[tuple[socket.socket, socket.socket]]:
    """Socket pairs with small buffers, so that writes are cut and queues block."""
    pairs = [socket.socketpair() for _ in range(count)]
    for ours, theirs in pairs:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ours.setblocking(False)
        theirs.setblocking(False)
    return pairs


def read_available(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


QUEUES = 5
#: Frame sizes: up to more than a stuffed socket takes in one write, so a write to an
#: empty queue can be cut too.
sizes = st.integers(1, 10_000)
operations = st.lists(st.one_of(
    st.tuples(st.just("push"), st.integers(0, QUEUES - 1), sizes),
    st.tuples(st.just("broadcast"), st.sets(st.integers(0, QUEUES - 1), min_size=1), sizes),
    st.tuples(st.just("pass")),
    st.tuples(st.just("read"), st.integers(0, QUEUES - 1)),
), max_size=40)


@settings(max_examples=150, deadline=None)
@given(ops=operations)
def test_frames_pushed_and_broadcast_reach_each_socket_whole_once_and_in_the_order_given(ops):
    """Any interleaving of pushes, broadcasts, passes and reads, with writes cut by full
    sockets: each socket receives exactly its frames, in the order they were given to it."""

    async def main() -> None:
        writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
        pairs = stuffed_pairs(QUEUES)
        queues = [OutboundQueue(ours, writer, max_frames=1000, max_bytes=1 << 24, owner=QueueOwner())
                  for ours, _ in pairs]
        expected = [bytearray() for _ in queues]
        received = [bytearray() for _ in queues]
        numbered = iter(range(1_000_000))

        def frame(size: int) -> bytes:
            head = b"<%d:" % next(numbered)
            return head + b"x" * max(0, size - len(head) - 1) + b">"

        async with trio.open_nursery() as nursery:
            writer._nursery = nursery  # the drain tasks of blocked queues run here
            for op in ops:
                if op[0] == "push":
                    data = frame(op[2])
                    queues[op[1]].push(data)
                    expected[op[1]] += data
                elif op[0] == "broadcast":
                    data = frame(op[2])
                    writer.broadcast(data, [queues[i] for i in sorted(op[1])])
                    for i in op[1]:
                        expected[i] += data
                elif op[0] == "pass":
                    await writer._flush_dirty()
                else:
                    received[op[1]] += read_available(pairs[op[1]][1])
                    await trio.testing.wait_all_tasks_blocked()
            while writer.broadcasts or writer._dirty or any(q.blocked for q in queues):
                await writer._flush_dirty()
                for i, (_, theirs) in enumerate(pairs):
                    received[i] += read_available(theirs)
                await trio.testing.wait_all_tasks_blocked()
            for i, (_, theirs) in enumerate(pairs):
                received[i] += read_available(theirs)
        assert received == expected
        for pair in pairs:
            for s in pair:
                s.close()

    trio.run(main)


async def test_a_broadcast_is_written_once_per_socket_with_what_each_had_queued_before_it():
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    pairs = [socket.socketpair() for _ in range(3)]
    queues = [OutboundQueue(ours, writer, max_frames=10, max_bytes=1000, owner=QueueOwner()) for ours, _ in pairs]
    queues[0].push(b"before")
    writer.broadcast(b"B1", queues)
    queues[1].push(b"after")  # queued behind B1, which it is in
    writer.broadcast(b"B2", queues[1:])
    await writer._flush_dirty()
    assert [theirs.recv(64) for _, theirs in pairs] == [b"beforeB1", b"B1afterB2", b"B1B2"]
    assert writer.writes == 3 and writer.frames_written == 7
    assert not writer.broadcasts
    for pair in pairs:
        for s in pair:
            s.close()


async def test_a_queue_that_waits_for_its_frames_waits_for_a_pending_broadcast_too(nursery):
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    await nursery.start(writer.run)
    ours, theirs = socket.socketpair()
    queue = OutboundQueue(ours, writer, max_frames=10, max_bytes=1000, owner=QueueOwner())
    writer.broadcast(b"B", [queue])
    await queue.wait_flushed()
    assert theirs.recv(16, socket.MSG_DONTWAIT) == b"B"
    ours.close()
    theirs.close()


async def test_a_blocked_member_of_broadcasts_over_its_budget_is_a_slow_consumer():
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    (ours, theirs), = stuffed_pairs(1)
    overflowed = []

    class Owner(QueueOwner):
        def slow_consumer(self) -> None:
            overflowed.append(len(queue.frames))

    queue = OutboundQueue(ours, writer, max_frames=1000, max_bytes=64 * 1024, owner=Owner())
    async with trio.open_nursery() as nursery:
        writer._nursery = nursery  # the blocked queue's drain task waits here
        for _ in range(20):
            writer.broadcast(b"x" * 4000, [queue])
            await writer._flush_dirty()
        assert queue.blocked and queue.closed and len(overflowed) == 1
        nursery.cancel_scope.cancel()
    ours.close()
    theirs.close()


async def test_a_broadcast_frame_the_socket_cut_stays_whole_when_the_backlog_is_dropped():
    """A slow consumer's backlog is dropped, but the rest of a broadcast frame already
    partly written still leaves before the close frame."""
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    (ours, theirs), = stuffed_pairs(1)
    queue = OutboundQueue(ours, writer, max_frames=1000, max_bytes=1 << 20, owner=QueueOwner())
    big = b"<" + b"x" * 100_000 + b">"
    received = bytearray()
    async with trio.open_nursery() as nursery:
        writer._nursery = nursery
        writer.broadcast(big, [queue])
        await writer._flush_dirty()
        assert queue.blocked and queue.partial
        queue.push(b"dropped")
        queue.discard()
        queue.push_final(b"CLOSE")
        while queue.blocked or queue.frames:
            received += read_available(theirs)
            await trio.testing.wait_all_tasks_blocked()
            await writer._flush_dirty()
    received += read_available(theirs)
    assert received == big + b"CLOSE"
    ours.close()
    theirs.close()


async def test_a_room_hands_a_fan_out_to_many_sockets_to_the_writer_as_one_broadcast():
    """Past ``BROADCAST_MIN`` socket queues, a room's event is one broadcast: no queue is
    touched before the writer's pass, the origin is left out, and the pass writes it."""
    cfg = config()
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    bus = MemoryBus(cfg.bus)
    registry = Registry(bus, cfg.rooms, Metrics(), writer.fan_outs, Catalog.default())
    room = registry.open_room("t1/professional:1")
    pairs = [socket.socketpair() for _ in range(BROADCAST_MIN + 2)]
    queues = [OutboundQueue(ours, writer, max_frames=10, max_bytes=1 << 16, owner=QueueOwner()) for ours, _ in pairs]
    for i, queue in enumerate(queues):
        room.add(f"member{i}", POLL_JSON, queue)
    appended = await bus.append(Envelope(event="appointment.created", tenant="t1", rooms=["professional:1"],
                                         origin="member0"))
    assert registry.route(appended.event) == BROADCAST_MIN + 1
    assert len(writer.broadcasts) == 1 and not any(queue.frames or queue.scheduled for queue in queues)
    await writer._flush_dirty()
    assert [has_data(theirs) for _, theirs in pairs] == [False] + [True] * (BROADCAST_MIN + 1)
    for pair in pairs:
        for s in pair:
            s.close()


async def test_an_idle_writer_writes_the_head_of_a_broadcast_at_once_and_the_rest_in_its_pass(nursery):
    """The first ``FLUSH_CHUNK`` sockets with nothing queued of a broadcast made while the
    writer is idle are written before ``broadcast`` returns; a broadcast made while another
    is pending waits for the pass, which writes each socket's frames in order, joined
    where it can."""
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    writer._nursery = nursery  # as when it runs
    pairs = [socket.socketpair() for _ in range(FLUSH_CHUNK * 2)]
    queues = [OutboundQueue(ours, writer, max_frames=10, max_bytes=1000, owner=QueueOwner()) for ours, _ in pairs]
    queues[0].push(b"before")
    writer.broadcast(b"A", queues)
    head = pairs[1:FLUSH_CHUNK + 1]
    assert [has_data(theirs) for _, theirs in pairs] == [False] + [True] * FLUSH_CHUNK + [False] * (FLUSH_CHUNK - 1)
    assert [theirs.recv(16) for _, theirs in head] == [b"A"] * FLUSH_CHUNK
    writer.broadcast(b"B", queues)
    assert not any(has_data(theirs) for _, theirs in pairs)
    await writer._flush_dirty()
    assert [theirs.recv(16) for _, theirs in pairs] == (
        [b"beforeAB"] + [b"B"] * FLUSH_CHUNK + [b"AB"] * (FLUSH_CHUNK - 1))
    assert not writer.broadcasts
    assert writer.writes == FLUSH_CHUNK * 3 and writer.frames_written == FLUSH_CHUNK * 4 + 1
    for pair in pairs:
        for s in pair:
            s.close()


async def test_a_publish_on_the_memory_bus_returns_after_a_big_room_s_head_was_written(nursery, autojump_clock):
    """The registry routes an appended event before the appender goes on (answers its
    publisher): an idle writer has written the first sockets of the room's broadcast by
    then, whichever order Trio runs the two tasks in."""
    cfg = config()
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    await nursery.start(writer.run)
    bus = MemoryBus(cfg.bus)
    registry = Registry(bus, cfg.rooms, Metrics(), writer.fan_outs, Catalog.default())
    await nursery.start(registry.run)
    room = registry.open_room("t1/professional:1")
    pairs = [socket.socketpair() for _ in range(BROADCAST_MIN + 1)]
    for i, (ours, _) in enumerate(pairs):
        room.add(f"member{i}", POLL_JSON, OutboundQueue(ours, writer, max_frames=10, max_bytes=1 << 16,
                                                        owner=QueueOwner()))
    for _ in range(20):
        await trio.sleep(1)  # the writer is idle: no coalescing window is running
        await bus.append(Envelope(event="appointment.created", tenant="t1", rooms=["professional:1"]))
        assert all(has_data(theirs) for _, theirs in pairs[:FLUSH_CHUNK])
        await trio.sleep(1)
        assert all(theirs.recv(65536) for _, theirs in pairs)
    for pair in pairs:
        for s in pair:
            s.close()


async def test_frames_pushed_while_a_broadcast_s_head_is_written_keep_their_order_on_each_socket(nursery):
    """A connection lost during a head write may push to other members at once: a member
    the head has written gets that frame after the broadcast, in the pass; one it has not
    reached gets it before the broadcast."""
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    writer._nursery = nursery
    pairs = [socket.socketpair() for _ in range(FLUSH_CHUNK + 8)]
    queues: list[OutboundQueue] = []
    written, not_reached = 5, FLUSH_CHUNK + 3

    class PushesOnLoss(QueueOwner):
        def connection_lost(self) -> None:
            queues[written].push(b"X")
            queues[not_reached].push(b"Y")

    for i, (ours, _) in enumerate(pairs):
        owner = PushesOnLoss() if i == 2 else QueueOwner()
        queues.append(OutboundQueue(ours, writer, max_frames=10, max_bytes=1000, owner=owner))
    pairs[2][1].close()  # its writes fail: connection lost
    writer.broadcast(b"B", queues)
    assert pairs[written][1].recv(16) == b"B" and not has_data(pairs[not_reached][1])
    await writer._flush_dirty()
    expected = {written: b"X", not_reached: b"YB"}
    assert [theirs.recv(16) if has_data(theirs) else b"" for i, (_, theirs) in enumerate(pairs) if i != 2] == [
        expected.get(i, b"B") for i in range(len(pairs)) if i != 2]
    for pair in pairs:
        for s in pair:
            s.close()


def measure_load(writer: Writer, load: float, periods: int, spanning: float = 100.0) -> None:
    """The writer measures ``load`` of a core ``periods`` times, each over ``spanning``
    periods' time: by default long enough that the test's own time (and a pause of its
    process) does not move the figure, and a fall in the load is given back at once."""
    span = spanning * LOAD_PERIOD_S
    for _ in range(periods):
        writer._load_mark = (time.perf_counter() - span, time.process_time() - load * span)
        writer._measure_load()


async def end_a_pass(writer: Writer, *, behind: bool) -> list[socket.socket]:
    """A pass that ends with a frame waiting (``behind``: a queue was pushed to while it
    ran, here by the owner of a connection the pass found lost) or with nothing waiting;
    the sockets to close once the frame has been written."""
    (ours, theirs), (other, other_peer) = socket.socketpair(), socket.socketpair()
    waiting = OutboundQueue(other, writer, max_frames=10, max_bytes=1000, owner=QueueOwner())

    class PushesOnLoss(QueueOwner):
        def connection_lost(self) -> None:
            waiting.push(b"W")

    if behind:
        theirs.close()
    OutboundQueue(ours, writer, max_frames=10, max_bytes=1000, owner=PushesOnLoss()).push(b"P")
    await writer._flush_dirty()
    return [ours, theirs, other, other_peer]


async def head_written_at_once(writer: Writer, *, behind: bool = True) -> bool:
    """Whether, after a pass that ended ``behind`` (or not), a broadcast to
    ``FLUSH_CHUNK + 1`` sockets has its head written as it is made; its pass then writes
    it to every socket."""
    others = await end_a_pass(writer, behind=behind)
    pairs = [socket.socketpair() for _ in range(FLUSH_CHUNK + 1)]
    queues = [OutboundQueue(ours, writer, max_frames=10, max_bytes=1000, owner=QueueOwner()) for ours, _ in pairs]
    writer.broadcast(b"A", queues)
    at_once = has_data(pairs[0][1])
    await writer._flush_dirty()
    assert [theirs.recv(16) for _, theirs in pairs] == [b"A"] * (FLUSH_CHUNK + 1)
    for s in [*others, *(s for pair in pairs for s in pair)]:
        s.close()
    return at_once


@pytest.mark.parametrize(("load", "behind", "at_once"), [
    (0.0, True, True), (0.7, True, True), (0.85, True, False), (1.0, True, False), (0.85, False, True), (1.0, False, True)])
async def test_a_writer_short_of_cpu_and_behind_leaves_a_broadcast_s_head_to_its_pass(nursery, load, behind, at_once):
    """Under ``LOAD_LOW`` of a core the head of a broadcast is written as the room hands it
    over. Above it, the whole broadcast waits for the writer's pass if the last pass ended
    with more waiting; if it ended with nothing, waiting would batch nothing, and the head
    is written at once at any load."""
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    writer._nursery = nursery
    measure_load(writer, load, periods=30)
    assert await head_written_at_once(writer, behind=behind) == at_once


async def test_a_busy_second_takes_the_writer_s_spare_cpu_at_once_and_light_ones_give_it_back_gradually(nursery):
    """A higher load is taken at once: one second at a full core leaves a broadcast to its
    pass. A lower one eases the load down by ``LOAD_EASING``: one light second does not
    give the spare CPU back, a few do."""
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    writer._nursery = nursery
    measure_load(writer, 0.1, periods=10)
    assert await head_written_at_once(writer)
    measure_load(writer, 1.0, periods=1)
    assert not await head_written_at_once(writer)
    measure_load(writer, 0.1, periods=1, spanning=1.0)
    assert not await head_written_at_once(writer)
    measure_load(writer, 0.1, periods=3, spanning=1.0)
    assert await head_written_at_once(writer)


async def test_a_quiet_stretch_measured_at_once_gives_the_spare_cpu_back_as_its_light_periods_would(nursery):
    """With no flush to measure it, a quiet stretch after a busy second (a connect storm,
    then nothing until the first event) is measured when the next flush comes, in one
    measure: it eases the load down as that many light periods would."""
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    writer._nursery = nursery
    measure_load(writer, 1.0, periods=1)
    assert not await head_written_at_once(writer)
    measure_load(writer, 0.1, periods=1, spanning=4.0)  # one light period would not do
    assert await head_written_at_once(writer)


@pytest.mark.parametrize(("made_during_the_pass", "delays"), [
    ("nothing", False), ("a push", True), ("one broadcast", False), ("two broadcasts", True)])
async def test_at_a_full_core_a_long_pass_delays_the_next_only_if_it_ended_with_more_than_one_event_waiting(
        nursery, autojump_clock, made_during_the_pass, delays):
    """At a full core the writer may flush ``FLUSH_SHARE`` of the time: after a pass that
    ended with more waiting than one broadcast, the next starts twice the last one's time
    after it, so that more joins it. After one that ended with nothing waiting, or one
    broadcast (a big room's next event), the next starts as soon as it has work: waiting
    would only make that event late."""
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    await nursery.start(writer.run)
    measure_load(writer, 1.0, periods=30)
    (lost, lost_peer), (ours, theirs), (member, member_peer) = (socket.socketpair() for _ in range(3))
    later = OutboundQueue(ours, writer, max_frames=10, max_bytes=1000, owner=QueueOwner())
    room = [OutboundQueue(member, writer, max_frames=10, max_bytes=1000, owner=QueueOwner())]
    began: list[float] = []

    class SlowOnLoss(QueueOwner):
        def connection_lost(self) -> None:  # a pass that takes 50 ms
            began.append(trio.current_time())
            time.sleep(0.05)
            if made_during_the_pass == "a push":
                later.push(b"W")
            for event in range({"one broadcast": 1, "two broadcasts": 2}.get(made_during_the_pass, 0)):
                writer.broadcast(b"B%d" % event, room)

    lost_peer.close()
    OutboundQueue(lost, writer, max_frames=10, max_bytes=1000, owner=SlowOnLoss()).push(b"P")
    while not began:
        await trio.sleep(0.001)
    window = writer._last_cost / FLUSH_SHARE  # twice the pass's time
    later.push(b"F")
    await later.wait_flushed()
    after = trio.current_time() - began[0]
    assert theirs.recv(16) == (b"WF" if made_during_the_pass == "a push" else b"F")
    assert (after >= window) if delays else (after < window)
    for s in (lost, ours, theirs, member, member_peer):
        s.close()


async def test_a_broadcast_made_during_a_broadcast_s_pass_joins_the_writes_not_made_yet(monkeypatch):
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    pairs = [socket.socketpair() for _ in range(FLUSH_CHUNK * 2)]
    queues = [OutboundQueue(ours, writer, max_frames=10, max_bytes=1000, owner=QueueOwner()) for ours, _ in pairs]
    writer.broadcast(b"A", queues)
    yielded = trio.lowlevel.checkpoint

    async def broadcast_b_at_the_yield() -> None:
        if len(writer.broadcasts) == 1:
            writer.broadcast(b"B", queues)
        await yielded()

    monkeypatch.setattr(trio.lowlevel, "checkpoint", broadcast_b_at_the_yield)
    await writer._flush_dirty()
    monkeypatch.undo()
    assert [theirs.recv(16) for _, theirs in pairs] == [b"A"] * FLUSH_CHUNK + [b"AB"] * FLUSH_CHUNK
    assert writer.writes == FLUSH_CHUNK * 2 and writer.frames_written == FLUSH_CHUNK * 3
    await writer._flush_dirty()
    assert [has_data(theirs) for _, theirs in pairs[FLUSH_CHUNK:]] == [False] * FLUSH_CHUNK
    assert [theirs.recv(16) for _, theirs in pairs[:FLUSH_CHUNK]] == [b"B"] * FLUSH_CHUNK
    assert not writer.broadcasts
    for pair in pairs:
        for s in pair:
            s.close()


async def test_a_pass_yields_per_chunk_of_writes_not_per_queue_it_passes_over(monkeypatch):
    """Queues that already had a broadcast cost its pass no yield: with many broadcasts
    pending (a burst), yielding per queue visited would let the backlog grow while the pass
    goes over queues it has nothing to write to."""
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    pairs = [socket.socketpair() for _ in range(FLUSH_CHUNK * 3)]
    queues = [OutboundQueue(ours, writer, max_frames=10, max_bytes=1000, owner=QueueOwner()) for ours, _ in pairs]
    writer.broadcast(b"A", queues)
    writer.broadcast(b"B", queues)
    for queue in queues[:FLUSH_CHUNK * 2]:
        queue.push(b"p")  # A and B are queued before it: these have had both
    yields = []
    yielded = trio.lowlevel.checkpoint

    async def counted() -> None:
        yields.append(len(writer.broadcasts))
        await yielded()

    monkeypatch.setattr(trio.lowlevel, "checkpoint", counted)
    await writer._flush_dirty()
    # One between the two chunks of pushed queues, one after A's (and B's) writes to the rest.
    assert yields == [2, 2]
    assert [theirs.recv(16) for _, theirs in pairs] == [b"ABp"] * (FLUSH_CHUNK * 2) + [b"AB"] * FLUSH_CHUNK
    for pair in pairs:
        for s in pair:
            s.close()
