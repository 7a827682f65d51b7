"""OpenTelemetry traces of an event's path: publish → outbox relay → each node's read →
each room's fan-out → the node's socket writes (docs/operations.md, Tracing).

Off by default (``[tracing] enabled``). On, spans go over OTLP/HTTP with a batch processor
(a thread of its own, so a slow collector never delays the event loop; a full queue drops
spans, never blocks). The W3C ``traceparent`` a producer gives (HTTP header or body field,
stream field, outbox column) is the parent; each process writes its own span's
``traceparent`` where the next one reads it (the stream entry), so one trace shows the whole
path across processes. Spans are per event (per node, per room), never per recipient.

What the file leaves empty, the standard variables decide: ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or ``..._TRACES_ENDPOINT``), ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER`` (then
``tracing.sample_ratio`` is not used), ``OTEL_BSP_*``; ``OTEL_SDK_DISABLED=true`` turns
tracing off whatever the file says.

The attributes never carry an identifier of a person: the event's type and id, the tenant
(a health unit), the kind of a room (``patient``, not the patient's id), counts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from rtserver.backends.config import TracingConfig

#: Span kinds, by the names call sites use (``SpanKind`` members, lower case).
Kind = str


class Tracing:
    """A process's tracer. ``Tracing.off()`` does nothing, and call sites on the hot path
    test ``enabled`` before building anything."""

    enabled = True

    def __init__(self, config: TracingConfig, default_service: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        service = config.service_name or os.environ.get("OTEL_SERVICE_NAME") or default_service
        sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else ParentBased(TraceIdRatioBased(config.sample_ratio))
        self._provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}), sampler=sampler)
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.endpoint or None)))
        self._tracer = self._provider.get_tracer("rtserver")
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def for_config(cls, config: TracingConfig, default_service: str) -> Tracing:
        """Tracing as configured, or ``Tracing.off()``."""
        if not config.enabled or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
            return cls.off()
        return cls(config, default_service)

    @staticmethod
    def off() -> Tracing:
        return _OFF

    def start(self, name: str, parent: str | None, kind: Kind = "internal", **attributes) -> Span:
        """A started span of ``kind`` (``server``, ``client``, ``producer``, ``consumer``,
        ``internal``), child of the span ``parent`` names (a ``traceparent``; None or
        invalid: a new trace, sampled by ratio); the caller ends it."""
        from opentelemetry.trace import SpanKind

        context = self._propagator.extract({"traceparent": parent}) if parent else None
        return self._tracer.start_span(name, context=context, kind=SpanKind[kind.upper()], attributes=attributes)

    @contextlib.contextmanager
    def span(self, name: str, parent: str | None, kind: Kind = "internal", **attributes) -> Iterator[str | None]:
        """A span around the block, ended (with the exception, if one escapes) at its end;
        yields its ``traceparent``, for whatever the block hands on."""
        from opentelemetry import trace

        span = self.start(name, parent, kind, **attributes)
        with trace.use_span(span, end_on_exit=True):
            yield self.traceparent(span)

    def traceparent(self, span: Span) -> str:
        """The W3C ``traceparent`` naming ``span`` (as a parent, sampled or not)."""
        from opentelemetry import trace

        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(span))
        return carrier["traceparent"]

    def shutdown(self) -> None:
        """Export what is buffered (bounded by the exporter's timeout) and stop."""
        self._provider.shutdown()


class _Off(Tracing):
    enabled = False

    def __init__(self) -> None:
        pass

    @contextlib.contextmanager
    def span(self, name: str, parent: str | None, kind: Kind = "internal", **attributes) -> Iterator[str | None]:
        yield None

    def shutdown(self) -> None:
        pass


_OFF = _Off()


def room_kind(room: str) -> str:
    """The kind of a room (``patient:123`` → ``patient``): what spans say of a room."""
    return room.partition(":")[0]
