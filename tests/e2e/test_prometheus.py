"""The shipped monitoring (config/prometheus, config/grafana), proven with Debian's Prometheus:
promtool's checks and the alerts' unit tests, promtool's lint of a live ``/metrics``, and a
real Prometheus scraping two nodes, the outbox relay, the webhooks and the push dispatcher
under traffic, which answers every expression of the dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import trio
from prometheus_client import start_http_server

from rtserver.client import open_client
from rtserver.node import Node
from tests.support.net import free_port, wait_port
from tests.support.nodes import Server, server_config, wait_until
from tests.support.push_rig import FCM_TOKEN, start_rig
from tests.support.webhook_receiver import Receiver
from tests.support.webhooks import start_dispatcher, webhooks_config

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "config/prometheus"
DASHBOARD = ROOT / "config/grafana/rtserver.json"


def promtool(*args: str, cwd: Path = PROMETHEUS, stdin: str | None = None) -> None:
    answer = subprocess.run(["promtool", *args], cwd=cwd, input=stdin, capture_output=True, text=True)
    assert answer.returncode == 0, answer.stdout + answer.stderr


def test_the_configuration_and_rules_pass_promtool_and_every_alert_has_unit_tests():
    promtool("check", "config", "prometheus.yml")
    promtool("check", "rules", "rules.yml")
    promtool("test", "rules", "rules.test.yml")
    alerts = set(re.findall(r"- alert: (\w+)", (PROMETHEUS / "rules.yml").read_text()))
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "rules.test.yml").read_text()))
    assert alerts and alerts == tested


async def test_a_live_node_s_metrics_pass_promtool_s_lint_with_no_created_series(server):
    async with httpx.AsyncClient(base_url=server.http) as http:
        text = (await http.get("/metrics")).text
    promtool("check", "metrics", stdin=text)
    assert "_created" not in text


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]]


async def test_a_real_prometheus_scraping_every_process_answers_every_dashboard_expression(
        outbox, nursery, tmp_path, redis_url):
    rig = await start_rig(nursery, tmp_path, redis_url)  # a node with push on, and the push dispatcher
    second = Node(server_config(bus={"redis_url": redis_url}))
    nodes = [rig.server, Server(second, await nursery.start(second.run))]
    relay = outbox.relay()
    await nursery.start(relay.run)
    receiver = Receiver(script=[500])  # one failed attempt, then deliveries
    await nursery.start(receiver.serve)
    webhooks = await start_dispatcher(nursery, webhooks_config(redis_url, receiver))
    beside = {name: start_http_server(0, addr="127.0.0.1", registry=registry)[0] for name, registry in (
        ("relay", relay.metrics.registry), ("webhooks", webhooks.metrics.registry),
        ("push", rig.dispatcher.metrics.registry))}
    port = free_port()
    folder = configured(tmp_path / "prometheus", [f"127.0.0.1:{node.port}" for node in nodes],
                        {name: f"127.0.0.1:{server.server_port}" for name, server in beside.items()})
    promtool("check", "config", "prometheus.yml", cwd=folder)
    with open(tmp_path / "prometheus.log", "w") as log:
        prometheus = await trio.lowlevel.open_process(
            ["prometheus", f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        await wait_port(port)
        await traffic(rig, nodes, outbox)
        missing = await expressions_without_data(f"http://127.0.0.1:{port}", dashboard_expressions())
        assert missing == [], f"no data for {missing}; Prometheus said: {(tmp_path / 'prometheus.log').read_text()[-1500:]}"
        assert receiver.requests, "the webhooks were part of the traffic"
    finally:
        prometheus.terminate()
        await prometheus.wait()
        for server in beside.values():
            server.shutdown()


def configured(folder: Path, nodes: list[str], beside: dict[str, str]) -> Path:
    """The shipped configuration in ``folder``, scraping every second, its targets these."""
    shutil.copytree(PROMETHEUS, folder)
    config = folder / "prometheus.yml"
    config.write_text(config.read_text().replace("scrape_interval: 15s", "scrape_interval: 1s")
                      .replace("evaluation_interval: 15s", "evaluation_interval: 1s"))
    (folder / "targets/nodes.json").write_text(json.dumps([{"targets": nodes}]))
    for name, target in beside.items():
        (folder / f"targets/{name}.json").write_text(json.dumps([{"targets": [target]}]))
    return folder


async def traffic(rig, nodes: list[Server], outbox) -> None:
    """Something for every panel: staff on both nodes (presence), deliveries, a close, outbox
    rows, a webhook delivery after a failed attempt, a push notice after a failed attempt."""
    tokens = [node.token(f"staff-{i}", presenceGroups=["front-desk"]) for i, node in enumerate(nodes)]
    async with open_client(nodes[0].ws(), tokens[0]) as first, open_client(nodes[1].ws(), tokens[1]) as second:
        for client in (first, second):
            await client.subscribe("professional:1")
        async with open_client(nodes[1].ws(), nodes[1].token("leaves")):
            pass  # a normal close
        rig.fcm.script = [503]
        assert (await rig.register("portal", rig.patient_token(), "fcm", FCM_TOKEN)).status_code == 201
        await rig.appointment(rooms=("patient:p-111", "professional:1"))
        for client in (first, second):
            with trio.fail_after(10):
                assert (await client.next_event())["event"] == "appointment.created"
        await outbox.commit_rows(3)
        await wait_until(lambda: rig.fcm.messages)


async def expressions_without_data(prometheus: str, expressions: list[str], timeout: float = 60) -> list[str]:
    """The expressions Prometheus still answers with no series after ``timeout`` (each is
    asked until it has some)."""
    missing = list(expressions)
    async with httpx.AsyncClient(base_url=prometheus) as http:
        with trio.move_on_after(timeout):
            while missing:
                for expression in list(missing):
                    answer = (await http.get("/api/v1/query", params={"query": expression})).json()
                    assert answer["status"] == "success", (expression, answer)
                    if answer["data"]["result"]:
                        missing.remove(expression)
                await trio.sleep(0.5)
    return missing
