"""What one Redis shard and each node pay per event when nodes share the bus.

Starts a redis-server and ``--nodes`` ``rtserver serve`` nodes on it, with no client: every
node reads every shard (one blocking ``XREAD``), so each event costs every node its read and
parse even where no member of its rooms is connected. Two measures:

1. **CPU per event at a fixed rate**: ``--rate`` events/s appended to one shard for
   ``--seconds`` (batches every 10 ms, redis-py); the CPU the redis-server and each node
   used over that time, net of what each uses idle (measured first), per event.
2. **A shard's append ceiling**: ``redis-benchmark`` sending ``XADD`` of a real entry (an
   ``rt.probe`` event, 200-byte payload, ``MAXLEN ~ 100000``) to one shard's stream,
   pipelined, while the nodes read it.

``--read-shards 1,2``: the nodes read only those shards (shard affinity, ``bus.read_shards``)
while the events go to shard 0: what a node pays for a shard it does not read.

    .venv/bin/python bench/bus_cost.py --nodes 3 --rate 5000 --seconds 10 [--read-shards 1]
"""

from __future__ import annotations

import argparse
import subprocess
import time

import redis
import trio
from stack import cpu_seconds, stack

from protocol.envelope import Envelope
from rtserver.backends.bus.redis import _fields, stream_key

ENVELOPE = Envelope(event="rt.probe", tenant="t1", rooms=["probe:1"], data={"p": "x" * 200})
RETENTION = 100_000
#: Seconds the idle CPU of every process is measured before the appends.
IDLE_S = 5.0


def xadd(shard_key: str) -> list[str]:
    return ["XADD", shard_key, "MAXLEN", "~", str(RETENTION), "*",
            *(f.decode() if isinstance(f, bytes) else f for f in _fields(ENVELOPE))]


def append_ceiling(port: int, shard_key: str, requests: int) -> float:
    """XADDs per second redis-benchmark reaches on one stream (16 in flight per client)."""
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-n", str(requests), "-P", "16", "-c", "4",
                          "--csv", *xadd(shard_key)], capture_output=True, text=True, check=True).stdout
    row = out.strip().splitlines()[-1].split(",")
    return float(row[1].strip('"'))


def append_at_rate(url: str, shard_key: str, rate: int, seconds: float) -> int:
    client = redis.Redis.from_url(url)
    command = xadd(shard_key)
    per_tick = max(1, rate // 100)
    sent = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        pipe = client.pipeline(transaction=False)
        for _ in range(min(per_tick, int(elapsed * rate) + per_tick - sent)):
            pipe.execute_command(*command)
        sent += len(pipe.command_stack)
        pipe.execute()
        time.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    client.close()
    return sent


async def main(args) -> None:
    toml = f"[bus]\nread_shards = [{args.read_shards}]\n" if args.read_shards else ""
    async with stack([True] * args.nodes, toml) as s:
        await trio.sleep(2)  # the nodes' feeds are reading
        port = int(s.redis_url.rsplit(":", 1)[1].split("/")[0])
        shard_key = stream_key(0)
        pids = [s.redis_pid, *s.pids]
        idle = await cpu_used(pids, trio.sleep, IDLE_S)
        started = time.perf_counter()
        sent = 0

        async def append() -> None:
            nonlocal sent
            sent = await trio.to_thread.run_sync(append_at_rate, s.redis_url, shard_key, args.rate, args.seconds)
            await trio.sleep(1)  # the nodes read the last batches

        used = await cpu_used(pids, append)
        # Net of what each process uses idle (heartbeats, blocking reads timing out).
        net = [u - i * (time.perf_counter() - started) / IDLE_S for u, i in zip(used, idle, strict=True)]
        reads = f"the nodes read shards {args.read_shards}" if args.read_shards else "the nodes read every shard"
        print(f"{sent:,} events to shard 0 at {args.rate:,}/s over {args.seconds:g} s ({reads}); CPU per event,"
              " net of idle:")
        print(f"  redis-server: {net[0] / sent * 1e6:6.2f} µs (idle: {idle[0] / IDLE_S:.1%} of a core)")
        for i, node in enumerate(net[1:]):
            print(f"  node {i + 1}:       {node / sent * 1e6:6.2f} µs, no member here "
                  f"(idle: {idle[i + 1] / IDLE_S:.1%} of a core)")
        ceiling = append_ceiling(port, shard_key, args.requests)
        print(f"append ceiling, one shard, {args.nodes} node(s) reading: {ceiling:,.0f} XADD/s")


async def cpu_used(pids: list[int], step, *args) -> list[float]:
    """The CPU seconds each of ``pids`` used while ``await step(*args)`` ran."""
    before = [cpu_seconds(pid) for pid in pids]
    await step(*args)
    return [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--read-shards", default="", help="comma-separated shards the nodes read (default: all)")
    trio.run(main, parser.parse_args())
