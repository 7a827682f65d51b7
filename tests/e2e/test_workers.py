"""``rtserver serve --workers N``: N processes on one port (``SO_REUSEPORT``) sharing the
Redis bus, each with its own metrics port; a worker killed with SIGKILL is started again
while its clients resume on the others; SIGTERM drains them all."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from rtserver.client import open_client
from tests.support.events import appointment
from tests.support.metrics import scraped
from tests.support.net import free_port, free_ports_in_a_row, wait_port
from tests.support.nodes import SECRET, Server
from tests.support.redis_servers import flush_redis
from tests.support.tls import TlsFiles

CLIENTS = 16
TOTAL = 60


class Workers:
    """``rtserver serve --workers 2`` and the JSON lines it (and its workers) log."""

    def __init__(self, tmp_path, redis_url: str, server: str = "") -> None:
        """``server``: more keys of the ``[server]`` section."""
        self.port, self.metrics_port = free_port(), free_ports_in_a_row(2)
        config = tmp_path / "rt.toml"
        config.write_text(f'[auth]\nhs256_secret = "{SECRET}"\n[server]\nworker_metrics_port = {self.metrics_port}\n'
                          f'drain_deadline_s = 5.0\n{server}')
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rtserver", "serve", "--config", str(config), "--port", str(self.port),
             "--workers", "2", "--redis-url", redis_url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith("{"):
                self.lines.append(json.loads(line))

    def logged(self, event: str) -> list[dict]:
        return [line for line in self.lines if line["event"] == event]

    def started(self) -> list[dict]:
        return self.logged("worker_started")

    async def connections(self, worker: int) -> float:
        return await scraped(f"http://127.0.0.1:{self.metrics_port + worker}", "rt_connections",
                             ns="hub", transport="websocket")


async def follow(url: str, token: str, got: list[int], subscribed: trio.Event | None) -> None:
    """A client of ``professional:1`` that reconnects (to any worker) with its cursor
    whenever its connection ends, until it has every event."""
    cursor = None
    while len(got) < TOTAL:
        try:
            async with open_client(url, token) as client:
                ack = await client.subscribe("professional:1", since=cursor)
                assert cursor is None or ack["recovered"] is True
                if subscribed is not None:
                    subscribed.set()
                    subscribed = None
                async for evt in client.events():
                    got.append(int(evt["data"]["appointmentId"]))
                    if len(got) == TOTAL:
                        return
                cursor = client.cursor
        except (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError):  # its worker died meanwhile
            await trio.sleep(0.1)


async def test_two_workers_share_the_port_and_one_killed_is_restarted_while_its_clients_resume(
        tmp_path, redis_url):
    flush_redis(redis_url)
    workers = Workers(tmp_path, redis_url)
    server = Server(node=None, port=workers.port)
    try:
        with trio.fail_after(60):
            for worker in (0, 1):
                try:
                    await wait_port(workers.metrics_port + worker)
                except trio.TooSlowError:  # say why, from what the supervisor logged
                    raise AssertionError(f"worker {worker} never listened; logged: {workers.lines[-20:]}") from None
            received = [[] for _ in range(CLIENTS)]
            async with trio.open_nursery() as nursery:
                for got in received:
                    subscribed = trio.Event()
                    nursery.start_soon(follow, f"ws://127.0.0.1:{workers.port}/hub/ws", server.token(), got,
                                       subscribed)
                    await subscribed.wait()
                assert all([await workers.connections(worker) > 0 for worker in (0, 1)])  # clients on both
                first = {line["worker"]: line["pid"] for line in workers.started()}
                bodies = [appointment(i) for i in range(TOTAL)]
                await server.publish_all(bodies[:TOTAL // 3])
                subprocess.run(["kill", "-9", str(first[0])], check=True)  # no drain, no close frame
                await server.publish_all(bodies[TOTAL // 3:])
            assert all(got == list(range(TOTAL)) for got in received)  # every event to every client, once
            while len(workers.started()) < 3:  # worker 0 again, a new process
                await trio.sleep(0.05)
            assert workers.started()[-1]["worker"] == 0 and workers.started()[-1]["pid"] != first[0]
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"http://127.0.0.1:{workers.metrics_port}/metrics")).status_code == 200
    finally:
        workers.process.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(lambda: workers.process.wait(30)) == 0  # every worker drained


async def test_sighup_has_every_worker_read_its_tls_certificate_again(tmp_path, redis_url):
    files = TlsFiles(tmp_path)
    workers = Workers(tmp_path, redis_url, f'tls_cert_file = "{files.cert_file}"\ntls_key_file = "{files.key_file}"\n')
    try:
        with trio.fail_after(30):
            while len(workers.started()) < 2:
                await trio.sleep(0.05)
        workers.process.send_signal(signal.SIGHUP)
        with trio.fail_after(10):
            while len(workers.logged("tls_reloaded")) < 2:
                await trio.sleep(0.05)
        assert workers.process.poll() is None  # SIGHUP stopped nothing
    finally:
        workers.process.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(lambda: workers.process.wait(30)) == 0


def test_more_than_one_worker_without_redis_is_refused_with_why(tmp_path):
    config = tmp_path / "rt.toml"
    config.write_text(f'[auth]\nhs256_secret = "{SECRET}"\n')
    done = subprocess.run([sys.executable, "-m", "rtserver", "serve", "--config", str(config), "--workers", "2"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "server.workers above 1 needs bus.redis_url" in done.stderr
