"""``TlsSocket`` (rtserver/backends/tls.py) against the standard library's TLS client over a
socket pair: the handshake, reads cut anywhere, records held back by a full socket, and
the writer's queue over it."""

from __future__ import annotations

import socket
import ssl

import pytest
import trio
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.writer import OutboundQueue, Writer
from rtserver.backends.metrics import Metrics
from rtserver.backends.sockets import buffered, wait_readable
from rtserver.backends.tls import TlsSocket
from tests.support.actor_harness import QueueOwner

CA = trustme.CA()
SERVER = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
CA.issue_cert("127.0.0.1").configure_cert(SERVER)
CLIENT = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
CA.configure_trust(CLIENT)


class Client:
    """The client side, an ``ssl.SSLObject`` whose bytes the test carries by hand."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = CLIENT.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")

    def step(self) -> None:
        """Take what the server sent, answer what the handshake asks."""
        self.sock.setblocking(False)
        try:
            while data := self.sock.recv(65536):
                self.incoming.write(data)
        except BlockingIOError:
            pass
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        self.sock.sendall(self.outgoing.read())

    def records(self, data: bytes) -> bytes:
        """``data`` encrypted, as the client would send it."""
        self.tls.write(data)
        return self.outgoing.read()

    def read_all(self) -> bytes:
        """Everything the server's records held, once the socket is drained."""
        self.sock.setblocking(False)
        plain = bytearray()
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            self.incoming.write(data)
        while True:
            try:
                plain += self.tls.read(1 << 20)
            except ssl.SSLWantReadError:
                return bytes(plain)


async def connected() -> tuple[TlsSocket, Client]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    server, client = TlsSocket(ours, SERVER), Client(theirs)
    client.step()  # ClientHello

    async def answer_the_server() -> None:
        while not client.tls.version() or client.outgoing.pending:
            await trio.sleep(0)
            client.step()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_the_server)
        with trio.fail_after(5):
            await server.handshake()
    client.step()  # session tickets
    return server, client


async def test_a_read_smaller_than_a_record_leaves_the_rest_buffered_and_waiting_returns_at_once():
    server, client = await connected()
    client.sock.sendall(client.records(b"0123456789"))
    with trio.fail_after(5):
        await wait_readable(server)
    assert server.recv(4) == b"0123" and buffered(server)
    with trio.fail_after(1):  # the socket is not readable: the bytes are in the TLS buffer
        await wait_readable(server)
    assert server.recv(4, socket.MSG_PEEK) == b"4567" and server.recv(100) == b"4567"  # what was peeked
    assert server.recv(100) == b"89"
    assert not buffered(server)
    with pytest.raises(BlockingIOError):
        server.recv(100)


@settings(max_examples=40, deadline=None)
@given(messages=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=5),
       cuts=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=30))
def test_records_cut_anywhere_read_back_as_sent(messages, cuts):
    async def main():
        server, client = await connected()
        stream = b"".join(client.records(m) for m in messages)
        received = bytearray()
        at = 0
        for cut in [*cuts, len(stream)]:
            client.sock.sendall(stream[at:at + cut])
            at += cut
            while True:
                try:
                    received += server.recv(512)
                except BlockingIOError:  # only part of a record: nothing to wake a reader for
                    assert not buffered(server)
                    break
            if at >= len(stream):
                break
        assert bytes(received) == b"".join(messages)
        assert not buffered(server)

    trio.run(main)


async def test_records_the_socket_does_not_take_wait_and_go_first(nursery):
    server, client = await connected()
    server.raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = bytes(range(256)) * 4096  # 1 MB: far over the socket pair's buffers
    assert server.send(big) == len(big) and server.unsent > 0
    with pytest.raises(BlockingIOError):  # nothing of the next send is taken while records wait
        server.send(b"after")
    received = bytearray()
    while server.unsent:
        received += client.read_all()
        try:
            server.flush()
        except BlockingIOError:
            pass
    assert server.send(b"after") == 5
    received += client.read_all()
    assert bytes(received) == big + b"after"


@pytest.mark.parametrize("handed", ["pushed", "broadcast"])
async def test_the_writer_sends_held_back_records_once_the_socket_takes_them(nursery, handed):
    """A queue whose frames were all encrypted but not all written stays blocked, and its
    drain task writes the rest: the client gets every frame whole, whether the frame was
    pushed to the queue or written straight from a broadcast."""
    server, client = await connected()
    server.raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    writer = Writer(Metrics(), flush_max_bytes=1 << 22, interval_s=0.001)
    await nursery.start(writer.run)
    queue = OutboundQueue(server, writer, max_frames=10, max_bytes=1 << 22, owner=QueueOwner())
    frame = b"F" * 600_000
    if handed == "pushed":
        queue.push(frame)
    else:
        writer.broadcast(frame, [queue])
    with trio.fail_after(5):
        while not queue.blocked:
            await trio.sleep(0)
    assert not queue.frames and server.unsent  # all encrypted, not all written
    received = bytearray()
    with trio.fail_after(10):
        while len(received) < len(frame):
            received += client.read_all()
            await trio.sleep(0.001)
        await queue.wait_flushed()
    assert bytes(received) == frame and not server.unsent
