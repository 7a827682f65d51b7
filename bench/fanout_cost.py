"""Where a delivery's CPU goes: room fan-out (encode once, push to N queues) versus socket
writes, with 1..64 frames per write, on real loopback TCP connections, in one process.

    .venv/bin/python bench/fanout_cost.py [--subscribers 1000] [--events 200]

Prints one JSON object per measurement and a summary. The reference in the same run is
one write per frame (batch 1), i.e. what a server without write batching pays.
"""

from __future__ import annotations

import argparse
import json
import socket
import time

import trio

from actors.room import Room
from actors.writer import OutboundQueue, Writer
from protocol.catalog import Catalog
from protocol.coalesce import HeldOffsets
from protocol.cursors import Offset
from protocol.envelope import Envelope, StoredEvent
from protocol.wires import WS_JSON
from rtserver.backends.metrics import Metrics


class _Owner:
    def slow_consumer(self) -> None:
        raise SystemExit("a benchmark queue overflowed")

    connection_lost = slow_consumer


def loopback_pairs(n: int) -> list[tuple[socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=n)
    pairs = []
    for _ in range(n):
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        for s in (client, server):
            s.setblocking(False)
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pairs.append((server, client))
    listener.close()
    return pairs


def drain(clients: list[socket.socket]) -> None:
    for c in clients:
        try:
            while c.recv(1 << 20):
                pass
        except BlockingIOError:
            pass


def event(i: int) -> StoredEvent:
    payload = {"t": time.monotonic_ns(), "s": i, "p": "x" * 150}
    env = Envelope(event="rt.probe", tenant="t1", rooms=["probe:bench"], data=payload)
    return StoredEvent(env, id=f"{i}", ts=1, offset=Offset(i, 0), cursor=f"1.e.{i}-0")


async def measure(subscribers: int, events: int) -> list[dict]:
    metrics = Metrics()
    writer = Writer(metrics, flush_max_bytes=1 << 20, interval_s=0.005)
    pairs = loopback_pairs(subscribers)
    queues = [OutboundQueue(s, writer, max_frames=1 << 20, max_bytes=1 << 30, owner=_Owner()) for s, _ in pairs]
    clients = [c for _, c in pairs]
    room = Room("t1/probe:bench", linger_s=60, metrics=metrics, fan_outs=writer.fan_outs,
                wake_at=lambda room, when: None, on_stop=lambda room: None,
                rules=Catalog.default().coalesce_rules(), window_s=0.25, held_offsets=HeldOffsets())
    for i, q in enumerate(queues):
        room.add(f"member-{i}", WS_JSON, q.push)
    results = []
    for batch in (1, 4, 16, 64):
        rounds = max(1, events // batch)
        fan_out_s = write_s = 0.0
        for r in range(rounds):
            start = time.perf_counter()
            for i in range(batch):
                room.take(event(r * batch + i))
            fan_out_s += time.perf_counter() - start
            start = time.perf_counter()
            writer._flush_dirty()
            write_s += time.perf_counter() - start
            drain(clients)
        deliveries = rounds * batch * subscribers
        results.append({
            "frames_per_write": batch, "subscribers": subscribers, "deliveries": deliveries,
            "fan_out_us_per_delivery": round(fan_out_s / deliveries * 1e6, 3),
            "write_us_per_delivery": round(write_s / deliveries * 1e6, 3),
            "total_us_per_delivery": round((fan_out_s + write_s) / deliveries * 1e6, 3),
        })
    for s, c in pairs:
        s.close()
        c.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=256)
    args = parser.parse_args()
    results = trio.run(measure, args.subscribers, args.events)
    for r in results:
        print(json.dumps(r))
    reference = results[0]["total_us_per_delivery"]
    for r in results:
        print(f"# {r['frames_per_write']:>2} frames/write: fan-out {r['fan_out_us_per_delivery']:.2f} µs"
              f" + write {r['write_us_per_delivery']:.2f} µs = {r['total_us_per_delivery']:.2f} µs per delivery"
              f" ({reference / r['total_us_per_delivery']:.1f}x the one-write-per-frame reference)")


if __name__ == "__main__":
    main()
