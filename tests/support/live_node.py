"""A live ``rtserver serve`` process tried as an outside tester would, and plain-socket probes."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
from dataclasses import dataclass, field
import h11
import jwt
import wsproto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
import msgspec
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, RejectConnection, Request, TextMessage
from rtserver.backends.auth import mint_token


SECRET = "robustness-secret-0123456789abcdef0123456789abcdef0123456789abcd"


#: The close codes and HTTP statuses a client may be answered with (docs/protocol.md).
DOCUMENTED_CLOSES = {1000, 1002, 1007, 1009, 1013, 4000, 4001, 4002, 4003, 4100, 4401, 4403}


REFUSALS = {400, 401, 403, 404, 405, 408, 410, 413, 415, 422, 426, 429, 431, 503}


@dataclass
class Answer:
    """One HTTP answer read off a socket (None status: the server closed without one)."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self):
        return json.loads(self.body)


def read_answer(sock: socket.socket, timeout: float = 15.0) -> Answer:
    """Parse the first HTTP answer the server sends (any request may have caused it)."""
    parser = h11.Connection(h11.CLIENT)
    # The state h11 needs to read an answer to anything, an upgrade's 101 included.
    parser.send(h11.Request(method="GET", target="/", headers=[("host", "x"), ("connection", "upgrade"),
                                                               ("upgrade", "websocket")]))
    parser.send(h11.EndOfMessage())
    sock.settimeout(timeout)
    answer, body = None, bytearray()
    while True:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                data = b""
            if not data and answer is None:
                return Answer(None)
            parser.receive_data(data)
            if not data:
                break
        elif isinstance(event, h11.InformationalResponse) and event.status_code != 101:
            continue
        elif isinstance(event, (h11.Response, h11.InformationalResponse)):
            answer = Answer(event.status_code, {k.decode(): v.decode("latin-1") for k, v in event.headers})
            if event.status_code == 101:
                break
        elif isinstance(event, h11.Data):
            body += event.data
        else:  # EndOfMessage, ConnectionClosed
            break
    answer.body = bytes(body)
    return answer


def exchange(port: int, data: bytes, *, half_close: bool = True, timeout: float = 15.0) -> Answer:
    """Send raw bytes on a new connection (then EOF, so an incomplete request ends) and
    read the answer."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it read all of it: the answer may still be there
        return read_answer(sock, timeout)


def assert_documented_refusal(answer: Answer) -> None:
    """A refusal the protocol documents: a 4xx/503 status with ``{"error", "message"}``."""
    assert answer.status in REFUSALS, (answer.status, answer.body[:300])
    body = answer.json()
    assert isinstance(body.get("error"), int) and isinstance(body.get("message"), str), body


def masked_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame (masked, as RFC 6455 requires of clients)."""
    mask = os.urandom(4)
    length = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", length)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class WebSocket:
    """A blocking WebSocket client on a plain socket (wsproto), for raw frames."""

    def __init__(self, port: int, target: str, extra_headers=(), subprotocols=()) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(10)
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host=f"127.0.0.1:{port}", target=target,
                                               extra_headers=list(extra_headers), subprotocols=list(subprotocols))))
        self.accepted: bool | None = None
        self.rejected_status: int | None = None
        self.close_code: int | None = None
        self._events: list = []

    def _pump(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            data = b""
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted = True
            elif isinstance(event, RejectConnection):
                self.accepted, self.rejected_status = False, event.status_code
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
            else:
                self._events.append(event)
        return bool(data)

    def next_message(self) -> dict | None:
        """The next message (JSON text, or MessagePack binary); None once the connection closed."""
        while True:
            while self._events:
                event = self._events.pop(0)
                if isinstance(event, TextMessage):
                    return json.loads(event.data)
                if isinstance(event, BytesMessage):
                    return msgspec.msgpack.decode(event.data)
            if self.close_code is not None or self.accepted is False or not self._pump():
                return None

    def next_raw(self) -> str | bytes | None:
        """The next message as sent (text or bytes); None once the connection closed."""
        while True:
            while self._events:
                event = self._events.pop(0)
                if isinstance(event, TextMessage | BytesMessage):
                    return event.data
            if self.close_code is not None or self.accepted is False or not self._pump():
                return None

    def send_raw(self, data: bytes) -> None:
        """Send bytes; a connection the server already closed is left to be read."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def close(self) -> None:
        self.sock.close()


@dataclass
class LiveNode:
    port: int
    process: subprocess.Popen
    log_path: str
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    sentinel: WebSocket | None = None
    published: int = 0

    def token(self, sub: str = "u1", tenant: str = "t1", roles=("attendant",), **claims) -> str:
        return mint_token(SECRET, {"sub": sub, "healthUnitTaxId": tenant, "roles": list(roles), **claims})

    @property
    def service_token(self) -> str:
        return mint_token(SECRET, {"sub": "svc", "roles": ["service"]})

    def request(self, method: str, target: str, body: bytes = b"", headers: dict | None = None) -> Answer:
        head = [f"{method} {target} HTTP/1.1", "host: 127.0.0.1", f"content-length: {len(body)}",
                *(f"{k}: {v}" for k, v in (headers or {}).items())]
        return exchange(self.port, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body, half_close=False)

    def open_sentinel(self) -> None:
        self.sentinel = WebSocket(self.port, f"/hub/ws?access_token={self.token(sub='sentinel')}")
        hello = self.sentinel.next_message()
        assert hello and hello["op"] == "hello", hello

    def assert_serving(self) -> None:
        """The node still serves its sentinel: alive, a ping answered, a new event delivered."""
        assert self.process.poll() is None, f"the node exited; its log: {open(self.log_path).read()[-3000:]}"
        sentinel = self.sentinel
        sentinel.send_text(json.dumps({"op": "ping", "ref": 1}))
        self.published += 1
        body = json.dumps({"event": "appointment.created", "tenant": "t1", "rooms": ["user:sentinel"],
                           "data": {"appointmentId": f"sentinel-{self.published}"}}).encode()
        published = self.request("POST", "/v1/publish", body, {"authorization": f"Bearer {self.service_token}",
                                                               "content-type": "application/json"})
        assert published.status == 200, (published.status, published.body)
        seen = set()
        while not {"pong", f"sentinel-{self.published}"} <= seen:
            message = sentinel.next_message()
            assert message is not None, f"the sentinel was closed ({sentinel.close_code})"
            seen.add(message["op"] if message["op"] != "evt" else message["data"].get("appointmentId"))


def is_ready(port: int) -> bool:
    """Whether the node at ``port`` answers ``/readyz`` with 200."""
    try:
        return exchange(port, b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n").status == 200
    except OSError:
        return False


def write_keys(folder, rsa_key, ec_key) -> tuple[str, str]:
    """A JWKS with an RSA key (kid ``rsa1``) and a P-256 key (kid ``ec1``), and the P-256
    key alone as the PEM public key."""
    jwks = {"keys": [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa1", "use": "sig"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec1", "use": "sig"},
    ]}
    (folder / "jwks.json").write_text(json.dumps(jwks))
    (folder / "ec.pem").write_bytes(ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(folder / "jwks.json"), str(folder / "ec.pem")
