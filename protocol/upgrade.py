"""What a WebSocket upgrade request must be (RFC 6455 §4.2.1), checked before any
handshake code sees it: a refusal names the fault and the status to answer it with."""

from __future__ import annotations

import base64
import binascii
import hashlib

#: The only WebSocket version (``Sec-WebSocket-Version``) a server speaks.
WEBSOCKET_VERSION = b"13"
#: What RFC 6455 §1.3 appends to the client's key before hashing it into the accept token.
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class UpgradeRefused(Exception):
    """The request is not an acceptable upgrade: answer ``status`` with ``message`` (and
    ``headers``: what an ``426 Upgrade Required`` must name)."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _tokens(headers: list[tuple[bytes, bytes]], name: bytes) -> set[bytes]:
    """The comma-separated tokens of every ``name`` header, lower-cased."""
    return {token.strip().lower() for value in (v for k, v in headers if k == name) for token in value.split(b",")}


def check_upgrade(method: bytes, http_version: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """Raise ``UpgradeRefused`` unless this request head (``headers`` with lower-case
    names, as h11 gives them) asks for a WebSocket as RFC 6455 requires."""
    if method != b"GET" or http_version != b"1.1":
        raise UpgradeRefused(400, "a WebSocket upgrade is an HTTP/1.1 GET")
    if b"websocket" not in _tokens(headers, b"upgrade"):
        raise UpgradeRefused(426, "this path serves WebSocket upgrades only",
                             ((b"upgrade", b"websocket"), (b"connection", b"Upgrade")))
    if b"upgrade" not in _tokens(headers, b"connection"):
        raise UpgradeRefused(400, "a WebSocket upgrade needs 'Connection: Upgrade'")
    versions = [v for k, v in headers if k == b"sec-websocket-version"]
    if versions != [WEBSOCKET_VERSION]:
        raise UpgradeRefused(426, "Sec-WebSocket-Version must be 13",
                             ((b"sec-websocket-version", WEBSOCKET_VERSION),))
    keys = [v for k, v in headers if k == b"sec-websocket-key"]
    if len(keys) != 1:
        raise UpgradeRefused(400, "a WebSocket upgrade needs one Sec-WebSocket-Key")
    try:
        nonce = base64.b64decode(keys[0].strip(), validate=True)
    except (binascii.Error, ValueError):
        nonce = b""
    if len(nonce) != 16:
        raise UpgradeRefused(400, "Sec-WebSocket-Key must be 16 bytes in base64")


def subprotocols(headers: list[tuple[bytes, bytes]]) -> list[str]:
    """The subprotocols the client offers (``Sec-WebSocket-Protocol``), in its order."""
    return [token.strip().decode("latin-1") for k, v in headers if k == b"sec-websocket-protocol"
            for token in v.split(b",") if token.strip()]


def offers_deflate(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the client offers permessage-deflate (RFC 7692) in a form this server takes:
    one of its offers (``Sec-WebSocket-Extensions``) whose parameters are well formed and
    leave the server its full window (no ``server_max_window_bits`` under 15). The server
    answers ``PERMESSAGE_DEFLATE``: no context takeover either way, so each message is
    compressed on its own (a broadcast once for every recipient) and no connection keeps a
    compression window. An offer it does not take is declined, as RFC 7692 lets it."""
    offers = b",".join(v for k, v in headers if k == b"sec-websocket-extensions")
    return any(_deflate_offer_taken(offer) for offer in offers.split(b","))


#: The ``Sec-WebSocket-Extensions`` answer to an offer ``offers_deflate`` takes.
PERMESSAGE_DEFLATE = b"permessage-deflate; server_no_context_takeover; client_no_context_takeover"
_FLAGS = (b"server_no_context_takeover", b"client_no_context_takeover")
_WINDOW_BITS = (b"server_max_window_bits", b"client_max_window_bits")


def _deflate_offer_taken(offer: bytes) -> bool:
    name, *params = offer.split(b";")
    if name.strip().lower() != b"permessage-deflate":
        return False
    seen = set()
    for param in params:
        key, has_value, value = param.partition(b"=")
        key, value = key.strip().lower(), value.strip()
        if len(value) >= 2 and value[:1] == value[-1:] == b'"':
            value = value[1:-1]
        if key in seen:
            return False
        seen.add(key)
        if key in _FLAGS:
            if has_value:
                return False
        elif key in _WINDOW_BITS:
            if has_value and not (value.isdigit() and len(value) <= 2 and 8 <= int(value) <= 15):
                return False
            if key == b"server_max_window_bits" and (not has_value or int(value) < 15):
                return False
        else:
            return False
    return True


def accept_response(headers: list[tuple[bytes, bytes]], subprotocol: str | None, deflate: bool = False) -> bytes:
    """The ``101 Switching Protocols`` answer to a request ``check_upgrade`` accepted,
    choosing ``subprotocol`` (None: none) and, with ``deflate``, permessage-deflate
    (``offers_deflate``)."""
    key = next(v for k, v in headers if k == b"sec-websocket-key").strip()
    token = base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest())
    chosen = b"Sec-WebSocket-Protocol: %s\r\n" % subprotocol.encode() if subprotocol else b""
    if deflate:
        chosen += b"Sec-WebSocket-Extensions: %s\r\n" % PERMESSAGE_DEFLATE
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: %s\r\n%s\r\n" % (token, chosen))
