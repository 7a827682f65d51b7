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


def accept_response(headers: list[tuple[bytes, bytes]], subprotocol: str | None) -> bytes:
    """The ``101 Switching Protocols`` answer to a request ``check_upgrade`` accepted,
    choosing ``subprotocol`` (None: none) and no extension."""
    key = next(v for k, v in headers if k == b"sec-websocket-key").strip()
    token = base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest())
    chosen = b"Sec-WebSocket-Protocol: %s\r\n" % subprotocol.encode() if subprotocol else b""
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: %s\r\n%s\r\n" % (token, chosen))
