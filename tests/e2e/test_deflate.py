"""permessage-deflate (RFC 7692, ``server.permessage_deflate``) with real clients: wsproto's
extension, Node's ws and socket.io-client; off, an offer is declined; a broadcast
compressed once."""

from __future__ import annotations

import collections
import json
import socket
import subprocess
import zlib
from pathlib import Path

import pytest
import trio
import wsproto
from wsproto.events import AcceptConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from actors.registry import Registry
from actors.writer import OutboundQueue, Writer
from protocol import wires
from protocol.catalog import Catalog
from protocol.envelope import Envelope
from rtserver.backends.bus.memory import MemoryBus
from rtserver.backends.metrics import Metrics
from rtserver.node import Node
from tests.support.actor_harness import QueueOwner, config
from tests.support.events import alert
from tests.support.nodes import Server, server_config
from tests.support.socketio_clients import open_socketio_clients

#: A 2 KB event as clinic dashboards get them: text that repeats, as JSON does.
NOTES = " ".join(f"slot {i} booked for patient {i % 7} with doctor {i % 3}" for i in range(40))
WS_CLIENT = Path(__file__).resolve().parents[1] / "js" / "ws_client.mjs"


async def start(nursery, deflate: bool) -> Server:
    node = Node(server_config(server={"permessage_deflate": deflate}))
    return Server(node, await nursery.start(node.run))


def probe(s: int) -> dict:
    return {"event": "rt.probe", "tenant": "t1", "rooms": ["probe:1"], "data": {"s": s, "p": NOTES}}


class WsprotoClient:
    """A blocking client on wsproto, offering permessage-deflate; counts the bytes it reads."""

    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.bytes_read = 0
        self.events: collections.deque = collections.deque()
        self.sock.sendall(self.ws.send(Request(host="127.0.0.1", target=f"/hub/ws?access_token={token}&rooms=probe:1",
                                               extensions=[PerMessageDeflate()])))
        self.accepted = self._next(AcceptConnection)

    def _next(self, kind):
        while True:
            self.events.extend(self.ws.events())  # whole: wsproto reads on as it yields
            while self.events:
                if isinstance(event := self.events.popleft(), kind):
                    return event
            data = self.sock.recv(65536)
            assert data, "the node closed"
            self.bytes_read += len(data)
            self.ws.receive_data(data)

    def frame(self, op: str) -> dict:
        """The next frame of ``op`` the node sends."""
        while (frame := json.loads(self._next(TextMessage).data))["op"] != op:
            pass
        return frame

    def send(self, frame: dict) -> None:
        self.sock.sendall(self.ws.send(TextMessage(json.dumps(frame))))


@pytest.mark.parametrize("deflate", [True, False])
async def test_wsproto_gets_compressed_events_and_sends_compressed_commands_when_on(nursery, deflate):
    server = await start(nursery, deflate)
    client = await trio.to_thread.run_sync(WsprotoClient, server.port, server.token())
    assert [type(e) for e in client.accepted.extensions] == ([PerMessageDeflate] if deflate else [])
    await trio.to_thread.run_sync(client.frame, "hello")
    before = client.bytes_read
    assert (await server.publish(probe(1))).status_code == 200
    evt = await trio.to_thread.run_sync(client.frame, "evt")
    assert evt["data"] == {"s": 1, "p": NOTES}
    sent_as_json = len(json.dumps(evt, separators=(",", ":")))
    if deflate:  # the frame came compressed
        assert client.bytes_read - before < sent_as_json / 3
    else:
        assert client.bytes_read - before > sent_as_json
    # wsproto compresses every message it sends when deflate is on: the node reads it
    client.send({"op": "sub", "ref": 7, "room": "professional:1"})
    ack = await trio.to_thread.run_sync(client.frame, "ack")
    assert ack["ref"] == 7
    client.sock.close()


async def test_node_ws_negotiates_deflate_and_reads_every_event(nursery):
    server = await start(nursery, True)
    url = f"ws://127.0.0.1:{server.port}/hub/ws?access_token={server.token()}&rooms=probe:1"
    process = await trio.lowlevel.open_process(["node", str(WS_CLIENT), url, "3"], stdout=subprocess.PIPE)
    lines = reader(process)
    with trio.fail_after(20):
        opened = await lines.__anext__()
        assert opened == {"op": "open", "extensions": "permessage-deflate"}
        await server.publish_all(probe(s) for s in range(3))
        got = [await lines.__anext__() for _ in range(4)]
    assert [line["data"]["s"] for line in got[:3]] == [0, 1, 2]
    assert got[3]["op"] == "close" and got[3]["bytesRead"] < len(NOTES) * 3 / 2
    await process.wait()


async def reader(process):
    """The JSON lines a driver prints."""
    pending = b""
    while True:
        while b"\n" not in pending:
            data = await process.stdout.receive_some()
            assert data, "the driver exited"
            pending += data
        line, pending = pending.split(b"\n", 1)
        yield json.loads(line)


async def test_a_broadcast_is_compressed_once_and_the_same_frame_queued_for_every_member(monkeypatch):
    compressed: list[bytes] = []
    deflate_payload = wires.deflate_payload
    monkeypatch.setattr(wires, "deflate_payload", lambda payload: compressed.append(payload) or deflate_payload(payload))
    cfg = config()
    writer = Writer(Metrics(), flush_max_bytes=1 << 16, interval_s=0.005)
    registry = Registry(MemoryBus(cfg.bus), cfg.rooms, Metrics(), writer.fan_outs, Catalog.default())
    room = registry.open_room("t1/probe:1")
    queues = []
    for i in range(5):
        ours, theirs = socket.socketpair()
        queues.append(OutboundQueue(ours, writer, max_frames=10, max_bytes=1 << 16, owner=QueueOwner()))
        room.add(f"member{i}", wires.WS_DEFLATE[wires.WS_JSON], queues[-1].push)
    bus = MemoryBus(cfg.bus)
    appended = await bus.append(Envelope(event="rt.probe", tenant="t1", rooms=["probe:1"],
                                         data={"s": 1, "p": NOTES}))
    assert registry.route(appended.event) == 5
    assert len(compressed) == 1
    [frame] = {id(q.frames[0]): q.frames[0] for q in queues}.values()  # one bytes object, shared
    assert frame[0] & 0x40  # RSV1: compressed
    assert json.loads(zlib.decompressobj(-15).decompress(frame[4:] + b"\x00\x00\xff\xff"))["data"]["p"] == NOTES


async def test_socketio_client_websockets_get_compressed_events_and_polling_ones_plain(nursery):
    """socket.io-client (Node, ws underneath) offers permessage-deflate: its WebSocket's
    namespace sessions get the compressed twin of their wire; a long-polling session keeps
    the plain one (its GETs carry the frames' payloads)."""
    server = await start(nursery, True)
    clients = await open_socketio_clients(nursery)
    for id, transports in (("ws", ["websocket"]), ("polling", ["polling"])):
        await clients.connect(id, f"{server.http}/hub", {"token": server.token(id)}, transports=transports)
        await clients.next(id, "connect")
    published = await server.publish(alert(1))
    for id in ("ws", "polling"):
        data, meta, cursor = await clients.event(id, "critical_alert")
        assert data == alert(1)["data"] and cursor == published.json()["cursor"]
    wires = {c.claims.user: c._wire for c in server.node.connections if c.transport == "socketio"}
    assert wires["ws"].deflate and not wires["polling"].deflate
