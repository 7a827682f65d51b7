"""What the Redis hop adds to a delivery, isolated from the load generator.

Starts a redis-server and three ``rtserver serve`` processes: M on the memory bus, A and B
sharing Redis. ``--subscribers`` WebSocket clients on M and as many on B subscribe to
``probe:1``; then, at ``--rate`` events/s, each tick publishes one event to M and one to A
(interleaved, so both see the same machine noise). The latency of an event is the time
from its publish request to its arrival at the first subscriber (publisher and
subscribers share one clock, this process); the hop is the cross-node figure minus the
single-node one at the same percentile.

    .venv/bin/python bench/hop_latency.py --rate 50 --seconds 20 --subscribers 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx
import trio
from stack import SECRET, stack

from rtserver.backends.auth import mint_token
from rtserver.client import open_client


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def subscribe_all(url: str, token: str, count: int, arrivals: dict[str, float], nursery) -> None:
    """``count`` clients on ``url`` in ``probe:1``; the first arrival of each id is kept."""

    async def client(task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with open_client(url, token) as ws:
            await ws.subscribe("probe:1")
            task_status.started()
            while True:
                evt = await ws.next_event()
                arrivals.setdefault(evt["data"]["p"], time.perf_counter())

    for _ in range(count):
        await nursery.start(client)


async def main(args) -> None:
    sent: dict[str, float] = {}
    arrivals: dict[str, float] = {}
    async with stack([False, True, True]) as processes:
        m_port, a_port, b_port = processes.ports
        token = mint_token(SECRET, {"sub": "bench", "healthUnitTaxId": "t1", "roles": ["attendant"]})
        service = mint_token(SECRET, {"sub": "svc", "roles": ["service"]})
        async with trio.open_nursery() as nursery:
            await subscribe_all(f"ws://127.0.0.1:{m_port}/hub/ws", token, args.subscribers, arrivals, nursery)
            await subscribe_all(f"ws://127.0.0.1:{b_port}/hub/ws", token, args.subscribers, arrivals, nursery)
            headers = {"authorization": f"Bearer {service}"}
            async with httpx.AsyncClient(headers=headers) as single, httpx.AsyncClient(headers=headers) as cross:

                async def publish(client: httpx.AsyncClient, port: int, key: str) -> None:
                    sent[key] = time.perf_counter()
                    body = {"event": "rt.probe", "tenant": "t1", "rooms": ["probe:1"], "data": {"p": key}}
                    response = await client.post(f"http://127.0.0.1:{port}/v1/publish", json=body)
                    response.raise_for_status()

                interval, start = 1 / args.rate, trio.current_time()
                for i in range(int(args.rate * args.seconds)):
                    await trio.sleep_until(start + i * interval)
                    async with trio.open_nursery() as ticks:  # both publishes of a tick at once
                        ticks.start_soon(publish, single, m_port, f"m{i}")
                        ticks.start_soon(publish, cross, a_port, f"x{i}")
                await trio.sleep(1)
            nursery.cancel_scope.cancel()
    skip = int(args.rate)  # the first second warms up
    report = {}
    for prefix, label in (("m", "single node (memory bus)"), ("x", "across nodes (A -> Redis -> B)")):
        keys = [k for k in sent if k[0] == prefix][skip:]
        lost = sum(k not in arrivals for k in keys)
        ms = [(arrivals[k] - sent[k]) * 1000 for k in keys if k in arrivals]
        report[prefix] = {q: percentile(ms, q) for q in (0.5, 0.95, 0.99)}
        print(f"{label:32} n={len(ms)} lost={lost} p50 {report[prefix][0.5]:.2f} ms  "
              f"p95 {report[prefix][0.95]:.2f} ms  p99 {report[prefix][0.99]:.2f} ms  "
              f"mean {statistics.mean(ms):.2f} ms")
    print("hop adds: " + "  ".join(f"p{int(q * 100)} {report['x'][q] - report['m'][q]:+.2f} ms"
                                   for q in (0.5, 0.95, 0.99)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="events/s to each of the two paths")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--subscribers", type=int, default=1, help="clients per receiving node")
    trio.run(main, parser.parse_args())
