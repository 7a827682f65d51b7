"""What one frame to each of many fresh TCP connections costs the sender, pass after pass.

Opens ``--connections`` loopback TCP connections, forks a reader process (on the second
CPU) that reads them all through epoll, and every ``--period-ms`` sends one ``--size``-byte
frame to each connection, in one loop in C (``map`` over ``socket.send``, as the writer's
pass does for a broadcast). Prints each pass's wall time, then the median of the passes
while the connections are fresh (the first 16) against the later ones, and the passes
that took over 1.4 times the later median, with the bytes each connection had received
before them.

No server is involved: what it shows is the kernel's, for any server on this machine
(bench/RESULTS.md §32).

    .venv/bin/python bench/fresh_connections.py [--connections 5000] [--size 200] [--passes 40] [--period-ms 67]
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import time
from itertools import repeat

#: Passes counted as "fresh": a receiver acknowledges the first segments of a connection
#: at once, up to 16 of them (Linux's TCP_MAX_QUICKACKS).
FRESH = 16


def read_all(readers: list[socket.socket], seconds: float) -> None:
    """The reader process: read whatever arrives on ``readers`` for ``seconds``."""
    epoll = select.epoll()
    by_fd = {sock.fileno(): sock for sock in readers}
    for fd in by_fd:
        epoll.register(fd, select.EPOLLIN)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for fd, _ in epoll.poll(0.1):
            try:
                by_fd[fd].recv(1 << 16)
            except BlockingIOError:
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5_000)
    parser.add_argument("--size", type=int, default=200, help="bytes per frame")
    parser.add_argument("--passes", type=int, default=40)
    parser.add_argument("--period-ms", type=float, default=67.0, help="time from one pass's start to the next's")
    args = parser.parse_args()
    listener = socket.create_server(("127.0.0.1", 0), backlog=args.connections)
    pairs = []
    for _ in range(args.connections):
        client = socket.create_connection(listener.getsockname())
        pairs.append((listener.accept()[0], client))
    for server_side, client in pairs:
        server_side.setblocking(False)
        client.setblocking(False)
        server_side.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    period = args.period_ms / 1000
    reader = os.fork()
    if reader == 0:
        os.sched_setaffinity(0, {1 % os.cpu_count()})
        read_all([client for _, client in pairs], args.passes * period + 3)
        os._exit(0)
    os.sched_setaffinity(0, {0})
    senders = [server_side for server_side, _ in pairs]
    frame = b"x" * args.size
    time.sleep(0.5)
    passes = []
    for _ in range(args.passes):
        began = time.perf_counter()
        sent: list[int] = []
        sent.extend(map(socket.socket.send, senders, repeat(frame)))
        took = time.perf_counter() - began
        passes.append(took * 1000)
        time.sleep(max(0.0, period - took))
    os.waitpid(reader, 0)
    print("pass ms:", " ".join(f"{ms:.1f}" for ms in passes))
    fresh, later = statistics.median(passes[:FRESH]), statistics.median(passes[FRESH:])
    print(f"median, first {FRESH} passes: {fresh:.1f} ms; later: {later:.1f} ms ({fresh / later:.2f}x)")
    for i, ms in enumerate(passes[FRESH:], FRESH):
        if ms > 1.4 * later:
            print(f"pass {i}: {ms:.1f} ms, after {i * args.size:,} bytes to each connection")


if __name__ == "__main__":
    main()
