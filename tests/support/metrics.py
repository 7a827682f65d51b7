"""Reading a metric as Prometheus would: through prometheus_client's public ``collect()``."""

from __future__ import annotations

from prometheus_client.metrics import MetricWrapperBase


def metric_value(metric: MetricWrapperBase, **labels: str) -> float:
    """The value of a counter or gauge for ``labels`` (0 before its first increment)."""
    for family in metric.collect():
        for sample in family.samples:
            if sample.labels == labels and sample.name in (family.name, f"{family.name}_total"):
                return sample.value
    return 0.0


async def scraped(base_url: str, name: str, verify=True, **labels: str) -> float:
    """The value of sample ``name`` with ``labels`` on the node's ``/metrics`` (0 when absent);
    ``verify``: httpx's (an ``ssl.SSLContext`` for a node on TLS)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient(verify=verify) as http:
        text = (await http.get(f"{base_url}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0
