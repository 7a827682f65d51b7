"""What a Socket.IO session subscribed to, kept for its connection state recovery on any node:
the interface, the memory store (one node) and the Redis store (every node).

socket.io-client comes back with its private session id (``pid``) and the offset of the
last event it got; the node it lands on resumes the session's rooms from that offset. The
rooms the token gives are known from the token; the rooms the client subscribed to since
are kept here by pid, rewritten at each change, for ``ttl_s`` (the token's remaining life
plus the recovery window). The pid is random (72 bits): it names, it does not authorize —
every recalled room is authorized again against the token of the reconnecting client.

Redis key: ``rt:sio:<pid>`` (a JSON list of rooms).
"""

from __future__ import annotations

import time
from typing import Protocol

import msgspec

from rtserver.backends.redis_link import RedisLink

_rooms = msgspec.json.Decoder(list[str])


class RecoveryStore(Protocol):
    async def remember(self, pid: str, rooms: list[str], ttl_s: float) -> None:
        """The rooms session ``pid`` subscribed to (beyond its token's own), for ``ttl_s``."""
        ...

    async def recall(self, pid: str) -> list[str]:
        """The rooms last remembered for ``pid``; none when unknown or expired."""
        ...


class MemoryRecovery:
    """The recovery store of a single node."""

    #: Seconds between two sweeps of expired entries.
    SWEEP_S = 60.0

    def __init__(self) -> None:
        self._kept: dict[str, tuple[list[str], float]] = {}
        self._sweep_at = 0.0

    async def remember(self, pid: str, rooms: list[str], ttl_s: float) -> None:
        now = time.monotonic()
        self._kept[pid] = (list(rooms), now + ttl_s)
        if now >= self._sweep_at:
            self._sweep_at = now + self.SWEEP_S
            for stale in [key for key, (_, until) in self._kept.items() if until <= now]:
                del self._kept[stale]

    async def recall(self, pid: str) -> list[str]:
        rooms, until = self._kept.get(pid, ([], 0.0))
        return list(rooms) if until > time.monotonic() else []


class RedisRecovery:
    """The recovery store shared by every node."""

    def __init__(self, link: RedisLink) -> None:
        self._link = link

    async def remember(self, pid: str, rooms: list[str], ttl_s: float) -> None:
        await self._link.call("SET", f"rt:sio:{pid}", msgspec.json.encode(rooms), "PX", max(1, int(ttl_s * 1000)))

    async def recall(self, pid: str) -> list[str]:
        raw = await self._link.call("GET", f"rt:sio:{pid}")
        try:
            return _rooms.decode(raw) if raw else []
        except msgspec.DecodeError:
            return []
