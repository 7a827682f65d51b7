"""peerbench adapter: three rtserver nodes sharing a redis-server, the subscribers spread
evenly over the three (ports port, port+1, port+3; Redis on port+2) and the publisher on the
second: every node reads every event from Redis and fans it out to its third of the room.
Beside the one-node ``rtserver``, it shows what sharing the bus costs per delivery."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "rtserver_adapter", os.path.join(os.path.dirname(os.path.abspath(__file__)), "rtserver.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)

NAME = "rtserver-redis-3n"
DESC = "rtserver x3 + redis-server (Redis Streams bus), subscribers spread over the three nodes"


def node_ports(ctx) -> list[int]:
    return [ctx.port, ctx.port + 1, ctx.port + 3]


def prepare(ctx):
    _base.prepare(ctx, ports=node_ports(ctx))


def processes(ctx):
    return _base.nodes_on_redis({f"node-{i}": str(port) for i, port in enumerate(node_ports(ctx))})


SUB = _base.SUB
PUB = {**_base.PUB, "url": "http://127.0.0.1:{port1}/v1/publish"}
