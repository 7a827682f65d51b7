"""The deployment files agree with the server and with each other: the docker-compose file,
the Kubernetes manifests, the balancers' and Prometheus' targets, and the Dockerfile name
the same ports, health paths, signals and drain deadline as the configuration's defaults.
(The balancer configurations themselves run in tests/e2e/test_balancers.py, Prometheus in
tests/e2e/test_prometheus.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from rtserver.backends.config import Config
from rtserver.backends.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"
PORT = 8080  # the container's port: the Dockerfile's RTSERVER_PORT
DRAIN_S = Config().server.drain_deadline_s


def compose() -> dict:
    return yaml.safe_load((CONFIG / "docker-compose.yml").read_text())


def manifests() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((CONFIG / "kubernetes/rtserver.yaml").read_text())}


def seconds(duration: str) -> float:
    value, unit = re.fullmatch(r"(\d+)(s|m)", duration).groups()
    return int(value) * (60 if unit == "m" else 1)


def test_the_dockerfile_serves_the_port_and_stops_with_sigterm():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {PORT}" in dockerfile and f"RTSERVER_PORT={PORT}" in dockerfile
    assert "STOPSIGNAL SIGTERM" in dockerfile
    assert "-c constraints.txt" in dockerfile


def test_compose_nodes_are_the_balancers_and_prometheus_targets():
    services = compose()["services"]
    nodes = sorted(name for name in services if name.startswith("node-"))
    assert nodes == ["node-1", "node-2", "node-3"]
    targets = [f"{name}:{PORT}" for name in nodes]
    assert json.loads((CONFIG / "prometheus/targets/nodes.json").read_text()) == [{"targets": targets}]
    nginx = (CONFIG / "nginx/rtserver.conf").read_text()
    haproxy = (CONFIG / "haproxy/haproxy.cfg").read_text()
    for target in targets:
        assert f"server {target} " in nginx and f" {target} check" in haproxy
    for job, port in (("relay", 9101), ("webhooks", 9102), ("push", 9103)):
        assert services[job]["entrypoint"][-2:] == ["--metrics-port", str(port)]
        assert json.loads((CONFIG / f"prometheus/targets/{job}.json").read_text()) == [{"targets": [f"{job}:{port}"]}]


def test_compose_nodes_drain_on_sigterm_within_their_grace_and_report_readiness():
    for name in ("node-1", "node-2", "node-3"):
        node = compose()["services"][name]
        assert node["stop_signal"] == "SIGTERM" and seconds(node["stop_grace_period"]) > DRAIN_S
        assert f"127.0.0.1:{PORT}/readyz" in " ".join(node["healthcheck"]["test"])
    mounts = {service: compose()["services"][service]["volumes"] for service in ("nginx", "prometheus")}
    assert mounts["nginx"] == ["./nginx/rtserver.conf:/etc/nginx/conf.d/default.conf:ro"]
    assert mounts["prometheus"] == ["./prometheus:/etc/prometheus:ro"]


def test_kubernetes_probes_ports_drain_and_selectors_agree():
    docs = manifests()
    deployment, service, budget, autoscaler = (docs[kind] for kind in (
        "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"))
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    [port] = container["ports"]
    env = {var["name"]: var.get("value") for var in container["env"]}
    assert port["containerPort"] == PORT and env["RTSERVER_PORT"] == str(PORT)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(PORT)
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and pod["spec"]["terminationGracePeriodSeconds"] > int(pre_stop[1]) + DRAIN_S
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    assert service["spec"]["selector"] == labels and budget["spec"]["selector"]["matchLabels"] == labels
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    [metric] = autoscaler["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] in Metrics().render().decode()  # a series the nodes export
