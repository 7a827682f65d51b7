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
