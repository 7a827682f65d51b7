"""The Redis link: one Redis deployment as every Redis user of a process sees it — the
Streams bus, the presence, schedule-record and push stores, the outbox relay, the webhook
and push dispatchers.

It holds the command client of the current connected period (``rtserver.backends.redis_client``:
pools, cluster routing) and gives every call the same treatment:

* a deadline (``bus.call_timeout_s``, a Trio cancel scope): a Redis that hangs (stopped,
  overloaded, a network that drops packets) fails the call like one that is down;
* every failure is a temporary ``BusUnavailable`` for whoever called (503 over HTTP, a
  ``temporary`` error frame, close 1013 at a connection's start), counted by kind
  (``errors``): ``unreachable`` (down, a lost connection, cluster slots moving, no answer
  in time) or ``refused`` (an error reply: out of memory at ``maxmemory``, ``READONLY``
  from a replica after a failover, ``WRONGTYPE``, a script's error). The few replies a
  caller expects (a stream or group not made yet) are judged by that caller (``reply``,
  ``execute(keep=...)``);
* scripts by ``EVALSHA``, loaded on every master when a Redis does not know them yet.

A call that found Redis unreachable marks the link unhealthy (the node reports not ready);
it is healthy again at the next connection, or when every master answered a ``PING``
(``probe``).
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Awaitable, Callable, Sequence

import structlog
import trio

from protocol.errors import ReplyCode, ReplyError
from rtserver.backends.config import BusConfig
from rtserver.backends.redis_client import Command, ErrorReply, Redis, Unreachable

log = structlog.get_logger("rtserver.bus.redis")

#: The kinds of failed calls counted in ``RedisLink.errors``.
UNREACHABLE, REFUSED = "unreachable", "refused"


class BusUnavailable(ReplyError):
    """Redis cannot serve the call now (unreachable, or it answered an error reply): a
    temporary error for whoever called (503 over HTTP)."""

    def __init__(self, message: str) -> None:
        super().__init__(ReplyCode.UNAVAILABLE, message)


def is_missing_key(error: Exception) -> bool:
    """The error reply of a command on a key that does not exist (a stream not made yet)."""
    return isinstance(error, ErrorReply) and "no such key" in str(error).lower()


def _is_unknown_script(error: Exception) -> bool:
    return isinstance(error, ErrorReply) and str(error).startswith("NOSCRIPT")


class RedisLink:
    def __init__(self, config: BusConfig, url: str) -> None:
        self._config = config
        self._url = url
        self._redis: Redis | None = None
        #: False from a call that found Redis unreachable until it answers again.
        self.healthy = False
        #: Failed calls by kind (for metrics).
        self.errors = collections.Counter({UNREACHABLE: 0, REFUSED: 0})

    @property
    def client(self) -> Redis:
        """The command client of the current connected period."""
        if self._redis is None:
            raise BusUnavailable("redis: not connected yet")
        return self._redis

    async def connect(self) -> None:
        """A fresh command client: a bounded pool per server that makes callers wait for a
        free connection (a burst of handshakes queues instead of opening, or being
        refused, a connection each). The previous client serves calls until the fresh
        one is ready, then is closed: a reconnect never leaves callers without a client."""
        fresh = await self.answer(0.0, Redis.connect, self._url, self._config.redis_pool_size)
        previous, self._redis = self._redis, fresh
        if previous is not None:
            previous.close()
        self.healthy = True

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    async def call(self, *command: str | bytes | int | float):
        """One command's answer; ``BusUnavailable`` for any failure (an error reply included)."""
        return self.raised(await self.reply(*command))

    async def reply(self, *command: str | bytes | int | float):
        """``call``, but an error reply is returned (and not counted) for the caller to
        judge; one it did not expect is raised as ``refused(error)``."""
        return (await self.answer(0.0, self.client.execute, [command]))[0]

    async def execute(self, commands: Sequence[Command], keep: Callable[[Exception], bool] = is_missing_key) -> list:
        """The answers of ``commands``, pipelined; an error answer ``keep`` accepts (by
        default "no such key": a stream not made yet) stays in place, any other is raised
        as ``call`` does."""
        answers = await self.answer(0.0, self.client.execute, commands) if commands else []
        for answer in answers:
            if isinstance(answer, ErrorReply) and not keep(answer):
                raise self.refused(answer)
        return answers

    async def scripts(self, script: str, calls: list[tuple[list[str], list]]) -> list:
        """Run the Lua ``script`` once per (keys, args), pipelined; the answers in order.

        ``EVALSHA``; a Redis that does not know the script yet (new or restarted) gets it
        loaded (``SCRIPT LOAD`` on every master), and the calls it refused are run again.
        Any other error reply is raised as ``call`` does."""
        sha = hashlib.sha1(script.encode()).hexdigest()

        def evalsha(some: list[tuple[list[str], list]]) -> list[Command]:
            return [("EVALSHA", sha, len(keys), *keys, *args) for keys, args in some]

        answers = await self.execute(evalsha(calls), keep=_is_unknown_script)
        unknown = [i for i, answer in enumerate(answers) if _is_unknown_script(answer)]
        if unknown:  # run again only those: the others were carried out
            for master in self.client.masters():
                self.raised((await self.answer(0.0, master.execute, [("SCRIPT", "LOAD", script)]))[0])
            again = await self.execute(evalsha([calls[i] for i in unknown]), keep=lambda answer: False)
            for i, answer in zip(unknown, again):
                answers[i] = answer
        return answers

    async def probe(self) -> None:
        """``PING`` every master (``BusUnavailable`` when one does not answer in time); the
        link is healthy again when all did."""
        for master in self.client.masters():
            await self.answer(0.0, master.execute, [("PING",)])
        self.healthy = True

    async def answer(self, wait_s: float, operation: Callable[..., Awaitable], *args):
        """``operation(*args)`` within ``wait_s`` + ``bus.call_timeout_s`` (``wait_s``: how
        long a blocking command may wait on the server); a failure to reach Redis raised
        as ``BusUnavailable``."""
        try:
            with trio.fail_after(wait_s + self._config.call_timeout_s):
                return await operation(*args)
        except trio.TooSlowError:
            raise self.lost(f"no answer within {self._config.call_timeout_s:g} s") from None
        except Unreachable as exc:
            raise self.lost(exc) from None

    def raised(self, answer):
        """``answer``, unless it is an error reply: then ``refused(answer)`` is raised."""
        if isinstance(answer, ErrorReply):
            raise self.refused(answer)
        return answer

    def lost(self, error: Exception | str) -> BusUnavailable:
        """Count a failure to reach Redis (down, or no answer in time); the error to raise for it."""
        self.healthy = False
        self.errors[UNREACHABLE] += 1
        return BusUnavailable(f"redis: {error}")

    def refused(self, error: Exception) -> BusUnavailable:
        """Count an error reply nobody expected (out of memory, read-only, a script's
        error...); the temporary error to raise for it."""
        self.errors[REFUSED] += 1
        log.warning("bus_refused", error=str(error)[:300])
        return BusUnavailable(f"redis refused: {error}")
