"""socket.io-client v4 in Node, driven from a test (tests/js/sio_client.mjs): the client the
seeds' frontends use, installed from npm by scripts/install-test-deps."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import trio

DRIVER = Path(__file__).resolve().parents[1] / "js" / "sio_client.mjs"


class SocketIOClients:
    """One Node process holding any number of socket.io-client sockets, each named by an id."""

    def __init__(self, process: trio.Process) -> None:
        self._process = process
        self._lines = b""
        self._reports: list[dict] = []
        self._seq = itertools.count()

    async def _send(self, **command) -> None:
        await self._process.stdin.send_all(json.dumps(command).encode() + b"\n")

    async def connect(self, id: str, url: str, auth: dict | None = None, **options) -> None:
        await self._send(op="connect", id=id, url=url, auth=auth or {}, options=options)

    async def emit(self, id: str, event: str, *args) -> None:
        """Emit without an ack callback."""
        await self._send(op="emit", id=id, event=event, args=list(args))

    async def call(self, id: str, event: str, *args) -> dict:
        """Emit with an ack callback; the report of its answer (``answer``, or ``error``)."""
        seq = next(self._seq)
        await self._send(op="emit", id=id, event=event, args=list(args), seq=seq)
        return await self.next(id, "ack", lambda r: r["seq"] == seq)

    async def disconnect(self, id: str) -> None:
        await self._send(op="disconnect", id=id)

    async def drop(self, id: str) -> None:
        """Close the socket's transport under it, as a network cut does: it reconnects."""
        await self._send(op="drop", id=id)

    async def next(self, id: str, type: str, where=lambda report: True, timeout: float = 10) -> dict:
        """The first report of ``type`` about socket ``id`` not taken yet (reports before it
        stay for later calls)."""
        with trio.fail_after(timeout):
            while True:
                for report in self._reports:
                    if report["id"] == id and report["type"] == type and where(report):
                        self._reports.remove(report)
                        return report
                await self._read()

    async def event(self, id: str, name: str, timeout: float = 10) -> list:
        """The arguments of the next event ``name`` socket ``id`` received."""
        return (await self.next(id, "event", lambda r: r["event"] == name, timeout))["args"]

    def events(self, id: str) -> list[dict]:
        """The event reports of ``id`` received and not taken yet (taking them)."""
        taken = [r for r in self._reports if r["id"] == id and r["type"] == "event"]
        for report in taken:
            self._reports.remove(report)
        return taken

    async def _read(self) -> None:
        data = await self._process.stdout.receive_some(65536)
        if not data:
            raise EOFError("the socket.io-client driver exited")
        self._lines += data
        *lines, self._lines = self._lines.split(b"\n")
        self._reports += [json.loads(line) for line in lines if line]


async def open_socketio_clients(nursery: trio.Nursery) -> SocketIOClients:
    """Start the driver (killed when the nursery's test ends)."""
    process = await nursery.start(lambda task_status: trio.run_process(
        ["node", str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ},
        check=False, task_status=task_status))
    return SocketIOClients(process)


async def next_message(ws) -> str:
    """The next message of a raw Engine.IO WebSocket (trio-websocket) that is not a ping
    (pings are answered, as a client does)."""
    while True:
        message = await ws.get_message()
        if message != "2":
            return message
        await ws.send_message("3")
