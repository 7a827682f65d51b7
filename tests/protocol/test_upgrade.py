"""The WebSocket accept answer (RFC 6455 §4.2.2), computed without a handshake library."""

import h11
import wsproto
from wsproto.events import AcceptConnection, Request

from protocol.upgrade import accept_response, check_upgrade, subprotocols

RFC_EXAMPLE_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def _head(*extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"example.org"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
            (b"sec-websocket-key", RFC_EXAMPLE_KEY), (b"sec-websocket-version", b"13"), *extra]


def test_the_accept_token_is_the_rfc_example():
    response = accept_response(_head(), None)
    assert response.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert b"Sec-WebSocket-Protocol" not in response
    assert response.endswith(b"\r\n\r\n")


def test_a_real_client_accepts_the_answer_with_the_chosen_subprotocol():
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    request = client.send(Request(host="example.org", target="/hub/ws", subprotocols=["rt.v1.msgpack", "bearer.x"]))
    server = h11.Connection(h11.SERVER)
    server.receive_data(request)
    head = server.next_event()
    check_upgrade(head.method, head.http_version, head.headers)
    assert subprotocols(head.headers) == ["rt.v1.msgpack", "bearer.x"]
    client.receive_data(accept_response(head.headers, "rt.v1.msgpack"))
    [accepted] = client.events()
    assert isinstance(accepted, AcceptConnection) and accepted.subprotocol == "rt.v1.msgpack"
