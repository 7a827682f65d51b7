"""peerbench adapter: rtserver as ``rtserver.py``, with OpenTelemetry tracing on, exporting to
a collector stand-in (``bench/otlp_sink.py``, run port + 2) that counts the spans.

``RTSERVER_BENCH_TRACE_RATIO`` (default 1.0) is ``tracing.sample_ratio``. The publisher sends
no ``traceparent``: every trace starts at the node's ``rt.publish``, sampled at that ratio.
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "rtserver_adapter", os.path.join(os.path.dirname(os.path.abspath(__file__)), "rtserver.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)

NAME = "rtserver-traced"
DESC = "rtserver, tracing on (sample_ratio from RTSERVER_BENCH_TRACE_RATIO), OTLP/HTTP to a counting sink"
SUB, PUB, prepare = base.SUB, base.PUB, base.prepare


def processes(ctx):
    sink = {"name": "otlp-sink", "role": "aux", "wait_port": "{port2}",
            "cmd": [base.PYTHON, os.path.join(base.PROJECT, "bench", "otlp_sink.py"), "{port2}"]}
    [node] = base.processes(ctx)
    node["env"] = {**node["env"], "RTSERVER_TRACING__ENABLED": "true",
                   "RTSERVER_TRACING__SAMPLE_RATIO": os.environ.get("RTSERVER_BENCH_TRACE_RATIO", "1.0"),
                   "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:{port2}/v1/traces"}
    return [sink, node]
