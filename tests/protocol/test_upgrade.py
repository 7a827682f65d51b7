"""The WebSocket accept answer (RFC 6455 §4.2.2), computed without a handshake library, and
the permessage-deflate offers it takes (RFC 7692)."""

import h11
import pytest
import wsproto
from hypothesis import given
from hypothesis import strategies as st
from wsproto.events import AcceptConnection, Request
from wsproto.extensions import PerMessageDeflate

from protocol.upgrade import accept_response, check_upgrade, offers_deflate, subprotocols

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


def test_a_real_client_offering_deflate_gets_it_with_no_context_takeover_both_ways():
    offered = PerMessageDeflate(client_max_window_bits=12)  # wsproto's offer, as a client sends it
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    request = client.send(Request(host="example.org", target="/hub/ws", extensions=[offered]))
    server = h11.Connection(h11.SERVER)
    server.receive_data(request)
    head = server.next_event()
    assert offers_deflate(head.headers)
    client.receive_data(accept_response(head.headers, None, deflate=True))
    [accepted] = client.events()
    assert isinstance(accepted, AcceptConnection)
    assert offered.server_no_context_takeover and offered.client_no_context_takeover


@pytest.mark.parametrize(("offer", "taken"), [
    (b"permessage-deflate", True),
    (b"permessage-deflate; client_max_window_bits", True),  # browsers' offer
    (b'permessage-deflate; client_max_window_bits="15"; server_no_context_takeover', True),
    (b"permessage-deflate;server_max_window_bits=15", True),
    (b"permessage-deflate; server_max_window_bits=10", False),  # our window is the full one
    (b"permessage-deflate; server_max_window_bits=10, permessage-deflate", True),  # its fallback
    (b"permessage-deflate; server_max_window_bits", False),  # a value is required
    (b"permessage-deflate; client_max_window_bits=16", False),
    (b"permessage-deflate; client_no_context_takeover=1", False),
    (b"permessage-deflate; client_no_context_takeover; client_no_context_takeover", False),
    (b"permessage-deflate; x-unknown", False),
    (b"x-webkit-deflate-frame", False),
])
def test_the_deflate_offers_taken_are_those_rfc_7692_allows_with_our_full_window(offer, taken):
    assert offers_deflate([(b"sec-websocket-extensions", offer)]) is taken


@given(st.lists(st.binary(max_size=200), max_size=4))
def test_any_extensions_header_is_read_without_error(values):
    offers_deflate([(b"sec-websocket-extensions", value) for value in values])
