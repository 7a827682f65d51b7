"""Typing actor: turns clients' ``typing:start`` / ``typing:stop`` into ``thread:typing``.

Contract
--------
Mailbox
    ``typing(session, tenant, user, thread, typing)`` from connection actors (a bounded
    channel; a connection waits when it is full) and ``gone(session)`` when a connection
    closes.
Owns
    Who is typing in which thread through this node's connections: per (tenant, thread,
    user, session), when the indicator stops by itself.
Replies
    None. Each change is published as an ephemeral ``thread:typing`` event
    (``{threadId, userId, typing}``) to the thread's room, through the bus (every node),
    marked with the sender's session as ``origin`` so it is not echoed back to it. Never
    stored in the durable stream.
Timers
    An indicator not refreshed by another ``typing:start`` within ``typing.timeout_s``
    stops by itself (``typing: false`` is published); a closed connection's indicators
    stop at once. Each start is published (a refresh tells late joiners); under a burst,
    the messages queued in the mailbox are applied first and only each key's final state
    is published (latest wins; a start and stop within one burst publish nothing), and
    the rooms coalesce further per user and thread.
Failure
    A publish that fails (Redis unreachable) is logged and dropped: ephemeral events are
    best-effort.
Blocking
    On the bus only, never on a connection.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import structlog
import trio

from protocol.envelope import Envelope
from protocol.errors import ReplyError
from rtserver.backends.config import TypingConfig

log = structlog.get_logger("rtserver.typing")


@dataclass(frozen=True, slots=True, order=True)
class _Key:
    tenant: str
    thread: str
    user: str
    session: str


@dataclass(frozen=True, slots=True)
class _Typing:
    key: _Key
    typing: bool


@dataclass(frozen=True, slots=True)
class _Gone:
    session: str


class Typing:
    def __init__(self, bus, config: TypingConfig) -> None:
        self._bus = bus
        self._timeout_s = config.timeout_s
        self._send, self._receive = trio.open_memory_channel(config.mailbox)
        self._until: dict[_Key, float] = {}  # who is typing, until when
        self._timers: list[tuple[float, _Key]] = []
        self._shown: set[_Key] = set()  # keys whose last publication said typing

    # -- the mailbox (called by connections) ---------------------------------------------
    async def typing(self, session: str, tenant: str, user: str, thread: str, typing: bool) -> None:
        await self._send.send(_Typing(_Key(tenant, thread, user, session), typing))

    async def gone(self, session: str) -> None:
        await self._send.send(_Gone(session))

    # -- the actor -----------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            changed: dict[_Key, bool] = {}
            with trio.move_on_at(self._timers[0][0] if self._timers else float("inf")):
                message = await self._receive.receive()
                while True:  # apply what is queued, then publish final states only
                    self._apply(message, changed)
                    try:
                        message = self._receive.receive_nowait()
                    except trio.WouldBlock:
                        break
            self._expire(trio.current_time(), changed)
            for key, typing in sorted(changed.items()):
                if typing or key in self._shown:  # a start and stop within one burst: nothing
                    await self._publish(key, typing)
                if typing:
                    self._shown.add(key)
                else:
                    self._shown.discard(key)

    def _apply(self, message: _Typing | _Gone, changed: dict[_Key, bool]) -> None:
        if isinstance(message, _Gone):
            for key in [k for k in self._until if k.session == message.session]:
                self._stop(key, changed)
        elif not message.typing:
            self._stop(message.key, changed)
        else:
            key = message.key
            changed[key] = True
            until = self._until[key] = trio.current_time() + self._timeout_s
            heapq.heappush(self._timers, (until, key))

    def _stop(self, key: _Key, changed: dict[_Key, bool]) -> None:
        if self._until.pop(key, None) is not None:
            changed[key] = False

    def _expire(self, now: float, changed: dict[_Key, bool]) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            until, key = heapq.heappop(timers)
            if self._until.get(key) == until:  # not refreshed nor stopped since
                self._stop(key, changed)

    async def _publish(self, key: _Key, typing: bool) -> None:
        try:
            await self._bus.publish_ephemeral(Envelope(
                event="thread:typing", tenant=key.tenant, rooms=[f"thread:{key.thread}"],
                data={"threadId": key.thread, "userId": key.user, "typing": typing},
                origin=key.session,
            ))
        except ReplyError as exc:
            log.warning("typing_publish_failed", error=exc.message, thread=key.thread)
