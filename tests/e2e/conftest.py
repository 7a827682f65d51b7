"""A real node on a dynamic loopback port, real WebSocket (trio-websocket) and HTTP (httpx) clients."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from rtserver.auth import mint_token
from rtserver.config import load_config
from rtserver.node import Node

SECRET = "e2e-secret-0123456789abcdef0123456789abcdef0123456789abcdef0123"


@dataclass
class Server:
    node: Node
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, ns: str = "hub") -> str:
        return f"ws://127.0.0.1:{self.port}/{ns}/ws"

    def token(self, user: str = "u1", tenant: str = "t1", roles=("attendant",), ttl_s: int = 3600, **claims) -> str:
        return mint_token(SECRET, {"sub": user, "healthUnitTaxId": tenant, "roles": list(roles), **claims}, ttl_s)

    @property
    def service_token(self) -> str:
        return mint_token(SECRET, {"sub": "svc", "roles": ["service"]})

    async def publish(self, body: dict, token: str | None = None, headers: dict | None = None) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.http) as client:
            return await client.post("/v1/publish", json=body, headers={
                "authorization": f"Bearer {token or self.service_token}", **(headers or {})})


def server_config(**sections):
    base = {"auth": {"hs256_secret": SECRET}, "server": {"port": 0, "allowed_origins": ["http://good.example"]}}
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return load_config(environ={}, overrides=base)


@pytest.fixture
async def server(nursery) -> Server:
    node = Node(server_config())
    port = await nursery.start(node.run)
    return Server(node, port)
