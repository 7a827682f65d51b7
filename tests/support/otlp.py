"""A local OTLP/HTTP traces receiver: the webhook tests' HTTP server (h11 on Trio) takes the
exporters' POSTs, and each body is decoded with opentelemetry-proto, the protobuf schema
collectors use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tests.support.webhook_receiver import Receiver


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: str  # "server", "client", "producer", "consumer", "internal"
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, object]


class Collector(Receiver):
    """Receives OTLP/HTTP protobuf exports at ``/v1/traces``."""

    @property
    def traces_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def spans(self) -> list[Span]:
        """Every span received so far, decoded."""
        return [span for request in self.requests for span in decode(request.body)]

    async def wait_for(self, done: Callable[[list[Span]], bool], timeout: float = 20) -> list[Span]:
        """The spans received once ``done`` holds for them."""
        with trio.fail_after(timeout):
            while not done(spans := self.spans()):
                await trio.sleep(0.05)
        return spans


def decode(body: bytes) -> list[Span]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    found = []
    for resource_spans in request.resource_spans:
        attributes = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(Span(
                    service=str(attributes.get("service.name")), name=span.name,
                    kind=SpanProto.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_").lower(),
                    trace_id=span.trace_id.hex(), span_id=span.span_id.hex(), parent_id=span.parent_span_id.hex(),
                    attributes={a.key: _value(a.value) for a in span.attributes}))
    return found


def _value(value: AnyValue) -> object:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None
