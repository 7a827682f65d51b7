"""Where a delivery's CPU goes: room fan-out (encode once; past 256 members, one broadcast
handed to the writer rather than a push to each queue) versus socket writes, with 1..64
frames per write, on real loopback TCP connections, in one process.

    .venv/bin/python bench/fanout_cost.py [--subscribers 1000] [--events 200] [--padding 150] [--tls] [--deflate]

Prints one JSON object per measurement and a summary. The reference in the same run is
one write per frame (batch 1), i.e. what a server without write batching pays.
``--tls``: the server side of each connection is a ``TlsSocket`` (rtserver/backends/tls.py,
TLS 1.3 with a test CA), so a write encrypts; the memory the process holds per connection
once connected is printed too (resident, after the clients' TLS state is freed).
``--deflate``: every member negotiated permessage-deflate: each event is compressed once,
the bytes each client receives (``wire_bytes_per_delivery``) say what it saves. The
padding is appointment lines, not one repeated character, so that it compresses as real
events do.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import socket
import time

import trio

from actors.room import Room
from actors.writer import OutboundQueue, Writer
from protocol.catalog import Catalog
from protocol.coalesce import HeldOffsets
from protocol.cursors import Offset
from protocol.envelope import Envelope, StoredEvent
from protocol.wires import WS_DEFLATE, WS_JSON
from rtserver.backends.metrics import Metrics
from rtserver.backends.tls import TlsSocket


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


def drain(clients: list[socket.socket], into=None) -> int:
    """Read what the clients were sent (into a client's TLS buffer, during a handshake):
    how many bytes."""
    received = 0
    for c in clients:
        try:
            while data := c.recv(1 << 20):
                received += len(data)
                if into is not None:
                    into.write(data)
        except BlockingIOError:
            pass
    return received


async def tls_handshakes(pairs: list[tuple[socket.socket, socket.socket]]) -> list[TlsSocket]:
    """The server side of each pair as a ``TlsSocket``, its handshake with a client
    ``ssl.SSLObject`` (dropped afterwards: the benchmark's clients only drain bytes) done."""
    import ssl

    import trustme

    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_context)
    servers = []
    for server, client in pairs:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        ours = TlsSocket(server, server_context)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ours.handshake)
            while not tls.version() or outgoing.pending:
                try:
                    tls.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                client.sendall(outgoing.read())
                await trio.sleep(0)
                drain([client], into=incoming)
        servers.append(ours)
    return servers


def resident_bytes() -> int:
    """The process's resident memory, once the allocator gave back what it could."""
    import ctypes

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


#: What the padding is made of: appointment lines as a clinic's events carry them (names,
#: ids, times; it compresses about as JSON of real events does, ~3x with DEFLATE).
_NAMES = ("Ana Souza", "Bea Lima", "Caio Rocha", "Duda Alves", "Enzo Costa", "Fabi Nunes", "Gil Prado")


def padding_text(size: int, seed: int) -> str:
    """``size`` characters of appointment lines, different for every ``seed``."""
    rng = random.Random(seed)
    lines = []
    while sum(map(len, lines)) < size:
        lines.append(f"appointment {rng.getrandbits(48):012x} patient {rng.choice(_NAMES)} with "
                     f"{rng.choice(_NAMES)} on 2026-12-{rng.randint(1, 28):02d} at {rng.randint(7, 18):02d}:"
                     f"{rng.choice(('00', '15', '30', '45'))} {rng.choice(('booked', 'confirmed', 'cancelled'))}; ")
    return "".join(lines)[:size]


def event(i: int, padding: int) -> StoredEvent:
    payload = {"t": time.monotonic_ns(), "s": i, "p": padding_text(padding, i)}
    env = Envelope(event="rt.probe", tenant="t1", rooms=["probe:bench"], data=payload)
    return StoredEvent(env, id=f"{i}", ts=1, offset=Offset(i, 0), cursor=f"1.e.{i}-0")


async def measure(subscribers: int, events: int, padding: int, tls: bool, deflate: bool) -> list[dict]:
    metrics = Metrics()
    writer = Writer(metrics, flush_max_bytes=1 << 20, interval_s=0.005)
    before = resident_bytes()
    pairs = loopback_pairs(subscribers)
    servers = await tls_handshakes(pairs) if tls else [s for s, _ in pairs]
    per_connection = (resident_bytes() - before) / subscribers
    queues = [OutboundQueue(s, writer, max_frames=1 << 20, max_bytes=1 << 30, owner=_Owner()) for s in servers]
    clients = [c for _, c in pairs]
    room = Room("t1/probe:bench", linger_s=60, metrics=metrics, fan_outs=writer.fan_outs,
                wake_at=lambda room, when: None, on_stop=lambda room: None,
                rules=Catalog.default().coalesce_rules(), window_s=0.25, held_offsets=HeldOffsets())
    for i, q in enumerate(queues):
        room.add(f"member-{i}", WS_DEFLATE[WS_JSON] if deflate else WS_JSON, q)
    results = []
    for batch in (1, 4, 16, 64):
        rounds = max(1, events // batch)
        fan_out_s = write_s = 0.0
        wire_bytes = 0
        for r in range(rounds):
            start = time.perf_counter()
            for i in range(batch):
                room.take(event(r * batch + i, padding))
            fan_out_s += time.perf_counter() - start
            start = time.perf_counter()
            await writer._flush_dirty()
            write_s += time.perf_counter() - start
            wire_bytes += drain(clients)
        deliveries = rounds * batch * subscribers
        results.append({
            "frames_per_write": batch, "subscribers": subscribers, "deliveries": deliveries,
            "fan_out_us_per_delivery": round(fan_out_s / deliveries * 1e6, 3),
            "write_us_per_delivery": round(write_s / deliveries * 1e6, 3),
            "total_us_per_delivery": round((fan_out_s + write_s) / deliveries * 1e6, 3),
            "wire_bytes_per_delivery": round(wire_bytes / deliveries, 1), "tls": tls, "deflate": deflate,
            "padding": padding, "resident_kb_per_connection": round(per_connection / 1024, 1),
        })
    for s, c in pairs:
        s.close()
        c.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=256)
    parser.add_argument("--padding", type=int, default=150, help="bytes of padding in each event")
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--deflate", action="store_true", help="members negotiated permessage-deflate")
    args = parser.parse_args()
    results = trio.run(measure, args.subscribers, args.events, args.padding, args.tls, args.deflate)
    for r in results:
        print(json.dumps(r))
    reference = results[0]["total_us_per_delivery"]
    for r in results:
        print(f"# {r['frames_per_write']:>2} frames/write: fan-out {r['fan_out_us_per_delivery']:.2f} µs"
              f" + write {r['write_us_per_delivery']:.2f} µs = {r['total_us_per_delivery']:.2f} µs per delivery"
              f" ({reference / r['total_us_per_delivery']:.1f}x the one-write-per-frame reference),"
              f" {r['wire_bytes_per_delivery']:.0f} B on the wire")


if __name__ == "__main__":
    main()
