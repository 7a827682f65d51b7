"""TLS on the listener's port: ``wss://`` and ``https://`` beside nothing else.

With ``server.tls_cert_file`` and ``tls_key_file`` set, every accepted connection is TLS
(1.2 or 1.3, ALPN ``http/1.1``); with ``server.tls_client_ca_file`` too, a client must
present a certificate that CA signed (mutual TLS between services). A plain HTTP request
to the port is answered ``400`` in plain text, saying so, and closed.

How frames are encrypted: each connection's TLS state is an ``ssl.SSLObject`` over two
memory buffers (``TlsSocket``), not an ``ssl.SSLSocket``. The fast path stays what it is
for plain sockets (the writer's one non-blocking write per connection per tick, the
parking's epoll, the listener's request reading): ``TlsSocket`` answers the calls they
make of a socket (``send``, ``recv``, ``fileno``, ``shutdown``, ``close``), encrypting all
the frames one flush joins into as few records as fit, once per connection (a broadcast is
framed once per wire, encrypted once per recipient: the keys are the connection's). What
the kernel does not take at once waits, encrypted, in ``unsent``; nothing is encrypted
twice and frames stay whole. An ``SSLSocket`` would need a write that blocked to be
retried with the same bytes, which a queue that keeps growing cannot promise.

``ServerTls.reload`` (SIGHUP) reads the files again: connections accepted afterwards use
the new certificate; those already open keep theirs.
"""

from __future__ import annotations

import socket
import ssl
import time

import structlog
import trio
from cryptography import x509

from rtserver.backends.config import ConfigError, ServerConfig

log = structlog.get_logger("rtserver.tls")

#: The content type of a TLS handshake record: the first byte a TLS client sends.
HANDSHAKE_RECORD = 0x16
#: What a plain HTTP request to the TLS port is answered.
PLAIN_HTTP_REFUSAL = b"this port speaks TLS: use https:// or wss:// to reach it"
PLAIN_HTTP_REFUSED = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
                      b"connection: close\r\n\r\n%s" % (len(PLAIN_HTTP_REFUSAL), PLAIN_HTTP_REFUSAL))
_RAW_READ = 65536


class ServerTls:
    """The listener's TLS context, from ``server.tls_*`` (see the module)."""

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        try:
            self.context, self.not_after = self._load()
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise ConfigError(f"server.tls_*: cannot load {self._files()}: {exc}") from None

    def _files(self) -> str:
        cfg = self._config
        return ", ".join(path for path in (cfg.tls_cert_file, cfg.tls_key_file, cfg.tls_client_ca_file) if path)

    def _load(self) -> tuple[ssl.SSLContext, float]:
        """The context, and when the certificate served expires (its ``notAfter``, s since the
        epoch: ``rt_tls_certificate_expiry_timestamp_seconds``)."""
        cfg = self._config
        with open(cfg.tls_cert_file, "rb") as chain:
            leaf = x509.load_pem_x509_certificate(chain.read())  # the first of the chain
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
        context.set_alpn_protocols(["http/1.1"])
        if cfg.tls_client_ca_file:
            context.load_verify_locations(cfg.tls_client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        return context, leaf.not_valid_after_utc.timestamp()

    def reload(self) -> bool:
        """Read the files again; on failure keep serving the certificate loaded before
        (logged). Whether the new one is served now."""
        try:
            self.context, self.not_after = self._load()
        except (OSError, ValueError, ssl.SSLError) as exc:
            log.error("tls_reload_failed", files=self._files(), error=str(exc))
            return False
        log.info("tls_reloaded", files=self._files(), expires_in_days=round((self.not_after - time.time()) / 86400, 1))
        return True


def client_context(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """A client's context for a node on TLS: trusting ``ca_file`` (empty: the system's
    CAs), presenting ``cert_file`` (and ``key_file``, unless in it) to a node that asks."""
    context = ssl.create_default_context(cafile=ca_file or None)
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


class TlsSocket:
    """The server side of one TLS connection, used where the fast path uses a plain
    non-blocking socket (see the module): ``send`` and ``recv`` take and give plaintext."""

    __slots__ = ("_sock", "_tls", "_incoming", "_outgoing", "_unsent", "_peeked")

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        #: Encrypted bytes the kernel has not taken yet (sent before anything else).
        self._unsent = b""
        #: Plaintext a ``MSG_PEEK`` read returned, given again by the next ``recv``.
        self._peeked = b""

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    @property
    def raw(self) -> socket.socket:
        """The TCP socket under it."""
        return self._sock

    @property
    def unsent(self) -> int:
        """Encrypted bytes waiting for the socket to take them."""
        return len(self._unsent)

    @property
    def buffered(self) -> bool:
        """Whether ``recv`` may have something without the socket being readable: records
        read from it and not yet decrypted, or decrypted and not yet returned. (OpenSSL
        takes a record's first part from ``_incoming`` as it waits for the rest.)"""
        return bool(self._peeked) or self._tls.pending() > 0 or self._incoming.pending > 0

    def selected_alpn_protocol(self) -> str | None:
        return self._tls.selected_alpn_protocol()

    async def handshake(self) -> None:
        """Complete the server side of the handshake (bound it with a cancel scope). Raises
        ``ssl.SSLError`` when refused (its alert is sent), ``ConnectionError`` when the
        client leaves."""
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._send_all_unsent()
                await trio.lowlevel.wait_readable(self._sock)
                try:
                    raw = self._sock.recv(_RAW_READ)
                except BlockingIOError:
                    continue
                if not raw:
                    raise ConnectionError("the client left during the TLS handshake") from None
                self._incoming.write(raw)
            except ssl.SSLError:
                self._unsent += self._outgoing.read()  # the alert that says why
                try:
                    self._send_unsent()
                except OSError:
                    pass
                raise
        await self._send_all_unsent()

    def recv(self, max_bytes: int, flags: int = 0) -> bytes:
        """As ``socket.recv`` on a non-blocking socket: plaintext; ``BlockingIOError`` while
        no whole record has arrived; ``b""`` at the client's close_notify; ``OSError`` (an
        ``ssl.SSLError``) on a broken or forged stream. ``MSG_PEEK`` is the only flag."""
        if self._peeked:
            data = self._peeked[:max_bytes]
            if not flags & socket.MSG_PEEK:
                self._peeked = self._peeked[len(data):]
            return data
        while True:
            try:
                data = self._tls.read(max_bytes)
            except ssl.SSLWantReadError:
                raw = self._sock.recv(_RAW_READ)  # BlockingIOError: nothing more for now
                if raw:
                    self._incoming.write(raw)
                else:
                    self._incoming.write_eof()  # the next read raises SSLEOFError: no close_notify
                continue
            except ssl.SSLZeroReturnError:
                return b""
            if self._outgoing.pending:  # a post-handshake answer (a key update)
                self._unsent += self._outgoing.read()
                self._send_unsent()
            if flags & socket.MSG_PEEK:
                self._peeked = data
            return data

    def send(self, data: bytes | memoryview) -> int:
        """Encrypt all of ``data`` and write what the socket takes: returns ``len(data)``,
        the rest of its records waiting in ``unsent``. ``BlockingIOError`` (nothing taken)
        while records of an earlier ``send`` still wait; ``OSError`` when the socket broke."""
        if self._unsent:
            self._send_unsent()
            if self._unsent:
                raise BlockingIOError
        if data:
            self._tls.write(data)
        self._unsent = self._outgoing.read()
        if self._unsent:
            self._send_unsent()
        return len(data)

    def flush(self) -> None:
        """Write what waits in ``unsent``; ``BlockingIOError`` if the socket did not take it all."""
        self.send(b"")

    def shutdown(self, how: int) -> None:
        """Send close_notify (best effort), then shut the TCP socket down. ``recv`` still
        reads the client's last records until its own close_notify or EOF."""
        try:
            self._tls.unwrap()
        except ssl.SSLError:
            pass  # sent; the client's close_notify has not come (it does not have to)
        self._unsent += self._outgoing.read()
        try:
            self._send_unsent()
        except OSError:
            pass
        self._sock.shutdown(how)

    def _send_unsent(self) -> None:
        try:
            sent = self._sock.send(self._unsent)
        except BlockingIOError:
            return
        self._unsent = self._unsent[sent:]

    async def _send_all_unsent(self) -> None:
        self._unsent += self._outgoing.read()
        while self._unsent:
            self._send_unsent()
            if self._unsent:
                await trio.lowlevel.wait_writable(self._sock)
