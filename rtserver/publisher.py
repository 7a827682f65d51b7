"""A small publisher for services: ``POST /v1/publish`` with a service token (httpx)."""

from __future__ import annotations

from typing import Any

import httpx


class PublishError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body.get('message', body)}")
        self.status = status
        self.body = body


class Publisher:
    """Appends events through a node. Use as ``async with Publisher(url, token) as pub``."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s, headers={"authorization": f"Bearer {token}"}
        )

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
        """Append one event; returns ``{"id", "cursor", "duplicate"}`` or raises ``PublishError``."""
        body: dict[str, Any] = {"event": event, "tenant": tenant, "rooms": rooms, "data": data or {}}
        for key, value in (("id", id), ("ts", ts), ("traceparent", traceparent)):
            if value is not None:
                body[key] = value
        response = await self._client.post("/v1/publish", json=body)
        if response.status_code != 200:
            raise PublishError(response.status_code, response.json())
        return response.json()
