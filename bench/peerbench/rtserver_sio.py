"""peerbench adapter: rtserver, embedded memory bus, one process, its subscribers on Socket.IO.

Subscribers speak Engine.IO v4 / Socket.IO v5 over WebSocket as socket.io-client does
(peerbench's ``sio`` protocol): CONNECT ``/hub``, then ``subscribe`` with an ack; events
arrive as ``42/hub,["rt.probe",{…},{meta},"<cursor>"]``. Each subscriber is a user of its
own, its token in its URL's query (the CONNECT then carries none), as in the rt.v1 adapter.
The publisher POSTs to /v1/publish as in the rt.v1 adapter.
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "rtserver_adapter", os.path.join(os.path.dirname(os.path.abspath(__file__)), "rtserver.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)

NAME = "rtserver-sio"
DESC = "rtserver (Trio), embedded memory bus, one process; Socket.IO v5 subscribers on /hub, HTTP publish"


def prepare(ctx):
    _base.prepare(ctx, "ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket&access_token={token}")


def processes(ctx):
    return _base.processes(ctx)


SUB = {
    "url": "ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket&access_token=" + _base.TOKEN,
    "url_file": "{run_dir}/urls.txt",
    "proto": "sio",
    "sio_connect": "40/hub,",
    "sio_join": '42/hub,0["subscribe",{"room":"probe:{room}"}]',
}
PUB = _base.PUB
