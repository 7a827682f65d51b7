"""Test clients for the HTTP transports: an SSE reader and a long-poller (httpx, real sockets)."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx


@dataclass
class SseMessage:
    data: dict
    id: str | None = None
    event: str = "message"


@dataclass
class SseStream:
    response: httpx.Response
    messages: list[SseMessage] = field(default_factory=list)
    retry_ms: int | None = None
    comments: int = 0

    async def next(self) -> SseMessage:
        """The next message; raises EOFError when the stream ended."""
        block: dict[str, str] = {}
        async for line in self._lines:
            if line == "":
                if "data" in block:
                    return SseMessage(json.loads(block["data"]), block.get("id"), block.get("event", "message"))
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                self.comments += 1
            elif name == "retry":
                self.retry_ms = int(value)
            else:
                block[name] = value
        raise EOFError

    async def wait_comment(self) -> None:
        """Read until a comment line (a keep-alive); raises EOFError when the stream ended."""
        async for line in self._lines:
            if line.startswith(":"):
                self.comments += 1
                return
        raise EOFError

    async def next_event(self) -> SseMessage:
        """The next ``evt`` message (skips anything else)."""
        while True:
            message = await self.next()
            if message.data.get("op") == "evt":
                return message

    def start(self) -> None:
        self._lines = self.response.aiter_lines()


@asynccontextmanager
async def open_sse(base: str, token: str | None, ns: str = "hub", headers: dict | None = None, verify=True,
                   **params):
    """An SSE stream of ``/{ns}/sse``; the response is checked by the caller (``.response``).
    ``verify``: httpx's (an ``ssl.SSLContext`` for a node on TLS)."""
    if token is not None:
        params["access_token"] = token
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(30, read=None), verify=verify) as client:
        async with client.stream("GET", f"/{ns}/sse", params=params, headers=headers or {}) as response:
            stream = SseStream(response)
            stream.start()
            yield stream


async def poll(client: httpx.AsyncClient, token: str, ns: str = "hub", **params) -> httpx.Response:
    return await client.get(f"/{ns}/poll", params=params, headers={"authorization": f"Bearer {token}"})


async def command(base: str, token: str, frames, ns: str = "hub", session: str | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base) as client:
        return await client.post(f"/{ns}/commands", json=frames, params={"session": session} if session else {},
                                 headers={"authorization": f"Bearer {token}"})
