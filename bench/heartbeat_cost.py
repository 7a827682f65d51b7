"""What idle clients cost a node's CPU: their heartbeats (an rt.v1 ``ping`` answered
``pong``), and the quiet between them.

Starts one ``rtserver serve`` node (memory bus) and opens ``--clients`` WebSocket clients,
each a user of its own, as plain sockets with wsproto in this process. Then:

* quiet: node CPU while every client is connected and silent, for ``--quiet-s`` seconds;
* heartbeats: ``--rounds`` rounds in which every client sends a ``ping`` and reads its
  ``pong``, all clients at once: node CPU per ping (read, parse, answer, write; with the
  parking, ``actors/parking.py``, also the wake-up and the return to the parking).

``--tree DIR`` serves from another checkout (an A/B against an older commit).

    .venv/bin/python bench/heartbeat_cost.py [--clients 2000] [--rounds 10] [--tree DIR]
"""

from __future__ import annotations

import argparse
import json

import trio
import wsproto
from stack import SECRET, cpu_seconds, stack
from wsproto.events import AcceptConnection, Request, TextMessage

from rtserver.backends.auth import mint_token

PING = json.dumps({"op": "ping"})


class Client:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)

    async def next_text(self) -> str:
        while True:
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    return event.data
                if not isinstance(event, AcceptConnection):
                    raise RuntimeError(f"unexpected {event!r}")
            data = await self.stream.receive_some(65536)
            if not data:
                raise RuntimeError("closed by the node")
            self.ws.receive_data(data)

    async def ping(self) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=PING)))
        assert '"pong"' in await self.next_text()


async def connect(port: int, user: str) -> Client:
    token = mint_token(SECRET, {"sub": user, "healthUnitTaxId": "t1", "roles": ["attendant"]}, ttl_s=3600)
    client = Client(await trio.open_tcp_stream("127.0.0.1", port))
    await client.stream.send_all(client.ws.send(Request(host="127.0.0.1", target=f"/hub/ws?access_token={token}")))
    assert '"hello"' in await client.next_text()
    return client


async def main(args) -> None:
    async with stack([False], root=args.tree) as processes:
        port, pid = processes.ports[0], processes.pids[0]
        clients = [await connect(port, f"u{n}") for n in range(args.clients)]
        await trio.sleep(1.0)
        before = cpu_seconds(pid)
        await trio.sleep(args.quiet_s)
        quiet_ms_per_s = (cpu_seconds(pid) - before) / args.quiet_s * 1000
        before = cpu_seconds(pid)
        for _ in range(args.rounds):
            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(client.ping)
        per_ping_us = (cpu_seconds(pid) - before) / (args.rounds * args.clients) * 1e6
        print(json.dumps({"clients": args.clients, "rounds": args.rounds, "tree": args.tree or "this checkout",
                          "quiet_node_cpu_ms_per_s": round(quiet_ms_per_s, 2),
                          "node_cpu_us_per_ping": round(per_ping_us, 1)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quiet-s", type=float, default=5.0)
    parser.add_argument("--tree", default=None, help="serve from this checkout instead of this one")
    trio.run(main, parser.parse_args())
