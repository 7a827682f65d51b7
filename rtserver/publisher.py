"""A small publisher for services: ``POST /v1/publish`` with a service token (httpx)."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from rtserver.backends.tracing import Tracing


class PublishError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body.get('message', body)}")
        self.status = status
        self.body = body


class Publisher:
    """Appends events through a node. Use as ``async with Publisher(url, token) as pub``."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0, tracing: Tracing = Tracing.off(),
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """``ssl_context``: for an ``https://`` node (``rtserver.backends.tls.client_context``);
        None: the system's CAs."""
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s, headers={"authorization": f"Bearer {token}"},
            verify=ssl_context or True,
        )
        self._tracing = tracing

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def publish(
        self,
        event: str,
        tenant: str,
        rooms: list[str],
        data: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        ts: int | None = None,
        traceparent: str | None = None,
    ) -> dict[str, Any]:
        """Append one event; returns ``{"id", "cursor", "duplicate"}`` or raises ``PublishError``.
        ``traceparent``: the producer's span; with tracing on, the parent of this call's
        ``rt.publish.send`` span, whose own ``traceparent`` header the node continues."""
        body: dict[str, Any] = {"event": event, "tenant": tenant, "rooms": rooms, "data": data or {}}
        for key, value in (("id", id), ("ts", ts)):
            if value is not None:
                body[key] = value
        with self._tracing.span("rt.publish.send", traceparent, "client", **{
                "rt.event_type": event, "rt.tenant": tenant}) as sent:
            headers = {"traceparent": sent or traceparent} if sent or traceparent else {}
            response = await self._client.post("/v1/publish", json=body, headers=headers)
        if response.status_code != 200:
            raise PublishError(response.status_code, response.json())
        return response.json()
