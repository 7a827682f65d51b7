"""TLS on the node's port (``server.tls_*``): every transport over it, mutual TLS, the
refusals, a certificate reloaded on SIGHUP, and frames whole through a full socket."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys

import httpx
import pytest
import trio
import trustme
import wsproto
from wsproto.events import AcceptConnection, Request, TextMessage

from rtserver.backends.tls import TlsSocket
from rtserver.client import Closed, open_client
from rtserver.node import Node
from tests.support.events import appointment
from tests.support.http_clients import open_sse, poll
from tests.support.metrics import metric_value, scraped
from tests.support.net import free_port
from tests.support.nodes import SECRET, Server, server_config
from tests.support.tls import TlsFiles


class TlsServer(Server):
    """A node on TLS (``verify``: a client context trusting its CA)."""

    @property
    def http(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def ws(self, ns: str = "hub") -> str:
        return f"wss://127.0.0.1:{self.port}/{ns}/ws"


@pytest.fixture
def tls_files(tmp_path) -> TlsFiles:
    return TlsFiles(tmp_path)


async def start_tls_node(nursery, files: TlsFiles, **server) -> TlsServer:
    node = Node(server_config(server=files.server_section(**server)))
    return TlsServer(node, await nursery.start(node.run), files.client_context())


async def test_websocket_sse_poll_publish_and_pages_over_tls(nursery, tls_files):
    server = await start_tls_node(nursery, tls_files)
    context = server.verify
    before = (await server.publish(appointment(0))).json()["cursor"]
    async with open_client(server.ws(), server.token(), ssl_context=context) as client:
        await client.subscribe("professional:1")
        async with open_sse(server.http, server.token(), verify=context, rooms="professional:1") as sse:
            assert sse.response.status_code == 200
            published = await server.publish(appointment(1))
            assert published.status_code == 200
            with trio.fail_after(10):
                evt = await client.next_event()
                streamed = await sse.next_event()
        assert evt["data"] == streamed.data["data"] == {"appointmentId": "1"}
    async with httpx.AsyncClient(base_url=server.http, verify=context) as http:
        answered = await poll(http, server.token(), rooms="professional:1", since=before)
        page = await http.get("/")  # served by the HTTP app, over the same TLS connection kind
        healthz = await http.get("/healthz")
        expiry = await scraped(server.http, "rt_tls_certificate_expiry_timestamp_seconds", verify=context)
    assert [e["data"] for e in answered.json()["events"]] == [{"appointmentId": "1"}]
    assert answered.json()["cursor"] == published.json()["cursor"]
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert healthz.status_code == 200
    assert expiry == tls_files.not_after


async def test_drain_tells_tls_clients_its_close_code_over_tls(nursery, tls_files):
    """SIGTERM's drain on a node on TLS: each client reads its close frame (4000, resume)
    before the connection closes: the frame written, then close_notify."""
    server = await start_tls_node(nursery, tls_files)
    async with open_client(server.ws(), server.token(), ssl_context=server.verify) as ws_client, \
            open_sse(server.http, server.token(), verify=server.verify) as sse:
        await sse.next()
        nursery.start_soon(server.node.drain)
        with trio.fail_after(10):
            with pytest.raises(Closed) as closed:
                await ws_client.next_event()
            ended = await sse.next()
    assert closed.value.code == 4000
    assert ended.event == "close" and ended.data["code"] == 4000


async def test_a_plain_request_to_the_tls_port_is_told_to_use_https(nursery, tls_files):
    server = await start_tls_node(nursery, tls_files)
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{server.port}/healthz")
    assert answer.status_code == 400 and answer.text == "this port speaks TLS: use https:// or wss:// to reach it"


def handshake(port: int, context: ssl.SSLContext) -> None:
    """A TLS handshake with the node by the standard library's blocking client (which says
    why it gives up with an alert, as browsers do)."""
    with socket.create_connection(("127.0.0.1", port)) as raw:
        context.wrap_socket(raw, server_hostname="127.0.0.1").close()


async def test_a_client_that_does_not_trust_the_certificate_is_refused_and_counted(nursery, tls_files, tmp_path):
    server = await start_tls_node(nursery, tls_files)
    stranger = TlsFiles(tmp_path, "stranger").client_context()  # trusts another CA
    with pytest.raises(ssl.SSLCertVerificationError):
        await trio.to_thread.run_sync(handshake, server.port, stranger)
    with pytest.raises(httpx.ConnectError):  # this one leaves without an alert
        async with httpx.AsyncClient(verify=stranger) as http:
            await http.get(f"{server.http}/healthz")
    await trio.to_thread.run_sync(handshake, server.port, server.verify)
    failures = server.node.metrics.tls_handshake_failures
    with trio.fail_after(10):
        while (metric_value(failures, reason="server certificate refused") < 1
               or metric_value(failures, reason="client left") < 1):
            await trio.sleep(0.01)
    assert sum(metric_value(failures, reason=reason) for reason in
               ("server certificate refused", "client left", "other")) == 2


async def test_mutual_tls_admits_only_clients_with_a_certificate_of_its_ca(nursery, tls_files, tmp_path):
    clients_ca = trustme.CA()
    ca_file = tmp_path / "clients-ca.pem"
    clients_ca.cert_pem.write_to_path(str(ca_file))
    server = await start_tls_node(nursery, tls_files, tls_client_ca_file=str(ca_file))

    def presenting(ca: trustme.CA) -> ssl.SSLContext:
        context = tls_files.client_context()
        ca.issue_cert("publisher.internal").configure_cert(context)
        return context

    async with httpx.AsyncClient(verify=presenting(clients_ca)) as http:
        assert (await http.get(f"{server.http}/healthz")).status_code == 200
    server.verify = presenting(clients_ca)
    async with open_client(server.ws(), server.token(), ssl_context=server.verify) as client:
        await client.subscribe("professional:1")
        await server.expect_sentinel_next(client)
    for context in (tls_files.client_context(), presenting(trustme.CA())):  # none, or one of another CA
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            async with httpx.AsyncClient(verify=context) as http:
                await http.get(f"{server.http}/healthz")
    failures = server.node.metrics.tls_handshake_failures
    with trio.fail_after(10):
        while (metric_value(failures, reason="no client certificate") < 1
               or metric_value(failures, reason="client certificate refused") < 1):
            await trio.sleep(0.01)


async def logged_events(process: trio.Process, events: list[str]) -> None:
    """Append the ``event`` of each JSON line ``process`` logs to ``events``."""
    pending = b""
    while data := await process.stdout.receive_some():
        pending += data
        *lines, pending = pending.split(b"\n")
        events.extend(json.loads(line)["event"] for line in lines if line.startswith(b"{"))


async def get_healthz(server: TlsServer, context: ssl.SSLContext) -> int:
    async with httpx.AsyncClient(verify=context) as http:
        return (await http.get(f"{server.http}/healthz")).status_code


async def test_sighup_serves_a_new_certificate_and_keeps_open_connections(tmp_path, nursery):
    """A reload that fails keeps the certificate served; one that succeeds serves the new
    one to new connections, and the open ones stay."""
    first = TlsFiles(tmp_path, "first")
    config = tmp_path / "rt.toml"
    config.write_text(f'[auth]\nhs256_secret = "{SECRET}"\n[server]\ntls_cert_file = "{first.cert_file}"\n'
                      f'tls_key_file = "{first.key_file}"\n')
    port = free_port()
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "rtserver", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    events: list[str] = []
    nursery.start_soon(logged_events, proc, events)
    server = TlsServer(None, port, first.client_context())

    async def logged(event: str, count: int = 1) -> None:
        with trio.fail_after(20):
            while events.count(event) < count:
                await trio.sleep(0.02)

    try:
        await logged("listening")
        async with open_client(server.ws(), server.token(), ssl_context=server.verify) as held:
            await held.subscribe("professional:1")
            second = TlsFiles(tmp_path, "second")
            first.key_file.write_text("not a key")
            proc.send_signal(signal.SIGHUP)
            await logged("tls_reload_failed")
            assert await get_healthz(server, first.client_context()) == 200  # still the first
            for name in ("cert_file", "key_file"):
                getattr(first, name).write_bytes(getattr(second, name).read_bytes())
            proc.send_signal(signal.SIGHUP)
            await logged("tls_reloaded")
            assert await get_healthz(server, second.client_context()) == 200
            with pytest.raises(httpx.ConnectError):  # (its message is lost on the way, the metric says why)
                await get_healthz(server, first.client_context())
            server.verify = second.client_context()
            await server.expect_sentinel_next(held)  # the connection opened before is still served
    finally:
        proc.kill()
        await proc.wait()


def stalled_tls_client(port: int, token: str, context: ssl.SSLContext) -> tuple[ssl.SSLSocket, wsproto.WSConnection]:
    """A wss client of ``probe:1`` with a small receive buffer, its upgrade answered; it
    reads nothing more until told."""
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    raw.settimeout(20)
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host="127.0.0.1", target=f"/hub/ws?access_token={token}&rooms=probe:1")))
    while not any(isinstance(event, AcceptConnection) for event in ws.events()):
        ws.receive_data(sock.recv(65536))
    return sock, ws


def read_probes(sock: ssl.SSLSocket, ws: wsproto.WSConnection, count: int) -> list[int]:
    """Read until ``count`` probe events came; their sequence numbers, in order."""
    numbers, text = [], ""
    while True:
        for event in ws.events():
            if isinstance(event, TextMessage):
                text += event.data
                if event.message_finished:
                    frame, text = json.loads(text), ""
                    if frame.get("op") == "evt":
                        numbers.append(frame["data"]["s"])
        if len(numbers) >= count:
            break
        data = sock.recv(65536)
        assert data, f"the node closed after {len(numbers)} events"
        ws.receive_data(data)
    sock.close()
    return numbers


async def test_a_client_that_stops_reading_gets_every_frame_whole_and_in_order(nursery, tls_files):
    """Its socket fills: the node holds encrypted records back (``TlsSocket.unsent``) and
    writes them, then the rest, once it reads again."""
    server = await start_tls_node(nursery, tls_files)
    sock, ws = await trio.to_thread.run_sync(stalled_tls_client, server.port, server.token(), server.verify)
    count = 200  # 4 MB of events: far over the socket buffers, within the outbound budget
    await server.publish_all({"event": "rt.probe", "tenant": "t1", "rooms": ["probe:1"],
                              "data": {"s": i, "p": "x" * 20_000}} for i in range(count))
    assert any(type(q._sock) is TlsSocket and q.blocked for q in server.node.writer.queues)
    assert await trio.to_thread.run_sync(read_probes, sock, ws, count) == list(range(count))
