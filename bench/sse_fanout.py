"""SSE fan-out beside WebSocket: the server's CPU per delivery on each, in one run.

Starts one ``rtserver serve`` node (memory bus). Each phase, a load client in a process
of its own (this file with ``--client``; plain non-blocking sockets and ``selectors``,
no HTTP or WebSocket library) opens ``--subscribers`` connections to one room, all
WebSocket (``/hub/ws?rooms=``) or all SSE (``/hub/sse?rooms=``); one warm-up event
proves every connection is in the room, then ``--events`` ``rt.probe`` events are
published (8 publishers over HTTP, as fast as acknowledged) and the phase ends when
the client has counted every delivery. Measured per phase, from ``/proc`` of the server
process: CPU seconds from the first publish to the last delivery, divided by the
deliveries. Phases alternate (ws, sse, sse, ws, ...) for ``--rounds`` rounds so drift on
a shared machine falls on both alike; the summary is the median per transport and the
SSE/WebSocket ratio.

    .venv/bin/python bench/sse_fanout.py [--subscribers 1000] [--events 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import time
from urllib.parse import quote

ROOM = "probe:sse-bench"
MARKER = b'"rt.probe"'  # once per delivered event, on either wire
HELLO = b'"op":"hello"'  # a connection's first frame, sent once it is in its rooms
PUBLISHERS = 8


def run_client(args) -> None:
    """The load client: connects (``connected`` once every connection had its hello),
    then answers ``expect K`` lines on stdin with ``reached`` once it has counted K
    deliveries in all (over every connection)."""
    path = "ws" if args.client == "ws" else "sse"
    target = f"/hub/{path}?access_token={quote(args.token)}&rooms={quote(ROOM)}"
    upgrade = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n") if path == "ws" else "Accept: text/event-stream\r\n"
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{upgrade}\r\n".encode()
    selector = selectors.DefaultSelector()
    tails: dict[socket.socket, bytes] = {}
    for _ in range(args.subscribers):
        sock = socket.create_connection(("127.0.0.1", args.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.sendall(request)
        head = b""
        while HELLO not in head:
            head += sock.recv(4096) or sys.exit(f"the server closed a {path} connection: {head!r}")
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        tails[sock] = b""
    selector.register(sys.stdin, selectors.EVENT_READ)
    print("connected", flush=True)
    counted, expected, keep = 0, None, len(MARKER) - 1
    while True:
        for key, _ in selector.select():
            if key.fileobj is sys.stdin:
                line = sys.stdin.readline()
                if not line:
                    return
                expected = int(line.split()[1])
            else:
                sock = key.fileobj
                data = sock.recv(1 << 18)
                if not data:
                    raise SystemExit(f"the server closed a {path} connection: {tails[sock]!r}")
                data = tails[sock] + data
                counted += data.count(MARKER)
                tails[sock] = data[-keep:]
        if expected is not None and counted >= expected:
            print("reached", counted, flush=True)
            expected = None


async def measure(args) -> None:
    import httpx
    import trio
    from stack import SECRET, cpu_seconds, stack

    from rtserver.backends.auth import mint_token

    token = mint_token(SECRET, {"sub": "bench-sub", "healthUnitTaxId": "t1", "roles": ["attendant"]}, ttl_s=86400)
    service = mint_token(SECRET, {"sub": "bench-pub", "roles": ["service"]}, ttl_s=86400)
    order = [t for r in range(args.rounds) for t in (("ws", "sse") if r % 2 == 0 else ("sse", "ws"))]
    results: dict[str, list[dict]] = {"ws": [], "sse": []}
    async with stack([False], "[connection]\nidle_timeout_s = 0\n") as processes:
        port, pid = processes.ports[0], processes.pids[0]
        publish_url = f"http://127.0.0.1:{port}/v1/publish"
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {service}"},
                                     limits=httpx.Limits(max_connections=PUBLISHERS)) as http:

            async def publish(count: int) -> None:
                for i in range(count):
                    body = {"event": "rt.probe", "tenant": "t1", "rooms": [ROOM],
                            "data": {"t": time.time_ns(), "s": i, "p": "x" * 150}}
                    (await http.post(publish_url, json=body)).raise_for_status()

            for transport in order:
                client = subprocess.Popen(
                    [sys.executable, __file__, "--client", transport, "--port", str(port), "--token", token,
                     "--subscribers", str(args.subscribers)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
                try:
                    await trio.to_thread.run_sync(client.stdout.readline)  # "connected"

                    async def expect(total: int) -> None:
                        client.stdin.write(f"expect {total}\n")
                        client.stdin.flush()
                        reply = await trio.to_thread.run_sync(client.stdout.readline)
                        if not reply.startswith("reached"):
                            raise SystemExit(f"the {transport} client stopped: {reply!r}")

                    async with trio.open_nursery() as nursery:  # warm-up: every connection is in the room
                        nursery.start_soon(expect, args.subscribers)
                        await publish(1)
                    cpu_before, started = cpu_seconds(pid), time.perf_counter()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(expect, args.subscribers * (args.events + 1))
                        for _ in range(PUBLISHERS):
                            nursery.start_soon(publish, args.events // PUBLISHERS)
                    seconds, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu_before
                finally:
                    client.kill()
                    client.wait()
                deliveries = args.subscribers * (args.events // PUBLISHERS * PUBLISHERS)
                row = {"transport": transport, "deliveries": deliveries, "seconds": round(seconds, 3),
                       "server_cpu_s": round(cpu, 3), "deliveries_per_s": round(deliveries / seconds),
                       "cpu_us_per_delivery": round(cpu / deliveries * 1e6, 3)}
                results[transport].append(row)
                print(json.dumps(row), flush=True)
                await trio.sleep(1)  # the closed connections are gone before the next phase
    ws = statistics.median(r["cpu_us_per_delivery"] for r in results["ws"])
    sse = statistics.median(r["cpu_us_per_delivery"] for r in results["sse"])
    rate = {t: statistics.median(r["deliveries_per_s"] for r in results[t]) for t in results}
    print(f"median server CPU per delivery: WebSocket {ws:.3f} µs, SSE {sse:.3f} µs, SSE/WebSocket {sse / ws:.2f}x")
    print(f"median deliveries/s: WebSocket {rate['ws']:,.0f}, SSE {rate['sse']:,.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", choices=["ws", "sse"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        run_client(args)
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import trio

        trio.run(measure, args)
