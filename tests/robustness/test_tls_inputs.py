"""A node on TLS fed what a TLS port gets from the Internet: anything as its first bytes,
handshakes broken off or garbled anywhere, and garbage records once a handshake is done.
After each, a TLS client (the sentinel's stand-in) is still served: a handshake, a publish
and the event delivered over wss."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time

import pytest
import wsproto
from hypothesis import given
from hypothesis import strategies as st
from wsproto.events import AcceptConnection, Request, TextMessage

from rtserver.backends.auth import mint_token
from tests.support.net import free_port
from tests.support.tls import TlsFiles

SECRET = "tls-robustness-secret-0123456789abcdef0123456789abcdef0123456789"


class TlsNode:
    def __init__(self, port: int, process: subprocess.Popen, files: TlsFiles, log_path) -> None:
        self.port, self.process, self.files, self.log_path = port, process, files, log_path
        self.published = 0

    def connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return self.files.client_context().wrap_socket(raw, server_hostname="127.0.0.1")

    def assert_serving(self) -> None:
        """Alive, and a wss client gets an event published over https now."""
        assert self.process.poll() is None, f"the node exited; its log: {self.log_path.read_text()[-3000:]}"
        self.published += 1
        token = mint_token(SECRET, {"sub": "sentinel", "healthUnitTaxId": "t1", "roles": ["attendant"]}, 3600)
        with self.connect() as sock:
            ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            sock.sendall(ws.send(Request(host="127.0.0.1", target=f"/hub/ws?access_token={token}")))
            events = []
            while not any(isinstance(event, AcceptConnection) for event in events):
                ws.receive_data(sock.recv(65536))
                events.extend(ws.events())
            self.publish()
            while True:
                for event in [*events, *ws.events()]:
                    if isinstance(event, TextMessage) and json.loads(event.data).get("op") == "evt":
                        assert json.loads(event.data)["data"] == {"appointmentId": f"s{self.published}"}
                        return
                events = []
                data = sock.recv(65536)
                assert data, "the sentinel was closed"
                ws.receive_data(data)

    def publish(self) -> None:
        body = json.dumps({"event": "appointment.created", "tenant": "t1", "rooms": ["user:sentinel"],
                           "data": {"appointmentId": f"s{self.published}"}}).encode()
        token = mint_token(SECRET, {"sub": "backbone", "roles": ["service"]}, 3600)
        with self.connect() as sock:
            sock.sendall(b"POST /v1/publish HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: "
                         b"application/json\r\nauthorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
                         % (token.encode(), len(body), body))
            answer = b""
            while data := sock.recv(65536):
                answer += data
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls-robustness")
    files = TlsFiles(folder)
    port = free_port()
    (folder / "rt.toml").write_text(f'[server]\nport = {port}\nhandshake_timeout_s = 2.0\n'
                                    f'tls_cert_file = "{files.cert_file}"\ntls_key_file = "{files.key_file}"\n'
                                    f'[auth]\nhs256_secret = "{SECRET}"\n')
    log_path = folder / "node.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "rtserver", "serve", "--config", str(folder / "rt.toml")],
                                   stdout=log, stderr=log)
    node = TlsNode(port, process, files, log_path)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                node.connect().close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.1)
        yield node
        node.assert_serving()
    finally:
        process.kill()
        process.wait()


def send_and_read(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection, then read until the node closes it (or 3 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return answer


def client_hello() -> bytes:
    """A real TLS 1.3 ClientHello, as the standard library's client sends it."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


HELLO = client_hello()


@given(first=st.binary(max_size=600) | st.binary(max_size=40).map(lambda b: b"\x16\x03\x01" + b))
def test_any_first_bytes_are_refused_and_the_node_serves_on(tls_node, first):
    answer = send_and_read(tls_node.port, first)
    if first and first[0] != 0x16:  # not a TLS handshake record: told so in plain text
        assert answer.startswith(b"HTTP/1.1 400 ") and b"use https:// or wss://" in answer
    tls_node.assert_serving()


@given(cut=st.integers(0, len(HELLO)), flips=st.lists(st.tuples(st.integers(0, len(HELLO) - 1),
                                                                 st.integers(1, 255)), max_size=4))
def test_a_client_hello_cut_or_garbled_anywhere_is_refused_and_the_node_serves_on(tls_node, cut, flips):
    hello = bytearray(HELLO[:cut])
    for at, xor in flips:
        if at < len(hello):
            hello[at] ^= xor
    send_and_read(tls_node.port, bytes(hello))
    tls_node.assert_serving()


@given(records=st.binary(min_size=1, max_size=300))
def test_garbage_after_a_handshake_closes_that_connection_alone(tls_node, records):
    with tls_node.connect() as sock:
        raw = socket.socket(fileno=sock.detach())  # the handshake done, then bytes that are no record
        raw.sendall(records)
        raw.shutdown(socket.SHUT_WR)
        raw.settimeout(3)
        try:
            while raw.recv(65536):
                pass
        except (TimeoutError, ConnectionResetError):
            pass
        raw.close()
    tls_node.assert_serving()
