"""Typing actor: turns clients' ``typing:start`` / ``typing:stop`` into ``thread:typing``.

Contract
--------
Mailbox
    ``typing(session, tenant, user, thread, typing)`` from connection actors (a bounded
    channel; a connection waits when it is full) and ``gone(session)`` when a connection
    closes.
Owns
    Who is typing in which thread through this node's connections: per (tenant, thread,
    user, session), when the indicator stops by itself — a ``protocol.typing_table.TypingTable``,
    pure state that takes ``now``; this actor only feeds it and publishes what it says.
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
    is published (latest wins; a start and stop within one burst publish nothing), in one
    bus round trip, and the rooms coalesce further per user and thread.
Failure
    A publish that fails (Redis unreachable) is logged and dropped: ephemeral events are
    best-effort.
Blocking
    On the bus only, never on a connection.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
import trio

from protocol.envelope import Envelope
from protocol.errors import ReplyError
from protocol.typing_table import TypingKey, TypingTable
from rtserver.backends.config import TypingConfig

log = structlog.get_logger("rtserver.typing")


@dataclass(frozen=True, slots=True)
class _Typing:
    key: TypingKey
    typing: bool


@dataclass(frozen=True, slots=True)
class _Gone:
    session: str


class Typing:
    def __init__(self, bus, config: TypingConfig) -> None:
        self._bus = bus
        self._send, self._receive = trio.open_memory_channel(config.mailbox)
        self._table = TypingTable(config.timeout_s)

    # -- the mailbox (called by connections) ---------------------------------------------
    async def typing(self, session: str, tenant: str, user: str, thread: str, typing: bool) -> None:
        await self._send.send(_Typing(TypingKey(tenant, thread, user, session), typing))

    async def gone(self, session: str) -> None:
        await self._send.send(_Gone(session))

    # -- the actor -----------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        table = self._table
        while True:
            due = table.next_due()
            with trio.move_on_at(float("inf") if due is None else due):
                message = await self._receive.receive()
                while True:  # apply what is queued, then publish final states only
                    self._apply(message)
                    try:
                        message = self._receive.receive_nowait()
                    except trio.WouldBlock:
                        break
            table.expire(trio.current_time())
            announcements = table.announcements()
            if announcements:
                await self._publish(announcements)

    def _apply(self, message: _Typing | _Gone) -> None:
        if isinstance(message, _Gone):
            self._table.gone(message.session)
        elif message.typing:
            self._table.start(message.key, trio.current_time())
        else:
            self._table.stop(message.key)

    async def _publish(self, announcements: list[tuple[TypingKey, bool]]) -> None:
        """Publish the burst's changes, all in one bus round trip."""
        try:
            await self._bus.publish_ephemeral(*(
                Envelope(event="thread:typing", tenant=key.tenant, rooms=[f"thread:{key.thread}"],
                         data={"threadId": key.thread, "userId": key.user, "typing": typing}, origin=key.session)
                for key, typing in announcements))
        except ReplyError as exc:
            log.warning("typing_publish_failed", error=exc.message, changes=len(announcements))
