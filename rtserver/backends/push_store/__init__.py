"""What the nodes and the push dispatcher share: registered devices, connected users, and
each user's quiet period — the interfaces, and the in-memory stores of a single process.

* ``DeviceStore``: a device registration is the truth about its token (it expires
  ``push.device_ttl_s`` after it was made); each personal room it names indexes it. An
  index entry whose registration changed (expired, dropped, the token moved to another
  user) is stale and removed when found. A user keeps at most ``max_per_user`` devices
  (counted in the index of their own room, the registration's first): registering one
  more forgets the oldest others. Each user has a quiet period after a push.
* ``LiveUsers``: which users have a connection on some node: each node (``holder``)
  holds a lease per user it serves.

The Redis stores (``rtserver.backends.push_store.redis``) keep the same contract across
processes; one conformance suite proves both.
"""

from __future__ import annotations

import time
from typing import Protocol

from protocol.push import Device, Registration


class DeviceStore(Protocol):
    async def register(self, tenant: str, user: str, rooms: list[str], registration: Registration) -> list[str]:
        """Register (or renew) a device of ``user`` for ``rooms`` (``user:<user>`` first); the
        tokens of the user's devices forgotten to stay within the limit."""
        ...

    async def unregister(self, tenant: str, user: str, rooms: list[str], token: str) -> bool:
        """Forget ``token`` if it is ``user``'s device (and drop it from ``rooms``' indexes
        whatever it is); whether it was."""
        ...

    async def devices(self, tenant: str, rooms: list[str]) -> dict[str, Device]:
        """The devices registered for any of ``rooms``, by token; stale index entries found
        on the way are removed."""
        ...

    async def drop(self, tenant: str, token: str, device: Device) -> None:
        """Forget a device a provider called invalid."""
        ...

    async def quiet(self, tenant: str, user: str, quiet_s: float) -> bool:
        """Start ``user``'s quiet period unless one is running; whether it started (push)."""
        ...


class LiveUsers(Protocol):
    async def hold(self, holder: str, connected: list[tuple[str, str]], gone: list[tuple[str, str]], *,
                   lease_s: float, grace_s: float) -> None:
        """Hold the ``connected`` (tenant, user) pairs for ``lease_s``; let the ``gone`` ones
        go after ``grace_s``."""
        ...

    async def connected(self, tenant: str, users: list[str]) -> set[str]:
        """Those of ``users`` some holder holds now."""
        ...


class MemoryDevices:
    """The device store of a single process (the node on the memory bus)."""

    def __init__(self, *, ttl_s: int, max_per_user: int) -> None:
        self._ttl_s = ttl_s
        self._max_per_user = max_per_user
        self._registrations: dict[tuple[str, str], tuple[Device, float]] = {}  # (tenant, token) -> (it, until)
        self._indexes: dict[tuple[str, str], dict[str, Device]] = {}  # (tenant, room) -> token -> registration
        self._quiet_until: dict[tuple[str, str], float] = {}

    def _current(self, tenant: str, token: str) -> Device | None:
        held = self._registrations.get((tenant, token))
        if held is None or held[1] <= time.monotonic():
            self._registrations.pop((tenant, token), None)
            return None
        return held[0]

    async def register(self, tenant: str, user: str, rooms: list[str], registration: Registration) -> list[str]:
        token = registration.token
        device = Device(registration.platform, user, rooms, int(time.time() * 1000))
        self._registrations[(tenant, token)] = (device, time.monotonic() + self._ttl_s)
        indexes = [self._indexes.setdefault((tenant, room), {}) for room in rooms]
        for index in indexes:
            index[token] = device
        own = indexes[0]
        over = len(own) - self._max_per_user
        forgotten = sorted((other for other in own if other != token), key=lambda other: own[other].at)[:max(over, 0)]
        for other in forgotten:
            for index in indexes:
                index.pop(other, None)
        return forgotten

    async def unregister(self, tenant: str, user: str, rooms: list[str], token: str) -> bool:
        current = self._current(tenant, token)
        removed = current is not None and current.user == user
        if removed:
            del self._registrations[(tenant, token)]
        for room in rooms:
            self._indexes.get((tenant, room), {}).pop(token, None)
        return removed

    async def devices(self, tenant: str, rooms: list[str]) -> dict[str, Device]:
        found: dict[str, Device] = {}
        for room in rooms:
            index = self._indexes.get((tenant, room), {})
            for token, device in list(index.items()):
                if self._current(tenant, token) == device:
                    found[token] = device
                else:
                    del index[token]
        return found

    async def drop(self, tenant: str, token: str, device: Device) -> None:
        self._registrations.pop((tenant, token), None)
        for room in device.rooms:
            self._indexes.get((tenant, room), {}).pop(token, None)

    async def quiet(self, tenant: str, user: str, quiet_s: float) -> bool:
        if quiet_s <= 0:
            return True
        now = time.monotonic()
        if self._quiet_until.get((tenant, user), 0.0) > now:
            return False
        self._quiet_until[(tenant, user)] = now + quiet_s
        return True


class MemoryLiveUsers:
    """The connected users of a single process (the node on the memory bus)."""

    def __init__(self) -> None:
        self._leases: dict[tuple[str, str], dict[str, float]] = {}  # (tenant, user) -> holder -> until
        self._pruned_at = 0.0

    async def hold(self, holder: str, connected: list[tuple[str, str]], gone: list[tuple[str, str]], *,
                   lease_s: float, grace_s: float) -> None:
        """The pairs nobody holds any more are forgotten at most once per ``grace_s``
        (``connected`` ignores a lapsed lease meanwhile): when every hold went over every
        user, a connect storm's thousands of small holds took seconds of CPU
        (bench/RESULTS.md §33)."""
        now = time.time()
        for pairs, until in ((connected, now + lease_s), (gone, now + grace_s)):
            for pair in pairs:
                self._leases.setdefault(pair, {})[holder] = until
        if now - self._pruned_at >= grace_s:
            self._pruned_at = now
            for pair in [pair for pair, holders in self._leases.items() if max(holders.values()) < now]:
                del self._leases[pair]

    async def connected(self, tenant: str, users: list[str]) -> set[str]:
        now = time.time()
        return {user for user in users if any(until >= now for until in self._leases.get((tenant, user), {}).values())}
