"""A Python client on trio-websocket: connect with a token, subscribe, receive, resume.

    async with open_client("ws://127.0.0.1:8080/hub/ws", token) as client:
        await client.subscribe("schedule:42")
        async for evt in client.events():
            ...

The client pings every ``heartbeat_s`` (from ``hello``), remembers the cursor of the last durable event it received and drops any
event id it already saw, so reconnecting with ``since=client.cursor`` resumes exactly.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from protocol.frames import JSON, MSGPACK

_decode_json = msgspec.json.Decoder().decode
_decode_msgpack = msgspec.msgpack.Decoder().decode


class CommandError(Exception):
    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.code = frame.get("code")
        self.frame = frame


class Closed(Exception):
    """The server closed the connection; ``code`` says why (see ``protocol.errors``)."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"closed {code} {reason}")
        self.code = code
        self.reason = reason


class Client:
    def __init__(self, ws: WebSocketConnection, *, binary: bool, seen_ids: int = 100_000) -> None:
        self._ws = ws
        self._binary = binary
        self._refs = itertools.count(1)
        self._replies: dict[int, trio.MemorySendChannel] = {}
        self._events_send, self._events = trio.open_memory_channel[dict](10_000)
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._seen_limit = seen_ids
        self.hello: dict[str, Any] = {}
        self.cursor: str | None = None
        self.closed: Closed | None = None
        self._hello = trio.Event()

    def _decode(self, data: str | bytes) -> dict:
        return _decode_msgpack(data) if isinstance(data, bytes) and self._binary else _decode_json(data)

    async def _reader(self) -> None:
        try:
            while True:
                frame = self._decode(await self._ws.get_message())
                op = frame.get("op")
                if op == "evt":
                    if frame["id"] in self._seen:
                        continue
                    self._seen[frame["id"]] = None
                    if len(self._seen) > self._seen_limit:
                        self._seen.popitem(last=False)
                    if frame.get("cursor"):
                        self.cursor = frame["cursor"]
                    await self._events_send.send(frame)
                elif op == "hello":
                    self.hello = frame
                    self.cursor = self.cursor or frame.get("cursor")
                    self._hello.set()
                elif frame.get("ref") in self._replies:
                    await self._replies.pop(frame["ref"]).send(frame)
        except ConnectionClosed as exc:
            reason = exc.reason
            self.closed = Closed(reason.code if reason else None, reason.reason if reason else None)
        finally:
            self._events_send.close()
            self._hello.set()
            for channel in self._replies.values():
                channel.close()

    async def _heartbeat(self) -> None:
        """Emit ``heartbeat`` every ``heartbeat_s``: the server keeps a staff user's presence
        online (and does not close the connection as idle)."""
        while True:
            await trio.sleep(self.hello.get("heartbeat_s", 30))
            try:
                await self.send_raw({"op": "emit", "event": "heartbeat"})
            except ConnectionClosed:
                return

    async def _command(self, frame: dict[str, Any]) -> dict[str, Any]:
        ref = next(self._refs)
        send, receive = trio.open_memory_channel[dict](1)
        self._replies[ref] = send
        frame["ref"] = ref
        await self.send_raw(frame)
        try:
            reply = await receive.receive()
        except trio.EndOfChannel:
            raise self.closed or Closed(None, None) from None
        if reply.get("op") == "error":
            raise CommandError(reply)
        return reply

    async def send_raw(self, frame: dict[str, Any]) -> None:
        codec = MSGPACK if self._binary else JSON
        data = msgspec.msgpack.encode(frame) if codec is MSGPACK else msgspec.json.encode(frame).decode()
        await self._ws.send_message(data)

    async def subscribe(self, room: str, since: str | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"op": "sub", "room": room}
        if since:
            frame["since"] = since
        return await self._command(frame)

    async def unsubscribe(self, room: str) -> dict[str, Any]:
        return await self._command({"op": "unsub", "room": room})

    async def emit(self, event: str, room: str | None = None, data: dict | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"op": "emit", "event": event, "data": data or {}}
        if room:
            frame["room"] = room
        return await self._command(frame)

    async def ping(self) -> dict[str, Any]:
        return await self._command({"op": "ping"})

    async def next_event(self) -> dict[str, Any]:
        """The next event not seen before; raises ``Closed`` when the connection ended."""
        try:
            return await self._events.receive()
        except trio.EndOfChannel:
            raise self.closed or Closed(None, None) from None

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            try:
                yield await self.next_event()
            except Closed:
                return


@contextlib.asynccontextmanager
async def open_client(
    url: str,
    token: str,
    *,
    since: str | None = None,
    binary: bool = False,
    token_in: str = "header",
    origin: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Client]:
    """Connect, wait for ``hello``, and yield a ``Client``. ``token_in``: header, query or
    subprotocol. ``ssl_context``: for a ``wss://`` node (``rtserver.backends.tls.client_context``;
    None: the system's CAs)."""
    subprotocols = [MSGPACK.name if binary else JSON.name]
    headers: list[tuple[str, str]] = []
    query: dict[str, str] = {}
    if since:
        query["since"] = since
    if token_in == "header":
        headers.append(("authorization", f"Bearer {token}"))
    elif token_in == "query":
        query["access_token"] = token
    else:
        subprotocols.append(f"bearer.{token}")
    if origin:
        headers.append(("origin", origin))
    if query:
        url = f"{url}{'&' if '?' in url else '?'}{urlencode(query)}"
    async with open_websocket_url(url, subprotocols=subprotocols, extra_headers=headers,
                                  message_queue_size=1024, ssl_context=ssl_context) as ws:
        client = Client(ws, binary=binary)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._reader)
            await client._hello.wait()
            if client.closed is None:
                nursery.start_soon(client._heartbeat)
                try:
                    yield client
                finally:
                    nursery.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    if not client.hello:
        # Refused before hello: raised here, outside the nurseries, so callers catch
        # ``Closed`` itself rather than an exception group.
        raise client.closed or Closed(None, None)
