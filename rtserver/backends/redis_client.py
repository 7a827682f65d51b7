"""A Trio-native Redis client: RESP2 over Trio sockets, replies parsed by hiredis' C reader.

Why not redis-py: it is an asyncio library, so from Trio every call crossed into asyncio
through trio-asyncio. Measured on the 2-vCPU VM (``bench/redis_clients.py``, figures in
bench/RESULTS.md, "A Trio-native Redis client"): the three-command pipeline of a resume
costs 1,060 µs of CPU through redis-py, 767 µs through coredis (anyio), 120 µs here.

What it does — what rtserver needs, no more:

* Commands are tuples of ``str``/``bytes``/``int``/``float``; ``execute`` pipelines a list
  of them and returns the answers in order. An error reply is returned in its place as an
  ``ErrorReply`` (never raised): the caller judges it.
* A bounded pool of connections per server: callers wait for a free one (a burst of
  handshakes queues on the node instead of opening a connection each).
* Redis Cluster (found by asking the server): the slots from ``CLUSTER SLOTS``, each
  command sent to the master of its key's slot. rtserver's keys carry their shard as hash
  tag, so a command never spans slots; a pipeline over several shards is split by master
  and its answers put back in order. ``MOVED``, ``ASK``, ``TRYAGAIN`` and ``CLUSTERDOWN``
  replies mean the topology changed: the call fails with ``Unreachable`` and the slots are
  read again before the next one.
* ``dedicated``: a connection of its own for a blocking read or PUB/SUB.

Failures: a refused or lost connection, an end of stream or a reply hiredis cannot read
raise ``Unreachable``. There is no timeout inside: the caller's cancel scope is the
deadline, and a call cancelled halfway through discards its connection (its replies would
answer the next caller).
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

import hiredis
import trio
from redis.crc import key_slot

Command = Sequence[str | bytes | int | float]

#: Bytes read from a socket at a time.
READ_SIZE = 65536
#: What hiredis answers while a reply is not complete yet.
_INCOMPLETE = object()
#: Error replies that mean a cluster's slots moved or are not served now.
_TOPOLOGY_ERRORS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")
#: Commands whose key is their third word (``XINFO STREAM key``, ``XGROUP CREATE key ...``).
_SUBCOMMAND_KEY = {"XINFO", "XGROUP"}
#: Commands without a key: sent to any master.
_KEYLESS = {"PING", "INFO", "SCRIPT", "CLUSTER", "CONFIG", "FLUSHALL", "DBSIZE"}


class ErrorReply(Exception):
    """An error reply of Redis (``WRONGTYPE ...``, ``NOSCRIPT ...``), returned in place."""


class Unreachable(Exception):
    """Redis cannot serve the call now: down, the connection lost, or the cluster's slots moved."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect (from a ``redis://`` or ``rediss://`` URL)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"redis URL {url!r}: the scheme must be redis:// or rediss://")
        path = parts.path.strip("/")
        return cls(
            host=parts.hostname or "localhost", port=parts.port or 6379, tls=parts.scheme == "rediss",
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=urllib.parse.unquote(parts.password) if parts.password else None,
            db=int(path) if path else 0)

    def at(self, host: str, port: int) -> Endpoint:
        """The same credentials on another server (a cluster master)."""
        return Endpoint(host, port, self.tls, self.username, self.password, self.db)


def _is_topology_error(answer: object) -> bool:
    return isinstance(answer, ErrorReply) and str(answer).split(" ", 1)[0] in _TOPOLOGY_ERRORS


class Connection:
    """One socket to one server: a pipeline is written whole and its replies read in order."""

    __slots__ = ("_stream", "_reader")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._reader = hiredis.Reader(replyError=ErrorReply, notEnoughData=_INCOMPLETE)

    @classmethod
    async def open(cls, endpoint: Endpoint) -> Connection:
        """Connected, authenticated and on the endpoint's database."""
        try:
            if endpoint.tls:
                stream = await trio.open_ssl_over_tcp_stream(
                    endpoint.host, endpoint.port, ssl_context=ssl.create_default_context())
            else:
                stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        except OSError as exc:
            raise Unreachable(f"{endpoint.host}:{endpoint.port}: {exc}") from None
        connection = cls(stream)
        setup: list[Command] = []
        if endpoint.password is not None:
            setup.append(("AUTH", endpoint.username, endpoint.password) if endpoint.username
                         else ("AUTH", endpoint.password))
        if endpoint.db:
            setup.append(("SELECT", endpoint.db))
        try:
            refused = [a for a in await connection.execute(setup) if isinstance(a, ErrorReply)] if setup else []
        except BaseException:
            connection.discard()
            raise
        if refused:
            connection.discard()
            raise Unreachable(f"{endpoint.host}:{endpoint.port}: {refused[0]}")
        return connection

    async def execute(self, commands: Sequence[Command]) -> list:
        """The answers of ``commands``, sent in one write. Anything but an answer (a lost
        connection, a cancellation) leaves the connection unusable: ``discard`` it."""
        await self.send(commands)
        return [await self.receive() for _ in commands]

    async def send(self, commands: Sequence[Command]) -> None:
        try:
            await self._stream.send_all(b"".join(hiredis.pack_command(tuple(c)) for c in commands))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise Unreachable(f"connection lost: {exc}") from None

    async def receive(self):
        """The next reply (or pushed PUB/SUB message)."""
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                raise Unreachable(f"unreadable reply: {exc}") from None
            if reply is not _INCOMPLETE:
                return reply
            try:
                data = await self._stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise Unreachable(f"connection lost: {exc}") from None
            if not data:
                raise Unreachable("connection closed by the server")
            self._reader.feed(data)

    def discard(self) -> None:
        """Close at once (no goodbye: the server may be hung)."""
        stream = self._stream
        while not isinstance(stream, trio.SocketStream):  # an SSLStream wraps the socket stream
            stream = stream.transport_stream
        stream.socket.close()


class Pool:
    """At most ``size`` connections to one server, opened when needed and reused."""

    def __init__(self, endpoint: Endpoint, size: int) -> None:
        self.endpoint = endpoint
        self._free = trio.Semaphore(size)
        self._idle: list[Connection] = []

    async def execute(self, commands: Sequence[Command]) -> list:
        async with self._free:
            connection = self._idle.pop() if self._idle else await Connection.open(self.endpoint)
            try:
                answers = await connection.execute(commands)
            except BaseException:
                connection.discard()
                raise
            self._idle.append(connection)
            return answers

    def close(self) -> None:
        while self._idle:
            self._idle.pop().discard()


class Redis:
    """Commands to one Redis deployment, standalone or cluster (see the module docstring)."""

    def __init__(self, endpoint: Endpoint, pool_size: int) -> None:
        self.endpoint = endpoint
        self._pool_size = pool_size
        self._pools: dict[tuple[str, int], Pool] = {}
        #: Per slot, the master serving it (a cluster), else None.
        self._slots: list[Pool] | None = None
        self._stale = False

    @classmethod
    async def connect(cls, url: str, pool_size: int) -> Redis:
        """Connected to the deployment at ``url`` (its slots read if it is a cluster)."""
        client = cls(Endpoint.parse(url), pool_size)
        try:
            [info] = await client._pool(client.endpoint).execute([("INFO", "cluster")])
            if isinstance(info, ErrorReply):
                raise Unreachable(f"INFO: {info}")
            if b"cluster_enabled:1" in info:
                await client._read_slots()
        except BaseException:
            client.close()
            raise
        return client

    @property
    def clustered(self) -> bool:
        return self._slots is not None

    def _pool(self, endpoint: Endpoint) -> Pool:
        key = (endpoint.host, endpoint.port)
        if key not in self._pools:
            self._pools[key] = Pool(endpoint, self._pool_size)
        return self._pools[key]

    async def _read_slots(self) -> None:
        pools = list(self._pools.values()) or [self._pool(self.endpoint)]
        [ranges] = await pools[0].execute([("CLUSTER", "SLOTS")])
        if isinstance(ranges, ErrorReply):
            raise Unreachable(f"CLUSTER SLOTS: {ranges}")
        slots: list[Pool | None] = [None] * 16384
        for start, end, master, *_replicas in ranges:
            host = master[0].decode() or self.endpoint.host
            pool = self._pool(self.endpoint.at(host, int(master[1])))
            for slot in range(start, end + 1):
                slots[slot] = pool
        if None in slots:
            raise Unreachable("the cluster does not serve every slot")
        self._slots = slots  # type: ignore[assignment]
        self._stale = False

    def masters(self) -> list[Pool]:
        """Every master (one pool for a standalone server)."""
        return list({id(p): p for p in self._slots}.values()) if self._slots else [self._pool(self.endpoint)]

    def pool_of(self, key: str | bytes | None) -> Pool:
        """The pool of the server that holds ``key`` (any master for None)."""
        if self._slots is None:
            return self._pool(self.endpoint)
        if key is None:
            return self.masters()[0]
        return self._slots[key_slot(key.encode() if isinstance(key, str) else key)]

    async def execute(self, commands: Sequence[Command]) -> list:
        """The answers of ``commands`` in order (error replies in place)."""
        if self._stale:
            await self._read_slots()
        if self._slots is None:
            answers = await self._pool(self.endpoint).execute(commands)
        else:
            answers = [None] * len(commands)
            by_pool: dict[int, tuple[Pool, list[int]]] = {}
            for i, command in enumerate(commands):
                pool = self.pool_of(_key_of(command))
                by_pool.setdefault(id(pool), (pool, []))[1].append(i)
            for pool, indexes in by_pool.values():
                for i, answer in zip(indexes, await pool.execute([commands[i] for i in indexes])):
                    answers[i] = answer
        moved = next((a for a in answers if _is_topology_error(a)), None)
        if moved is not None:
            self._stale = True
            raise Unreachable(f"the cluster's slots moved: {moved}")
        return answers

    async def call(self, *command: str | bytes | int | float):
        """One command's answer (an error reply returned, not raised)."""
        [answer] = await self.execute([command])
        return answer

    async def dedicated(self, key: str | None = None) -> Connection:
        """A connection of its own to the server of ``key`` (any master for None), for a
        blocking read or PUB/SUB; the caller discards it."""
        return await Connection.open(self.pool_of(key).endpoint)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()


def _key_of(command: Command) -> str | bytes | None:
    """The key a command acts on (the first one), or None for a command without a key."""
    name = _word(command[0])
    if name in _KEYLESS:
        return None
    if name in ("EVALSHA", "EVAL"):
        return command[3] if int(command[2]) > 0 else None
    if name in ("XREAD", "XREADGROUP"):
        return command[[_word(word) for word in command].index("STREAMS") + 1]
    if name in _SUBCOMMAND_KEY:
        return command[2]
    return command[1]


def _word(word: str | bytes | int | float) -> str:
    return (word.decode() if isinstance(word, bytes) else str(word)).upper()


def pairs(flat: list) -> dict:
    """A RESP2 flat list of names and values (``HGETALL``, ``XINFO STREAM``) as a dict."""
    return dict(zip(flat[::2], flat[1::2]))


def stream_entries(raw: list) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
    """Stream entries (``XRANGE``, ``XREAD``...) as (id, fields); fields None for an entry
    that was deleted while pending in a group."""
    return [(entry_id, pairs(fields) if fields is not None else None) for entry_id, fields in raw]
