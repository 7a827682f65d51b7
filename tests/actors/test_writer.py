"""The writer actor's pass over many sockets (actors/writer.py)."""

import socket

import trio

from actors.registry import Registry
from actors.writer import FLUSH_CHUNK, OutboundQueue, Writer
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
