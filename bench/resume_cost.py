"""Resume cost: what a client that missed a few events costs the node when it comes back,
one at a time and 1,000 at once (as when a node dies and its clients land on another).

Starts a redis-server and one ``rtserver serve`` node on it. The shard's stream holds
``--backlog`` older entries (a busy stream), then a client takes its cursor, and
``--missed`` events are appended to ``probe:1`` by plain ``XADD`` — with a producer
``id`` each (``--ids``) or without. Then:

* sequential: ``--sequential`` clients, one after another, each a user of its own, open
  ``/hub/ws?rooms=probe:1&since=<cursor>``, read ``hello`` and the missed events, and stay
  connected: node CPU per resume (handshake, token, join, history read and replay; the
  node's idle background during that time included, and reported); then they close, one
  after another: node CPU per close (close handshake, leaving the rooms, presence);
* a few at a time: ``--streams`` clients each resume and close, one after another, until
  ``--sequential`` resumes are done (a node where resumes arrive amid other work): node
  CPU per resume and close;
* at once: ``--clients`` clients resume concurrently and close: seconds until every one
  of them has all the missed events.

The clients are plain sockets with wsproto (no client library), in this process.

    .venv/bin/python bench/resume_cost.py            # with and without producer ids
"""

from __future__ import annotations

import argparse
import json
import random
import time

import redis
import trio
import wsproto
from stack import SECRET, cpu_seconds, stack
from wsproto.events import CloseConnection, Request, TextMessage

from protocol.cursors import shard_of
from rtserver.backends.auth import mint_token
from rtserver.backends.bus.redis import stream_key


class TryAgainLater(Exception):
    """The node closed with 1013 (Redis did not answer in time): retry with backoff."""


async def resume_retrying(port: int, token: str, since: str, missed: int, retries: list[int]) -> None:
    """``resume`` as a client does it: after a 1013, again in 0.1 to 0.5 s."""
    while True:
        try:
            return await resume(port, token, since, missed)
        except TryAgainLater:
            retries.append(1)
            await trio.sleep(random.uniform(0.1, 0.5))


async def resume(port: int, token: str, since: str, missed: int, *, keep: list | None = None) -> None:
    """One client: connect with ``since``, read hello and ``missed`` events, then close (or,
    with ``keep``, leave the connection open and append a function that closes it)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(client.send(Request(host="127.0.0.1", target=f"/hub/ws?rooms=probe:1&since={since}",
                                              extra_headers=[("authorization", f"Bearer {token}")])))
    events = 0
    while events < missed:
        data = await stream.receive_some(65536)
        if not data:
            raise RuntimeError("closed before the missed events arrived")
        client.receive_data(data)
        for event in client.events():
            if isinstance(event, TextMessage) and '"op":"evt"' in event.data:
                events += 1
            elif isinstance(event, CloseConnection):
                await stream.aclose()
                if event.code == 1013:
                    raise TryAgainLater
                raise RuntimeError(f"closed with {event.code}")

    async def close() -> None:
        async with stream:
            await stream.send_all(client.send(CloseConnection(code=1000)))
            while not any(isinstance(e, CloseConnection) for e in client.events()):
                data = await stream.receive_some(65536)
                if not data:
                    return
                client.receive_data(data)

    if keep is None:
        await close()
    else:
        keep.append(close)


def append(raw: redis.Redis, count: int, room: str, ids: bool, prefix: str) -> None:
    pipe = raw.pipeline(transaction=False)
    for i in range(count):
        fields = {"event": "rt.probe", "tenant": "t1", "rooms": json.dumps([room]),
                  "data": json.dumps({"t": time.time_ns(), "s": i, "p": "x" * 150})}
        if ids:
            fields["id"] = f"{prefix}-{i}"
        pipe.xadd(stream_key(shard_of("t1", 16)), fields)
    pipe.execute()


async def run(args, ids: bool) -> dict:
    async with stack([True]) as processes:
        port, pid = processes.ports[0], processes.pids[0]
        raw = redis.Redis.from_url(processes.redis_url)
        append(raw, args.backlog, "probe:0", ids, "old")
        await trio.sleep(0.5)
        tokens = [mint_token(SECRET, {"sub": f"u{n}", "healthUnitTaxId": "t1", "roles": ["attendant"]}, ttl_s=3600)
                  for n in range(max(args.sequential, args.clients))]
        stream = await trio.open_tcp_stream("127.0.0.1", port)  # the cursor before the missed events
        client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send_all(client.send(Request(host="127.0.0.1", target="/hub/ws?rooms=probe:1",
                                                  extra_headers=[("authorization", f"Bearer {tokens[0]}")])))
        cursor = None
        while cursor is None:
            client.receive_data(await stream.receive_some(65536))
            for event in client.events():
                if isinstance(event, TextMessage):
                    cursor = json.loads(event.data)["cursor"]
        await stream.aclose()
        append(raw, args.missed, "probe:1", ids, "new")
        await trio.sleep(0.5)
        for n in range(20):  # warm-up
            await resume(port, tokens[n], cursor, args.missed)
        # The node's own background (stream readers, health probe, lag gauge) while idle.
        before = cpu_seconds(pid)
        await trio.sleep(2.0)
        idle_ms_per_s = (cpu_seconds(pid) - before) / 2.0 * 1000
        # Sequential: each client resumes, reads its events and stays; then all close.
        kept: list = []
        before, started = cpu_seconds(pid), time.perf_counter()
        for n in range(args.sequential):
            await resume(port, tokens[n], cursor, args.missed, keep=kept)
        per_resume_ms = (cpu_seconds(pid) - before) / args.sequential * 1000
        per_resume_wall_ms = (time.perf_counter() - started) / args.sequential * 1000
        before = cpu_seconds(pid)
        for close in kept:
            await close()
        per_close_ms = (cpu_seconds(pid) - before) / args.sequential * 1000
        await trio.sleep(1.0)
        # A few at a time: ``--streams`` clients, each resuming (and closing) one after another.
        before, retries = cpu_seconds(pid), []

        async def stream_of_resumes(first: int) -> None:
            for n in range(first, args.sequential, args.streams):
                await resume_retrying(port, tokens[n], cursor, args.missed, retries)

        async with trio.open_nursery() as nursery:
            for first in range(args.streams):
                nursery.start_soon(stream_of_resumes, first)
        per_resume_few_ms = (cpu_seconds(pid) - before) / args.sequential * 1000
        await trio.sleep(1.0)
        before, started, retries = cpu_seconds(pid), time.perf_counter(), []
        async with trio.open_nursery() as nursery:
            for n in range(args.clients):
                nursery.start_soon(resume_retrying, port, tokens[n], cursor, args.missed, retries)
        all_at_once_s = time.perf_counter() - started
        return {"ids": ids, "node_cpu_ms_per_resume": round(per_resume_ms, 2),
                "of_which_idle_background_ms": round(idle_ms_per_s * per_resume_wall_ms / 1000, 2),
                "node_cpu_ms_per_close": round(per_close_ms, 2),
                f"node_cpu_ms_per_resume_and_close_{args.streams}_at_a_time": round(per_resume_few_ms, 2),
                "clients": args.clients,
                "all_served_s": round(all_at_once_s, 2), "retried_after_1013": len(retries),
                "node_cpu_ms_per_resume_at_once": round((cpu_seconds(pid) - before) / args.clients * 1000, 2)}


async def main(args) -> None:
    for ids in (True, False):
        print(json.dumps(await run(args, ids)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--missed", type=int, default=10)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=10)
    trio.run(main, parser.parse_args())
