"""A collector stand-in for the tracing benchmarks: accepts OTLP/HTTP trace exports on
``/v1/traces``, counts the spans (decoded with opentelemetry-proto) and, on SIGTERM, prints
how many requests and spans it took.

    python bench/otlp_sink.py PORT
"""

from __future__ import annotations

import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

received = {"requests": 0, "spans": 0}


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received["requests"] += 1
        received["spans"] += sum(len(scope.spans) for resource in request.resource_spans
                                 for scope in resource.scope_spans)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)

    def stop(*_) -> None:
        print(f"otlp_sink: {received['requests']} requests, {received['spans']} spans", flush=True)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
