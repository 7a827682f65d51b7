"""Real nodes in the test process on dynamic loopback ports, and their clients."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
import httpx
import trio
from rtserver.backends.auth import mint_token
from rtserver.backends.config import load_config
from rtserver.client import open_client
from rtserver.node import Node


SECRET = "e2e-secret-0123456789abcdef0123456789abcdef0123456789abcdef0123"


@dataclass
class Server:
    node: Node
    port: int
    #: httpx's ``verify`` for the node's port (an ``ssl.SSLContext`` when it is on TLS).
    verify: ssl.SSLContext | bool = True

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
        async with httpx.AsyncClient(base_url=self.http, verify=self.verify) as client:
            return await client.post("/v1/publish", json=body, headers={
                "authorization": f"Bearer {token or self.service_token}", **(headers or {})})

    async def publish_all(self, bodies) -> None:
        """Publish each body in turn on one keep-alive connection; each must be accepted."""
        headers = {"authorization": f"Bearer {self.service_token}"}
        async with httpx.AsyncClient(base_url=self.http, headers=headers, verify=self.verify) as client:
            for body in bodies:
                assert (await client.post("/v1/publish", json=body)).status_code == 200

    async def expect_sentinel_next(self, client, room: str = "professional:1", tenant: str = "t1") -> None:
        """Publish a sentinel event to ``room``; the client's next event must be it. What
        the client should not have been sent was published before it, so it would have
        come first: a negative check that ends on an event, not on a wait."""
        assert (await self.publish({"event": "appointment.created", "tenant": tenant, "rooms": [room],
                                    "data": {"appointmentId": "sentinel"}})).status_code == 200
        with trio.fail_after(10):
            evt = await client.next_event()
        assert evt["data"] == {"appointmentId": "sentinel"}, f"received before the sentinel: {evt}"

    async def cursor_after(self, room: str, published_through: Server, body: dict) -> str:
        """The cursor a client of this node subscribed to ``room`` holds once ``body``,
        published through ``published_through``, reached it (the client then leaves)."""
        async with open_client(self.ws(), self.token()) as client:
            await client.subscribe(room)
            await published_through.publish(body)
            with trio.fail_after(10):
                await client.next_event()
            return client.cursor


async def wait_until(predicate, timeout: float = 10) -> None:
    """Poll ``predicate`` (every 20 ms) until it holds; fails after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


def server_config(**sections):
    base = {"auth": {"hs256_secret": SECRET}, "server": {"port": 0, "allowed_origins": ["http://good.example"]}}
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return load_config(environ={}, overrides=base)


PRESENCE = {"grace_s": 1.0, "sweep_interval_s": 0.5}


async def start_node(nursery, redis_url: str, scope: trio.CancelScope | None = None, **sections) -> Server:
    node = Node(server_config(bus={"redis_url": redis_url}, presence=PRESENCE, **sections))
    if scope is None:
        return Server(node, await nursery.start(node.run))

    async def run_in_scope(task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            await node.run(task_status=task_status)

    return Server(node, await nursery.start(run_in_scope))


async def presence_events(client, count: int) -> list[tuple[str, str]]:
    got = []
    with trio.fail_after(10):
        while len(got) < count:
            evt = await client.next_event()
            if evt["event"].startswith("attendant:"):
                got.append((evt["data"]["userId"], evt["data"]["state"]))
    return got
