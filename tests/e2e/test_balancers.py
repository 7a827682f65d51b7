"""The shipped balancer configurations (config/nginx, config/haproxy), each in front of three
``rtserver serve`` processes on Redis: clients and the publisher connect only through the
balancer; one node is killed (SIGKILL, no drain) while events flow; its clients come back
through the balancer, land on the others and resume from their cursors, with nothing lost
and nothing twice."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from rtserver.backends.auth import mint_token
from rtserver.client import Closed, open_client
from tests.support.net import free_port, wait_port
from tests.support.nodes import SECRET
from tests.support.redis_servers import flush_redis

ROOT = Path(__file__).resolve().parents[2]
NODES = 3
CLIENTS = 12
EVENTS = 200
NODE_LINE = re.compile(r"node-(\d):8080")


def nginx(folder: Path, listen: int, ports: list[int]) -> list[str]:
    """The shipped server block, its upstreams these ports, inside a minimal nginx.conf."""
    shipped = (ROOT / "config/nginx/rtserver.conf").read_text()
    site = NODE_LINE.sub(lambda m: f"127.0.0.1:{ports[int(m[1]) - 1]}", shipped)
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    (folder / "rtserver.conf").write_text(site)
    temp = "\n".join(f"    {kind}_temp_path {folder}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (folder / "nginx.conf").write_text(
        f"daemon off;\nmaster_process off;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log warn;\n"
        f"events {{ worker_connections 1024; }}\nhttp {{\n{temp}\n    access_log off;\n"
        f"    include {folder}/rtserver.conf;\n}}\n")
    return [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(folder), "-c", str(folder / "nginx.conf"),
            "-e", str(folder / "error.log")]


def haproxy(folder: Path, listen: int, ports: list[int]) -> list[str]:
    """The shipped configuration, its servers these ports."""
    shipped = (ROOT / "config/haproxy/haproxy.cfg").read_text()
    config = NODE_LINE.sub(lambda m: f"127.0.0.1:{ports[int(m[1]) - 1]}", shipped)
    config = config.replace("bind :80", f"bind 127.0.0.1:{listen}")
    (folder / "haproxy.cfg").write_text(config)
    return ["haproxy", "-db", "-f", str(folder / "haproxy.cfg")]


@contextmanager
def running(command: list[str], log: Path):
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_the_shipped_configurations_are_valid(tmp_path):
    ports = [free_port() for _ in range(NODES)]
    nginx_folder, haproxy_folder = tmp_path / "nginx", tmp_path / "haproxy"
    for folder in (nginx_folder, haproxy_folder):
        folder.mkdir()
    check = subprocess.run([*nginx(nginx_folder, free_port(), ports), "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    check = subprocess.run([*haproxy(haproxy_folder, free_port(), ports), "-c"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("balancer", [nginx, haproxy], ids=["nginx", "haproxy"])
async def test_a_node_killed_behind_the_balancer_loses_nothing_for_its_clients(balancer, redis_url, tmp_path):
    flush_redis(redis_url)
    config = tmp_path / "rt.toml"
    config.write_text(f'[auth]\nhs256_secret = "{SECRET}"\n[bus]\nredis_url = "{redis_url}"\n')
    ports, listen = [free_port() for _ in range(NODES)], free_port()
    nodes = [await trio.lowlevel.open_process(
        [sys.executable, "-m", "rtserver", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port in ports]
    try:
        for port in ports:
            await wait_port(port)
        folder = tmp_path / "balancer"
        folder.mkdir()
        with running(balancer(folder, listen, ports), tmp_path / "balancer.log"):
            await wait_port(listen)
            got, reconnects = await deliver_through(f"127.0.0.1:{listen}", kill=nodes[0])
    finally:
        for node in nodes:
            if node.returncode is None:
                node.kill()
            await node.wait()
    assert reconnects, "some clients were on the killed node and came back through the balancer"
    assert all(ids == list(range(EVENTS)) for ids in got), [ids[:5] for ids in got if ids != list(range(EVENTS))]


async def deliver_through(balancer: str, kill: trio.Process) -> tuple[list[list[int]], list[str]]:
    """``CLIENTS`` subscribers and the publisher, all through ``balancer``; ``kill`` is killed
    when a quarter of the events are out. What each client got, and who reconnected."""
    got: list[list[int]] = [[] for _ in range(CLIENTS)]
    reconnects: list[str] = []
    published = [0]

    async def subscriber(i: int, task_status=trio.TASK_STATUS_IGNORED) -> None:
        token = mint_token(SECRET, {"sub": f"u{i}", "healthUnitTaxId": "t1", "roles": ["attendant"]})
        cursor: str | None = None
        while len(got[i]) < EVENTS:
            try:
                async with open_client(f"ws://{balancer}/hub/ws", token) as client:
                    ack = await client.subscribe("professional:1", since=cursor)
                    if cursor is None:
                        task_status.started()
                    else:
                        assert ack["recovered"] is True
                        reconnects.append(f"u{i}")
                    async for evt in client.events():
                        got[i].append(int(evt["data"]["appointmentId"]))
                        cursor = client.cursor
                        if len(got[i]) == EVENTS:
                            return
            except* (Closed, ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError):
                pass  # the node died under it, or the balancer had not noticed yet
            await trio.sleep(0.1)  # as a real client, a pause before it reconnects

    async def publisher() -> None:
        service = mint_token(SECRET, {"sub": "svc", "roles": ["service"]})
        async with httpx.AsyncClient(base_url=f"http://{balancer}", headers={"authorization": f"Bearer {service}"},
                                     timeout=5) as http:
            for i in range(EVENTS):
                body = {"event": "appointment.created", "tenant": "t1", "rooms": ["professional:1"],
                        "id": f"ev-{i}", "data": {"appointmentId": str(i)}}
                while True:  # a publish the killed node took may be retried: its id makes it once
                    try:
                        if (await http.post("/v1/publish", json=body)).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.05)
                published[0] = i + 1
                if published[0] == EVENTS // 4:
                    kill.kill()
                await trio.sleep(0.01)

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for i in range(CLIENTS):
                await nursery.start(subscriber, i)
            nursery.start_soon(publisher)
    return got, reconnects
