"""peerbench adapter: two rtserver nodes sharing a redis-server; publisher on node A (port+1),
subscribers on node B (port): every event crosses Redis (the shape of sio-node-redis-2n)."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "rtserver_adapter", os.path.join(os.path.dirname(os.path.abspath(__file__)), "rtserver.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)

NAME = "rtserver-redis-2n"
DESC = "rtserver x2 + redis-server (Redis Streams bus), publisher on node A, subscribers on node B"


def prepare(ctx):
    _base.prepare(ctx)


def processes(ctx):
    return _base.nodes_on_redis({"server": "{port}", "server-pub": "{port1}"})


SUB = _base.SUB
PUB = {**_base.PUB, "url": "http://127.0.0.1:{port1}/v1/publish"}
