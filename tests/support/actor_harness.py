"""A node on the memory bus, built and run as production does, with clients on socketpairs.

Each test client speaks real WebSocket frames (a wsproto client connection over one end
of a ``socket.socketpair``); the other end is a ``WebSocketConnection`` actor, exactly as the
listener would start it after a handshake.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import msgspec
import trio
import wsproto.connection
import wsproto.events as ev
from wsproto import ConnectionType

from actors.connection import ConnectionServices
from actors.presence import Presence
from actors.registry import Registry
from actors.websocket import WebSocketConnection
from actors.writer import Writer
from protocol.catalog import Namespace
from protocol.envelope import Envelope
from protocol.wires import WS_JSON
from rtserver.backends.auth import Claims
from rtserver.backends.bus import Bus
from rtserver.backends.config import Config, load_config
from rtserver.backends.metrics import Metrics
from rtserver.node import Node


#: The harness node's token key (its connections are given claims directly).
SECRET = "actor-harness-0123456789abcdef0123456789abcdef0123456789abcdef01"


class QueueOwner:
    """An outbound queue's owner in a test whose queues never overflow and whose sockets
    never break: either fails the test."""

    def slow_consumer(self) -> None:
        raise AssertionError("a queue overflowed its budget")

    def connection_lost(self) -> None:
        raise AssertionError("a socket broke")


def config(**sections) -> Config:
    """A node's configuration with ``sections`` over it, on a loopback port of its own."""
    server = {"host": "127.0.0.1", "port": 0, **sections.pop("server", {})}
    return load_config(environ={}, overrides={"auth": {"hs256_secret": SECRET}, "server": server, **sections})


def staff(user="u1", tenant="t1", exp_in=3600.0, groups: tuple[str, ...] = ()) -> Claims:
    """Staff claims; tracked for presence in ``groups`` (none by default)."""
    return Claims(user=user, tenant=tenant, roles=frozenset({"attendant"}), exp=int(time.time() + exp_in),
                  presence_groups=groups)


class TestClient:
    """The client end: sends frames, decodes what arrives."""

    __test__ = False

    def __init__(self, sock: socket.socket, connection: WebSocketConnection) -> None:
        self.sock = sock
        self.connection = connection
        self.ws = wsproto.connection.Connection(ConnectionType.CLIENT)
        self.close_code: int | None = None
        self._pending: list[dict] = []

    async def send(self, frame: dict) -> None:
        data = self.ws.send(ev.TextMessage(data=msgspec.json.encode(frame).decode()))
        await trio.lowlevel.wait_writable(self.sock)
        self.sock.sendall(data)

    async def send_bytes(self, raw: bytes) -> None:
        await trio.lowlevel.wait_writable(self.sock)
        self.sock.sendall(raw)

    async def recv(self) -> dict:
        """The next frame; raises EOFError once the server closed (``close_code`` set)."""
        while not self._pending:
            if self.close_code is not None:
                raise EOFError(self.close_code)
            await trio.lowlevel.wait_readable(self.sock)
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                self.close_code = self.close_code or 1006
                continue
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, ev.TextMessage):
                    self._pending.append(msgspec.json.decode(event.data))
                elif isinstance(event, ev.CloseConnection):
                    self.close_code = event.code
        return self._pending.pop(0)

    async def recv_until(self, op: str) -> dict:
        while True:
            frame = await self.recv()
            if frame["op"] == op:
                return frame

    async def wait_closed(self) -> int:
        try:
            while True:
                await self.recv()
        except EOFError as exc:
            return exc.args[0]


@dataclass
class Harness:
    config: Config
    bus: Bus
    metrics: Metrics
    writer: Writer
    registry: Registry
    services: ConnectionServices
    nursery: trio.Nursery
    presence: Presence

    async def connect(self, claims: Claims | None = None, ns: Namespace = Namespace.HUB,
                      since=None, rcvbuf: int | None = None) -> TestClient:
        server_sock, client_sock = socket.socketpair()
        for s in (server_sock, client_sock):
            s.setblocking(False)
        if rcvbuf:
            client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
        connection = WebSocketConnection(
            server_sock, services=self.services, claims=claims or staff(), ns=ns, wire=WS_JSON,
            session=f"s{id(server_sock)}", since=since,
        )
        await self.nursery.start(connection.run)
        client = TestClient(client_sock, connection)
        assert (await client.recv())["op"] == "hello"
        return client

    async def publish(self, rooms, i=0, tenant="t1", event="appointment.created", **data):
        """Append ``event`` (an ``appointment.created`` numbered ``i`` unless named)."""
        if event == "appointment.created":
            data = {"appointmentId": str(i), **data}
        return await self.bus.append(Envelope(event=event, tenant=tenant, rooms=list(rooms), data=data))


async def start_harness(nursery: trio.Nursery, cfg: Config | None = None) -> Harness:
    """A node built and run as production builds it (memory bus); clients are started on
    its services directly, as its listener would after a handshake."""
    node = Node(cfg or config())
    await nursery.start(node.run)
    return Harness(node.config, node.bus, node.metrics, node.writer, node.registry, node.services, nursery,
                   node.presence)
