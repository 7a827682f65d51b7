"""Where an idle connection's memory goes, by allocation site: rt.v1 WebSocket, Socket.IO, SSE.

Starts a node in this process (memory bus), opens N idle clients of one kind, and reports
the Python memory the server side holds per connection (tracemalloc: allocations whose
traceback passes through rtserver's own code), grouped by the line of rtserver, actors or
protocol nearest to the allocation. The clients (trio-websocket) live in this process too;
their own allocations pass through none of those files and are left out.

    .venv/bin/python bench/conn_memory.py --clients 1000 --kind ws|ws-deflate|socketio|sse [--users each]

``ws-deflate``: rt.v1 WebSocket clients that negotiated permessage-deflate (wsproto's
extension), on a node with ``server.permessage_deflate`` on.

``--users each``: every client is a user of its own (its own ``user:`` room, presence
entry and liveness), as consoles connect; by default all are the same user.
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import tracemalloc
from collections import Counter

import stack  # noqa: F401 (puts the project on the path)
import trio
import wsproto
from trio_websocket import connect_websocket_url
from wsproto.events import Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from rtserver.backends.logs import configure_logging
from rtserver.node import Node
from tests.support.nodes import Server, server_config

OURS = ("*/rtserver/*", "*/actors/*", "*/protocol/*")


def our_frame(traceback) -> str:
    """The innermost frame of rtserver's own code in an allocation's traceback."""
    for frame in reversed(traceback):  # innermost first (tracemalloc lists the oldest first)
        if any(fnmatch.fnmatch(frame.filename, pattern) for pattern in OURS):
            return f"{frame.filename.split('/main/')[-1]}:{frame.lineno}"
    return ""


async def open_clients(nursery, server: Server, kind: str, count: int, each_user: bool, first: int = 0) -> list:
    clients = []
    for i in range(first, first + count):
        token = server.token(f"u{i}") if each_user else server.token()
        if kind == "sse":
            ws = await trio.open_tcp_stream("127.0.0.1", server.port)
            await ws.send_all(f"GET /hub/sse?access_token={token} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode())
            received = b""
            while b"hello" not in received:
                received += await ws.receive_some(65536)
        elif kind == "ws-deflate":  # permessage-deflate negotiated, by wsproto's extension
            ws = await trio.open_tcp_stream("127.0.0.1", server.port)
            client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            await ws.send_all(client.send(Request(host="127.0.0.1", target=f"/hub/ws?access_token={token}",
                                                  extensions=[PerMessageDeflate()])))
            while not any(isinstance(event, TextMessage) for event in client.events()):  # hello
                client.receive_data(await ws.receive_some(65536))
        elif kind == "ws":
            ws = await connect_websocket_url(nursery, f"ws://127.0.0.1:{server.port}/hub/ws?access_token={token}")
            await ws.get_message()  # hello
        else:
            ws = await connect_websocket_url(nursery, f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket")
            await ws.get_message()  # open
            await ws.send_message('40/hub,{"token":"%s"}' % token)
            await ws.get_message()  # CONNECT
        clients.append(ws)
    return clients


async def main(kind: str, count: int, each_user: bool) -> None:
    async with trio.open_nursery() as nursery:
        node = Node(server_config(server={"allowed_origins": [], "permessage_deflate": kind == "ws-deflate"}))
        server = Server(node, await nursery.start(node.run))
        # Kept referenced: an SSE client is a plain stream, closed once collected.
        warm = await open_clients(nursery, server, kind, 20, each_user, first=count)  # rooms, caches
        await trio.sleep(0.5)
        gc.collect()
        tracemalloc.start(40)
        before = tracemalloc.take_snapshot()
        clients = await open_clients(nursery, server, kind, count, each_user)
        await trio.sleep(1.0)
        gc.collect()
        after = tracemalloc.take_snapshot()
        sites: Counter[str] = Counter()
        for stat in after.compare_to(before, "traceback"):
            site = our_frame(stat.traceback)
            if site and stat.size_diff > 0:
                sites[site] += stat.size_diff
        total = sum(sites.values())
        print(f"{kind}: {total / count / 1024:.2f} KB of Python memory per connection on the server side"
              f" ({len(server.node.connections)} open of {len(warm) + len(clients)})")
        for site, size in sites.most_common(30):
            print(f"  {size / count:8.0f} B  {site}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--kind", choices=["ws", "ws-deflate", "socketio", "sse"], default="ws")
    parser.add_argument("--users", choices=["one", "each"], default="one")
    args = parser.parse_args()
    configure_logging("warning")
    trio.run(main, args.kind, args.clients, args.users == "each")
