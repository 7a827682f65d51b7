"""Resident memory of a node process per idle WebSocket connection: plain, over TLS, and
with permessage-deflate negotiated, each mode a node process of its own (``rtserver
serve``), every client a user of its own, the clients in this process.

    .venv/bin/python bench/conn_rss.py [--clients 2000]

Unlike ``conn_memory.py`` (Python allocations by site), this counts what the kernel says
the node holds (``VmRSS``), OpenSSL's allocations included. The TLS node serves a
certificate of a test CA (trustme, ECDSA P-256); its clients negotiate TLS 1.3.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl

import stack  # noqa: F401 (puts the project on the path)
import trio
import trustme
import wsproto
from wsproto.events import Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from rtserver.backends.auth import mint_token
from stack import SECRET, stack as node_stack


def resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def open_client(port: int, user: str, context: ssl.SSLContext | None, deflate: bool) -> trio.abc.Stream:
    """A WebSocket client of ``user``, its hello received; kept open by the caller."""
    stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
    if context is not None:
        stream = trio.SSLStream(stream, context, server_hostname="127.0.0.1")
        await stream.do_handshake()
    token = mint_token(SECRET, {"sub": user, "healthUnitTaxId": "t1", "roles": ["attendant"]}, 3600)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(client.send(Request(host="127.0.0.1", target=f"/hub/ws?access_token={token}",
                                              extensions=[PerMessageDeflate()] if deflate else [])))
    while not any(isinstance(event, TextMessage) for event in client.events()):  # hello
        client.receive_data(await stream.receive_some(65536))
    return stream


async def measure(mode: str, clients: int) -> dict:
    ca = trustme.CA()
    toml, context = "", None
    if mode == "tls":
        folder = os.environ.get("TMPDIR", "/tmp")
        cert, key = os.path.join(folder, f"rss-cert-{os.getpid()}.pem"), os.path.join(folder, f"rss-key-{os.getpid()}.pem")
        issued = ca.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(cert)
        issued.private_key_pem.write_to_path(key)
        toml = f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'
        context = ssl.create_default_context()
        ca.configure_trust(context)
    elif mode == "deflate":
        toml = "permessage_deflate = true\n"
    async with node_stack([False], toml) as nodes:
        port, pid = nodes.ports[0], nodes.pids[0]
        held = [await open_client(port, f"warm{i}", context, mode == "deflate") for i in range(50)]
        await trio.sleep(1)
        before = resident_bytes(pid)
        held += [await open_client(port, f"u{i}", context, mode == "deflate") for i in range(clients)]
        await trio.sleep(2)
        after = resident_bytes(pid)
        for stream in held:
            await stream.aclose()
    return {"mode": mode, "clients": clients, "resident_kb_per_connection": round((after - before) / clients / 1024, 2)}


async def main(clients: int) -> None:
    for mode in ("plain", "tls", "deflate"):
        print(json.dumps(await measure(mode, clients)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    trio.run(main, parser.parse_args().clients)
