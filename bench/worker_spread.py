"""How evenly ``rtserver serve --workers W`` spreads connections over its workers, and how
fast it takes them: C WebSocket clients (one token each) connect to the shared port, each
waiting for its ``hello``; then each worker's ``rt_connections`` is read on its own
metrics port.

    .venv/bin/python bench/worker_spread.py --workers 2 --clients 10000
"""

from __future__ import annotations

import argparse
import statistics
import time

import stack  # noqa: F401 (puts the project on the path)
import trio

from rtserver.backends.auth import mint_token
from tests.support.metrics import scraped
from tests.support.net import free_ports_in_a_row, wait_port

#: Clients connecting at once.
CONCURRENCY = 500


async def connect(port: int, token: str, held: list[trio.SocketStream]) -> None:
    """A WebSocket upgrade with the token in the query; returns once ``hello`` arrived."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        f"GET /hub/ws?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .encode())
    received = b""
    while b'"hello"' not in received:
        data = await stream.receive_some(65536)
        if not data:
            raise ConnectionError("closed before hello")
        received += data
    held.append(stream)


async def main(workers: int, clients: int) -> None:
    metrics_port = free_ports_in_a_row(workers)
    async with stack.stack([True], toml=f"workers = {workers}\nworker_metrics_port = {metrics_port}") as running:
        for i in range(workers):
            await wait_port(metrics_port + i)
        tokens = [mint_token(stack.SECRET, {"sub": f"u{i}", "healthUnitTaxId": "t1", "roles": ["attendant"]})
                  for i in range(clients)]
        held: list[trio.SocketStream] = []
        limiter = trio.CapacityLimiter(CONCURRENCY)

        async def one(token: str) -> None:
            async with limiter:
                await connect(running.ports[0], token, held)

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for token in tokens:
                nursery.start_soon(one, token)
        elapsed = time.perf_counter() - started
        counts = [int(await scraped(f"http://127.0.0.1:{metrics_port + i}", "rt_connections", ns="hub",
                                    transport="websocket")) for i in range(workers)]
        print(f"{clients} clients (one user each) over {workers} workers: {counts} "
              f"(max/mean {max(counts) / statistics.mean(counts):.3f}); all subscribed in {elapsed:.1f} s "
              f"({clients / elapsed:.0f} handshakes/s)")
        for stream in held:
            await stream.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=10_000)
    args = parser.parse_args()
    if args.workers < 2:
        parser.error("--workers is at least 2 (one worker is a plain node, without per-worker metrics)")
    trio.run(main, args.workers, args.clients)
