"""Error boundaries: a failure stays in the request, connection or stream where it happens.

Trio's rule is that an exception escaping a task cancels its nursery: one bug in one
request would stop the node and drop every client. Each request, connection and stream
therefore runs inside ``contained``: an unexpected exception is logged with its traceback
and a correlation id, counted in ``rt_internal_errors_total{where}``, and swallowed; the
caller then answers the documented error (HTTP 500 with ``{"error": 500, "message",
"id"}``, WebSocket close 1011, an SSE ``close`` event, a poll's ``close``). Cancellation
and other ``BaseException`` pass through untouched.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import msgspec
import structlog

from rtserver.backends.metrics import Metrics

log = structlog.get_logger("rtserver.boundary")


@dataclass(slots=True)
class Failure:
    """What a boundary caught: the correlation id of the logged failure (None: nothing)."""

    id: str | None = None


def record_failure(metrics: Metrics, where: str, error: BaseException, **context: object) -> str:
    """Log ``error`` with its traceback and a new correlation id, count it under ``where``
    (a fixed label: ``publish``, ``websocket``, ``http:events``...); the id."""
    failure_id = secrets.token_hex(8)
    log.error("internal_error", where=where, correlation_id=failure_id, exc_info=error, **context)
    metrics.internal_errors.labels(where).inc()
    return failure_id


class contained:  # noqa: N801 (used as a function, like contextlib.suppress)
    """``with contained(metrics, where, **context) as failure:`` runs the block as a
    boundary named ``where``; after it, ``failure.id`` says whether it failed and under
    which correlation id (``record_failure``). A class rather than a generator: a
    connection parks inside one for its whole life, and a generator's frame would cost
    it half a kilobyte more."""

    __slots__ = ("_metrics", "_where", "_context", "_failure")

    def __init__(self, metrics: Metrics, where: str, **context: object) -> None:
        self._metrics = metrics
        self._where = where
        self._context = context
        self._failure = Failure()

    def __enter__(self) -> Failure:
        return self._failure

    def __exit__(self, exc_type, error, traceback) -> bool:
        if isinstance(error, Exception):
            self._failure.id = record_failure(self._metrics, self._where, error, **self._context)
            return True
        return False


def internal_error_body(failure_id: str) -> bytes:
    """The JSON body of an HTTP 500: what the client may quote to the operator."""
    return msgspec.json.encode({"error": 500, "message": "internal error", "id": failure_id})
