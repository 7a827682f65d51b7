"""A real partner endpoint for the webhook tests: an HTTP/1.1 server (h11 over Trio sockets)
on a loopback port whose answers the test scripts: a status, a hang, or a delay."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h11
import trio


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    #: Scripted answers, one per request, in order; after them, ``then``. An int is a
    #: status; "hang" never answers (the dispatcher's timeout cuts it).
    script: list[int | str] = field(default_factory=list)
    then: int | str = 200
    #: When set, decides each answer from the request instead of the script.
    answer_for: Callable[[Received], int | str] | None = None
    #: Seconds each request is held before its answer.
    delay_s: float = 0.0
    requests: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = None, b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                status = await self._answer(request, body)
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=[("content-length", "0")])))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return
        finally:
            await stream.aclose()

    async def _answer(self, request: h11.Request, body: bytes) -> int:
        index = len(self.requests)
        received = Received({k.decode(): v.decode() for k, v in request.headers}, body, time.time())
        self.requests.append(received)
        if self.answer_for is not None:
            action = self.answer_for(received)
        else:
            action = self.script[index] if index < len(self.script) else self.then
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if action == "hang":
                await trio.sleep_forever()
            await trio.sleep(self.delay_s)
            return int(action)
        finally:
            self.in_flight -= 1
