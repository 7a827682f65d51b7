"""Liveness actor: which users have a connection on this node, kept in Redis for the push
dispatcher (``rtserver.push``), which pushes only to users with none anywhere.

Contract
--------
Mailbox
    ``opened`` / ``closed`` (tenant, user) from the connection actors of every transport,
    through one bounded channel (a connection waits when it is full).
Owns
    The count of open connections per (tenant, user) on this node.
Writes
    ``LiveUsers``: a user whose first connection here opened is held for a lease of
    three ``push.live_renew_s``; one whose last connection closed is let go after
    ``push.live_grace_s`` (a long-poll's next request, a reload, count as one stay). Every
    ``push.live_renew_s`` the leases of the users still here are renewed, so a crashed
    node's users stop counting within three renewals. Messages waiting together are
    written in one pipeline.
Failure
    A write that fails (Redis unreachable) is logged; the next renewal holds every user
    here again, and a user let go while it failed goes when its lease runs out.
Blocking
    On Redis only, never on a connection.
"""

from __future__ import annotations

from collections import Counter

import structlog
import trio

from protocol.errors import ReplyError
from rtserver.backends.config import PushConfig
from rtserver.backends.push_store import LiveUsers

log = structlog.get_logger("rtserver.liveness")

User = tuple[str, str]  # (tenant, user)
#: Mailbox capacity (opens and closes waiting to be counted).
MAILBOX = 4096


class Liveness:
    def __init__(self, users: LiveUsers, config: PushConfig, *, holder: str) -> None:
        """``users``: where the leases are kept; ``holder``: this node's name there."""
        self._users = users
        self._holder = holder
        self._renew_s = config.live_renew_s
        self._grace_s = config.live_grace_s
        self._send, self._receive = trio.open_memory_channel[tuple[User, int]](MAILBOX)
        self._open: Counter[User] = Counter()

    @property
    def connected_users(self) -> int:
        return len(self._open)

    async def opened(self, tenant: str, user: str) -> None:
        await self._send.send(((tenant, user), 1))

    async def closed(self, tenant: str, user: str) -> None:
        await self._send.send(((tenant, user), -1))

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        renew_at = trio.current_time() + self._renew_s
        task_status.started()
        while True:
            message = None
            with trio.move_on_at(renew_at):
                message = await self._receive.receive()
            if message is None:
                renew_at = trio.current_time() + self._renew_s
                await self._write(list(self._open), [])
                continue
            changes = [message]
            while True:
                try:
                    changes.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._write(*self._apply(changes))

    def _apply(self, changes: list[tuple[User, int]]) -> tuple[list[User], list[User]]:
        """Count the changes in; the users who came (none here before) and who left."""
        before = {user: self._open[user] > 0 for user, _ in changes}
        for user, delta in changes:
            self._open[user] += delta
            if self._open[user] <= 0:
                del self._open[user]
        came = [user for user, was in before.items() if not was and user in self._open]
        left = [user for user, was in before.items() if was and user not in self._open]
        return came, left

    async def _write(self, connected: list[User], gone: list[User]) -> None:
        try:
            await self._users.hold(self._holder, connected, gone, lease_s=3 * self._renew_s, grace_s=self._grace_s)
        except ReplyError as exc:
            log.warning("liveness_write_failed", error=exc.message)
