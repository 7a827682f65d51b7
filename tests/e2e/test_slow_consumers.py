"""A slow consumer's close, read byte by byte: a client that stalls while big frames pile
up is closed with 4001, and what it then reads is whole frames (the one the socket had
cut included) followed by a clean close — on WebSocket and on SSE."""

from __future__ import annotations

import json
import socket

import h11
import pytest
import trio
import wsproto
from wsproto.events import CloseConnection, Request, TextMessage

from rtserver.node import Node
from tests.support.metrics import metric_value
from tests.support.nodes import Server, server_config

PADDING = 30_000  # bytes of each event: frames far larger than the socket buffers
BUDGET = {"outbound_max_bytes": 200_000, "outbound_max_frames": 100_000}


@pytest.fixture
async def server(nursery) -> Server:
    node = Node(server_config(connection=BUDGET))
    return Server(node, await nursery.start(node.run))


def stalled_socket(port: int) -> socket.socket:
    """A client socket with a small receive buffer, so that the server's writes block mid-frame."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def read_until(sock: socket.socket, marker: bytes | None = None) -> bytes:
    """What the server sends until ``marker`` arrived (None: until it closes)."""
    received = bytearray()
    sock.setblocking(False)
    while marker is None or marker not in received:
        await trio.lowlevel.wait_readable(sock)
        try:
            data = sock.recv(1 << 16 if marker is None else 1)
        except BlockingIOError:
            continue
        except ConnectionResetError:
            data = b""
        if not data:
            break
        received += data
    return bytes(received)


async def overflow(server: Server) -> None:
    """Publish big events until the node closes its one slow consumer."""
    count = 0
    while metric_value(server.node.metrics.disconnects, reason="slow consumer") < 1:
        count += 1
        body = {"event": "rt.probe", "tenant": "t1", "rooms": ["probe:1"],
                "data": {"t": 0, "s": count, "p": "x" * PADDING}}
        assert (await server.publish(body)).status_code == 200
        assert count < 200, "the stalled client was never closed"


async def test_a_slow_websocket_consumer_reads_whole_frames_then_a_clean_4001(server):
    sock = stalled_socket(server.port)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    sock.sendall(client.send(Request(host="127.0.0.1", target=f"/hub/ws?access_token={server.token()}&rooms=probe:1")))
    with trio.fail_after(30):
        data = await read_until(sock, b'"op":"hello"')  # in its room: then it stalls
        await overflow(server)
        data += await read_until(sock)
    client.receive_data(data)
    client.receive_data(None)
    messages, close = [], None
    for event in client.events():  # wsproto refuses any frame a close was written into
        if isinstance(event, TextMessage):
            messages.append(json.loads(event.data))
        elif isinstance(event, CloseConnection):
            close = event.code
    assert messages[0]["op"] == "hello" and len(messages) > 1
    assert all(len(m["data"]["p"]) == PADDING for m in messages[1:])
    assert [m["data"]["s"] for m in messages[1:]] == list(range(1, len(messages)))
    assert close == 4001


async def test_a_slow_sse_consumer_reads_whole_events_then_a_clean_close_event(server):
    sock = stalled_socket(server.port)
    sock.sendall(f"GET /hub/sse?rooms=probe:1&access_token={server.token()} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    with trio.fail_after(30):
        data = await read_until(sock, b'"op":"hello"')  # in its room: then it stalls
        await overflow(server)
        data += await read_until(sock)
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    parser.send(h11.EndOfMessage())
    parser.receive_data(data)
    parser.receive_data(b"")
    body = bytearray()
    while type(event := parser.next_event()) not in (h11.EndOfMessage, h11.ConnectionClosed):
        if isinstance(event, h11.Data):  # h11 refuses any chunk a close was written into
            body += event.data
    assert type(event) is h11.EndOfMessage  # the last chunk came: the stream ended cleanly
    events = [block for block in body.decode().split("\n\n") if block and not block.startswith(("retry:", ":"))]
    payloads = [json.loads(line[len("data: "):]) for block in events for line in block.split("\n")
                if line.startswith("data: ")]
    assert payloads[0]["op"] == "hello"
    assert [p["data"]["s"] for p in payloads[1:-1]] == list(range(1, len(payloads) - 1))
    assert all(len(p["data"]["p"]) == PADDING for p in payloads[1:-1])
    assert events[-1].startswith("event: close") and payloads[-1]["code"] == 4001


async def test_a_slow_socketio_consumer_reads_whole_packets_then_a_clean_4001(server):
    """Socket.IO shares the socket's budget and close: whole EVENT packets, then 4001 (the
    client reconnects and recovers from the last one)."""
    sock = stalled_socket(server.port)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    sock.sendall(client.send(Request(host="127.0.0.1", target="/socket.io/?EIO=4&transport=websocket")))
    received = []

    async def send(text: str, until: bytes) -> None:
        client.receive_data(await read_until(sock, until))
        received.extend(client.events())  # the 101 first: then the client may send
        sock.setblocking(True)
        sock.sendall(client.send(TextMessage(data=text)))

    with trio.fail_after(30):
        await send('40/hub,{"token":"%s"}' % server.token(), b'"pingTimeout"')
        await send('42/hub,1["subscribe",{"room":"probe:1"}]', b'"pid"')
        data = await read_until(sock, b'"subscribed"')  # in its room: then it stalls
        await overflow(server)
        data += await read_until(sock)
    client.receive_data(data)
    client.receive_data(None)
    events, close = [], None
    for event in [*received, *client.events()]:
        if isinstance(event, TextMessage) and event.data.startswith("42/hub,"):
            events.append(json.loads(event.data[len("42/hub,"):]))
        elif isinstance(event, CloseConnection):
            close = event.code
    assert events and all(name == "rt.probe" and len(data["p"]) == PADDING for name, data, *_ in events)
    assert [data["s"] for _, data, *_ in events] == list(range(1, len(events) + 1))
    assert close == 4001
