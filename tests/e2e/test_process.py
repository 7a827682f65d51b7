"""``rtserver serve`` as a process: the CLI, the README tour, and SIGTERM draining."""

import collections
import json
import signal
import subprocess
import sys

import pytest
import trio
import wsproto
from wsproto.events import CloseConnection, Request, TextMessage

from rtserver.client import open_client
from tests.support.net import free_port, wait_port
from tests.support.nodes import SECRET


@pytest.fixture
def config_file(tmp_path, request):
    """The configuration; ``drain_batch`` is 2 unless the test parametrizes it (indirect)."""
    path = tmp_path / "rt.toml"
    path.write_text(f'[auth]\nhs256_secret = "{SECRET}"\n[server]\ndrain_deadline_s = 10.0\n'
                    f'drain_batch = {getattr(request, "param", 2)}\ndrain_pace_ms = 20\n')
    return path


def cli(*args, config_file) -> str:
    return subprocess.run([sys.executable, "-m", "rtserver", *args, "--config", str(config_file)],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
async def serve(config_file):
    port = free_port()
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "rtserver", "serve", "--config", str(config_file), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_port(port)
        yield proc, port
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_the_readme_tour_mint_connect_publish_see(serve, config_file):
    _, port = serve
    token = cli("token", "--sub", "u1", "--tenant", "t1", "--roles", "attendant", config_file=config_file)
    async with open_client(f"ws://127.0.0.1:{port}/hub/ws", token) as client:
        result = await trio.to_thread.run_sync(lambda: cli(
            "publish", "--port", str(port), "--event", "appointment.created", "--tenant", "t1",
            "--rooms", "tenant:t1", "--data", '{"appointmentId":"a1"}', config_file=config_file))
        assert json.loads(result)["cursor"]
        with trio.fail_after(5):
            evt = await client.next_event()
    assert evt["data"] == {"appointmentId": "a1"} and evt["room"] == "tenant:t1"


def test_publish_errors_are_reported_by_the_cli(config_file):
    with pytest.raises(subprocess.CalledProcessError) as info:
        cli("publish", "--url", "http://127.0.0.1:1", "--event", "x", "--tenant", "t1", "--rooms", "a:b",
            config_file=config_file)
    assert info.value.returncode != 0


def test_an_unknown_config_key_stops_the_server_with_its_name(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nprot = 1\n")
    result = subprocess.run([sys.executable, "-m", "rtserver", "serve", "--config", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "prot" in result.stderr


async def drain_codes(proc, port: int, token: str, clients: int) -> list[int | None]:
    """Connect ``clients`` WebSockets, SIGTERM the node, and return the close code each
    got once the process exited (with 0)."""
    codes: list[int | None] = []

    async def hold(task_status=trio.TASK_STATUS_IGNORED):
        codes.append(await held_connection(port, token, task_status=task_status))

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                await nursery.start(hold)
            proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
    return codes


async def test_sigterm_drains_clients_with_the_draining_code_and_exits_zero(serve, config_file):
    proc, port = serve
    token = cli("token", "--sub", "u1", "--tenant", "t1", config_file=config_file)
    assert await drain_codes(proc, port, token, 5) == [4000] * 5
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_two_serve_processes_share_redis(config_file, redis_url):
    import redis as sync_redis

    sync_redis.Redis.from_url(redis_url).flushall()
    ports = [free_port(), free_port()]
    procs = [await trio.lowlevel.open_process(
        [sys.executable, "-m", "rtserver", "serve", "--config", str(config_file), "--port", str(port),
         "--redis-url", redis_url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port in ports]
    try:
        for port in ports:
            await wait_port(port)
        token = cli("token", "--sub", "u1", "--tenant", "t1", config_file=config_file)
        async with open_client(f"ws://127.0.0.1:{ports[0]}/hub/ws", token) as client:
            result = await trio.to_thread.run_sync(lambda: cli(
                "publish", "--port", str(ports[1]), "--event", "appointment.created", "--tenant", "t1",
                "--rooms", "tenant:t1", "--data", '{"appointmentId":"via-b"}', config_file=config_file))
            assert json.loads(result)["cursor"]
            with trio.fail_after(10):
                evt = await client.next_event()
        assert evt["data"] == {"appointmentId": "via-b"}
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        with trio.fail_after(25):
            assert [await proc.wait() for proc in procs] == [0, 0]


async def test_a_node_killed_while_events_flow_loses_nothing_for_its_clients(config_file, redis_url):
    import httpx
    import redis as sync_redis

    sync_redis.Redis.from_url(redis_url).flushall()
    ports = [free_port() for _ in range(3)]
    procs = [await trio.lowlevel.open_process(
        [sys.executable, "-m", "rtserver", "serve", "--config", str(config_file), "--port", str(port),
         "--redis-url", redis_url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port in ports]
    a, b, c = ports
    try:
        for port in ports:
            await wait_port(port)
        token = cli("token", "--sub", "u1", "--tenant", "t1", config_file=config_file)
        service = cli("token", "--sub", "svc", "--roles", "service", config_file=config_file)
        total, got = 300, []

        async def publish_through_b():
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{b}",
                                         headers={"authorization": f"Bearer {service}"}) as http:
                for i in range(total):
                    r = await http.post("/v1/publish", json={
                        "event": "appointment.created", "tenant": "t1", "rooms": ["professional:1"],
                        "data": {"appointmentId": str(i)}})
                    assert r.status_code == 200
                    await trio.sleep(0.005)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                async with open_client(f"ws://127.0.0.1:{a}/hub/ws", token) as client:
                    await client.subscribe("professional:1")
                    nursery.start_soon(publish_through_b)
                    while len(got) < 100:
                        got.append(int((await client.next_event())["data"]["appointmentId"]))
                    procs[0].kill()  # SIGKILL: no drain, no close frame
                    async for evt in client.events():  # whatever was already on its way
                        got.append(int(evt["data"]["appointmentId"]))
                    cursor = client.cursor
                async with open_client(f"ws://127.0.0.1:{c}/hub/ws", token) as client:
                    ack = await client.subscribe("professional:1", since=cursor)
                    assert ack["recovered"] is True
                    while len(got) < total:
                        got.append(int((await client.next_event())["data"]["appointmentId"]))
        assert got == list(range(total))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def held_connection(port: int, token: str, task_status=trio.TASK_STATUS_IGNORED) -> int | None:
    """A WebSocket client (wsproto on a plain stream) that waits for its hello, reports
    started, then reads until the server closes; the close code it got (None: none)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(client.send(Request(host="127.0.0.1", target="/hub/ws",
                                              extra_headers=[("authorization", f"Bearer {token}")])))
    started = False
    async with stream:
        while True:
            data = await stream.receive_some(65536)
            client.receive_data(data or None)
            for event in client.events():
                if isinstance(event, CloseConnection):
                    return event.code
                if isinstance(event, TextMessage) and not started:
                    started = True
                    task_status.started()
            if not data:
                return None


@pytest.mark.parametrize("config_file", [500], indirect=True)
async def test_drain_closes_2000_clients_each_with_its_close_frame(serve, config_file):
    proc, port = serve
    token = cli("token", "--sub", "u1", "--tenant", "t1", "--roles", "attendant", config_file=config_file)
    codes = await drain_codes(proc, port, token, 2000)
    assert len(codes) == 2000 and set(codes) == {4000}, collections.Counter(codes)
