"""Parking actor: where quiet connections wait for their client without a task of their own.

Contract
--------
Mailbox
    ``park(connection)`` (synchronous): a connection whose client has nothing more to say
    for now gives up its task and waits here; ``wake(connection)`` (synchronous): a parked
    connection must run now (it was told to close).
Owns
    One epoll instance watching the parked connections' sockets, the parked connections by
    file descriptor, a heap of their deadlines (one live entry per connection), and the
    tasks of the connections it resumes.
Replies
    None: it runs ``connection.resume()`` in a task of its own when the socket becomes
    readable (data, EOF or an error), when the connection's deadline comes (token expiry,
    idle timeout), or when it is woken; the connection then runs until it is quiet again
    (and parks) or ends. A parked connection's socket is not watched while it runs, so its
    commands are still carried out one at a time.
Failure
    A resumed connection contains its own failures (``resume``): logged, counted, that
    connection alone closed with 1011. An unexpected exception here ends the node
    (every parked connection depends on this actor). Once cancelled (the node stops), every
    parked connection is resumed into the cancelled nursery, so each ends as a connection
    with a task does (its close told to the client, shielded and bounded).
Blocking
    On the epoll instance (a file descriptor Trio waits on like a socket) until a parked
    socket is readable or the earliest deadline passes.

Why: a connection's task waiting on its socket, with its cancel scope, costs ~3.4 KB of
memory per idle connection (``bench/RESULTS.md``, §16 and §19); parked here it costs a dict
slot, a heap entry and the kernel's epoll entry. The writer already works the same way for
writes: only a connection whose socket is full has a task waiting on it.
"""

from __future__ import annotations

import heapq
import itertools
import math
import select
from typing import Protocol

import trio

from rtserver.backends.sockets import Sock, buffered


class Parkable(Protocol):
    """What the parking needs of a connection (an rt.v1 WebSocket, an SSE stream, a
    Socket.IO WebSocket)."""

    #: The time of its entry in the parking's heap (None: it has none). The parking's.
    alarm: float | None

    @property
    def socket(self) -> Sock: ...

    @property
    def deadline(self) -> float:
        """When it must run even if its client says nothing (trio time)."""

    async def resume(self) -> None:
        """Run until quiet again (it parks itself) or ended; its own failures are contained
        (answered, logged, counted), never raised."""


class Parking:
    def __init__(self) -> None:
        self._epoll: select.epoll | None = None
        self._nursery: trio.Nursery | None = None
        #: Parked connections by their socket's file descriptor.
        self._parked: dict[int, Parkable] = {}
        #: (time, order, connection): one live entry per connection (``alarm``), pushed as it
        #: parks if it has none or its deadline came earlier (the old entry is skipped); an
        #: entry that comes up early resumes it, and it parks again with its new deadline.
        self._alarms: list[tuple[float, int, Parkable]] = []
        self._order = itertools.count()  # among equal times
        self._sleep = trio.CancelScope()

    def __len__(self) -> int:
        """How many connections are parked."""
        return len(self._parked)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with select.epoll() as epoll:
            self._epoll = epoll
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                try:
                    await self._watch(epoll)
                finally:
                    for connection in list(self._parked.values()):
                        self._resume(connection)
            self._epoll = None

    async def _watch(self, epoll: select.epoll) -> None:
        alarms = self._alarms
        while True:
            with trio.CancelScope(deadline=alarms[0][0] if alarms else math.inf) as self._sleep:
                await trio.lowlevel.wait_readable(epoll)
            parked = self._parked
            for fd, _ in epoll.poll(0):
                self._resume(parked[fd])
            now = trio.current_time()
            while alarms and alarms[0][0] <= now:
                when, _, connection = heapq.heappop(alarms)
                if connection.alarm != when:
                    continue  # replaced by an earlier one
                connection.alarm = None
                if parked.get(connection.socket.fileno()) is connection:  # else running or ended
                    self._resume(connection)  # it parks again if its deadline moved on meanwhile

    def park(self, connection: Parkable) -> None:
        """Let ``connection`` wait without a task until its socket is readable, its deadline
        passes or it is woken (its socket already readable: it is resumed at once)."""
        if buffered(connection.socket):  # read already: epoll would not say so
            self._nursery.start_soon(connection.resume)
            return
        fd = connection.socket.fileno()
        self._parked[fd] = connection
        self._epoll.register(fd, select.EPOLLIN)
        deadline = connection.deadline
        if deadline < (math.inf if connection.alarm is None else connection.alarm):
            self._alarm(connection)

    def wake(self, connection: Parkable) -> None:
        """Resume ``connection`` now if it is still parked here. One resumed already (its
        socket readable or its deadline come, its task not run yet) is on its way: it sees
        why it was woken when it runs."""
        self._resume(connection)

    def _alarm(self, connection: Parkable) -> None:
        connection.alarm = when = connection.deadline
        heapq.heappush(self._alarms, (when, next(self._order), connection))
        if when < self._sleep.deadline:
            self._sleep.deadline = when

    def _resume(self, connection: Parkable) -> None:
        """Run ``connection`` again, once per park: a wake that comes after its socket or
        its deadline resumed it, before its task ran, finds it gone and does nothing."""
        fd = connection.socket.fileno()
        if self._parked.get(fd) is not connection:
            return
        del self._parked[fd]
        self._epoll.unregister(fd)
        self._nursery.start_soon(connection.resume)
