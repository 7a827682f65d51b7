"""Long-poll actor: one ``GET /{ns}/poll`` request, from its cursor to its answer.

Contract
--------
Mailbox
    None from the client. Its rooms push frames into its ``PollAnswer`` (never blocks);
    commands for its session arrive through its command room (``session:{id}``) and are
    applied without waiting. ``close(disconnect)`` may be called by anyone (drain).
Owns
    Its rooms (the token's own and those of ``?rooms=``) while it waits, the frames
    collected for the answer (budgeted like an outbound queue) and its token's expiry.
    Not its socket: its answer is written through ``respond`` (the listener's HTTP framing),
    and the listener keeps the connection for the next request (``kept_alive``).
Replies
    ``answer``: ``{"events":[…],"cursor":"…","session":"…"}`` (``protocol.httpstreams``),
    at once when the cursor is behind (history), else as soon as an event arrives (plus
    ``connection.poll_linger_s`` to collect what comes with it), else empty after
    ``connection.poll_timeout_s``. The cursor covers every room of the request: the last
    cursor among the events (which never passes an event still on its way here), or the
    request's own when none came. Without ``since`` it starts from now (and the first
    answer brings the presence and schedule snapshots); ``"recovered":false`` when the
    history no longer reaches back. Over the budget it answers what it collected, and the
    rest follows from the cursor. A disconnect (token expired, draining, a bus failure)
    travels as ``"close"``.
Failure
    Ends once its answer is written (a drain waits for it), or without one when the
    client went away (EOF). A bug answers with a 1011 close, never ends the node.
Blocking
    On the bus while reading history; on its rooms having handed over what they buffered
    for it; on its wait (bounded). Never on other connections.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import msgspec
import trio

from actors.connection import CONNECTION_LOST, Connection, HttpSession
from protocol.cursors import Cursor
from protocol.errors import CloseCode, Disconnect
from protocol.frames import Sub
from protocol.httpstreams import poll_body
from protocol.rooms import RoomKind, parse_room
from protocol.session import Answer, RoomSnapshot
from protocol.wires import POLL_JSON
from rtserver.backends.sockets import Sock, wait_readable


class _Cursored(msgspec.Struct):
    cursor: str | None = None


_cursor_of = msgspec.json.Decoder(_Cursored).decode


class PollAnswer:
    """The frames collected for one answer: ``push`` never blocks; over the budget the
    rest is dropped (the answer's cursor stops before it) and the owner is told."""

    __slots__ = ("frames", "nbytes", "max_frames", "max_bytes", "full", "arrived", "_owner")

    def __init__(self, *, max_frames: int, max_bytes: int, owner: Connection) -> None:
        self.frames: list[bytes] = []
        self.nbytes = 0
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.full = False
        self.arrived = trio.Event()
        self._owner = owner

    def push(self, frame: bytes) -> None:
        if self.full:
            return
        if len(self.frames) >= self.max_frames or self.nbytes + len(frame) > self.max_bytes:
            self.full = True
            self._owner.slow_consumer()
            return
        self.frames.append(frame)
        self.nbytes += len(frame)
        self.arrived.set()

    __call__ = push

    async def wait_flushed(self) -> None:
        """Nothing to wait for: the answer collects until it is full (then it is sent)."""
        await trio.lowlevel.checkpoint()

    def cursor(self, default: str) -> str:
        """The cursor of the last frame that has one; ``default`` when none has."""
        for frame in reversed(self.frames):
            cursor = _cursor_of(frame).cursor
            if cursor is not None:
                return cursor
        return default


class PollRequest(HttpSession):
    transport = "poll"
    __slots__ = ("_cursor", "_recovered", "_promoting", "_caught_up", "_respond", "kept_alive")

    def __init__(self, sock: Sock, *, since: Cursor | None,
                 respond: Callable[[bytes], Awaitable[bool]], **session) -> None:
        """``respond(body)`` writes the answer (bounded); whether the connection stays open."""
        super().__init__(sock, wire=POLL_JSON, since=since, **session)
        cfg = self._s.config.connection
        self._cursor = since.encode() if since is not None else ""
        self._recovered: bool | None = None
        self._promoting = 0
        self._caught_up = trio.Event()
        self._respond = respond
        #: Whether the connection may serve another request (its answer was written).
        self.kept_alive = False
        self.out = PollAnswer(max_frames=cfg.outbound_max_frames, max_bytes=cfg.outbound_max_bytes, owner=self)

    def _initial_rooms(self) -> list[str]:
        rooms = super()._initial_rooms()
        self._promoting = len(rooms)
        return rooms

    def _answer(self, answer: Answer, rooms: list[str], sub: Sub | None) -> None:
        """The start's answer is the poll's own: its cursor and ``recovered`` go in the body."""
        self._cursor = answer.cursor.encode()
        self._recovered = answer.recovered

    def _room_caught_up(self) -> None:
        self._promoting -= 1
        if self._promoting <= 0:
            self._caught_up.set()

    async def _snapshot(self, room: str, recovered: bool) -> RoomSnapshot | None:
        # A poll resumed from its cursor is the same client as the poll before: presence
        # changes since then are best-effort (ephemeral), as on any reconnect.
        if recovered and parse_room(room)[0] is RoomKind.PRESENCE:
            return None
        return await super()._snapshot(room, recovered)

    async def _serve(self) -> None:
        cfg = self._s.config.connection
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_client)
            with trio.move_on_after(cfg.poll_timeout_s):
                await self.out.arrived.wait()
            if self.out.frames:
                await trio.sleep(cfg.poll_linger_s)
            with trio.move_on_after(cfg.poll_linger_s + 1.0):
                await self._caught_up.wait()  # what the rooms buffered is in the answer
            nursery.cancel_scope.cancel()

    async def _watch_client(self) -> None:
        """Close when the client goes away; stop watching once it sends anything (the
        next request on this connection is the listener's)."""
        while True:
            await wait_readable(self._sock)
            data = self._receive(1, socket.MSG_PEEK)
            if data is None:
                continue
            if not data:
                self._scope.cancel()
            return

    async def _finish(self, disconnect: Disconnect) -> None:
        out = self.out
        out.full = True  # nothing more joins the answer
        if disconnect is CONNECTION_LOST:
            return
        close = None if disconnect in (CloseCode.NORMAL, CloseCode.SLOW_CONSUMER) else disconnect
        self.kept_alive = await self._respond(poll_body(
            out.frames, out.cursor(self._cursor), self.session,
            recovered=self._recovered if self._since is not None else None, close=close))
