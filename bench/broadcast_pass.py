"""What the writer's pass costs per recipient of a broadcast, the kernel's ``send`` included.

Builds a writer (``actors/writer.py``) and ``--sockets`` outbound queues on local socket
pairs (Unix sockets: the same Python as TCP, a cheaper ``send``), makes one broadcast of a
``--size``-byte frame to all of them and times the pass that writes it
(``Writer._write_broadcast``), its yields every ``FLUSH_CHUNK`` writes included; the
readers are drained between passes, outside the timing. The figure is the median pass's
wall time per socket.

``--tree DIR`` runs the writer of another checkout (an A/B against an older commit).

    .venv/bin/python bench/broadcast_pass.py [--sockets 6000] [--size 2200] [--passes 40] [--tree DIR]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time

from checkouts import add_tree_option, import_from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=6_000, help="socket pairs (two files each)")
    parser.add_argument("--size", type=int, default=2_200, help="bytes per frame")
    parser.add_argument("--passes", type=int, default=40)
    add_tree_option(parser)
    args = parser.parse_args()
    import_from(args.tree)

    import trio

    from actors.writer import Broadcast, OutboundQueue, Writer
    from rtserver.backends.metrics import Metrics

    class Owner:
        def slow_consumer(self) -> None:
            raise SystemExit("a queue overflowed: raise the socket buffers or lower --size")

        def connection_lost(self) -> None:
            raise SystemExit("a socket broke")

    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    pairs = [socket.socketpair() for _ in range(args.sockets)]
    for ours, theirs in pairs:
        ours.setblocking(False)
        theirs.setblocking(False)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    queues = [OutboundQueue(ours, writer, max_frames=10, max_bytes=1 << 20, owner=Owner()) for ours, _ in pairs]
    frame = b"x" * args.size

    def drain() -> None:
        for _, theirs in pairs:
            try:
                while theirs.recv(1 << 16):
                    pass
            except BlockingIOError:
                pass

    async def passes() -> list[float]:
        times = []
        for _ in range(args.passes):
            writer.last_broadcast += 1
            broadcast = Broadcast(writer.last_broadcast, frame)
            broadcast.queues = dict.fromkeys(queues)
            writer.broadcasts.append(broadcast)
            began = time.perf_counter()
            await writer._write_broadcast(broadcast)
            times.append(time.perf_counter() - began)
            drain()
        return times

    per_socket = statistics.median(trio.run(passes)) / args.sockets
    print(f"{args.tree}: {per_socket * 1e9:.0f} ns per socket (median of {args.passes} passes, "
          f"{args.sockets} sockets, {args.size} B)")


if __name__ == "__main__":
    main()
