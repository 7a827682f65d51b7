"""The Redis Streams bus: many nodes, one Redis (standalone or Redis Cluster).

Keys per shard, all with the shard as Redis Cluster hash tag (docs/protocol.md, Publishing):

* ``rt:{<shard>}:events`` — the stream; entries ``event tenant rooms data [id ts
  traceparent]`` as any backbone ``XADD`` writes them; ``MAXLEN ~ retention``.
* ``rt:{<shard>}:epoch`` — drawn once (``SET NX``); a stream that was lost with its Redis
  comes back with a new epoch, so old cursors answer ``recovered: false``.
* ``rt:{<shard>}:id:<id>`` — the entry id of an event published through rtserver with an
  ``id``; set atomically with the append (Lua), expires after ``bus.dedupe_ttl_s``.
* ``rt:{<shard>}:ephemeral`` — PUB/SUB channel of the ephemeral events (never stored).
* ``rt:{<shard>}:inbound`` — client commands for the backbone (``mark_alert_read``):
  ``event tenant user session data ts``; ``MAXLEN ~ retention``.
* ``rt:{<shard>}:dead`` — entries that were never forwarded: malformed, or refused by
  the catalog (``validate``), each with ``reason``, the original ``entry`` id and fields.

Entries a producer appended twice (a retried plain ``XADD`` with the same ``id``) are
dropped when read: an entry whose ``id`` appeared in the previous ``bus.read_dedupe_window``
entries of its stream is a repeat. Live readers and history reads apply the same rule to
the same entries, so every node and every resume decides alike. The live reader keeps
what it decided (``RepeatLedger``), so a history read after the position it started
from asks the ledger instead of reading the window again: a resume costs what it missed.

Lost history is detected from ``XINFO STREAM`` (Redis ≥ 7.0): a cursor older than the
first entry of a stream that had more entries added than it holds (``MAXLEN`` trimmed
them), or older than ``max-deleted-entry-id`` (``XDEL``), answers ``recovered: false``.
A cursor at exactly the last trimmed entry is refused too: the stream cannot prove that
nothing followed it (the safe side: the client reloads).

Redis is spoken through the process's ``RedisLink`` (``rtserver.backends.redis_link``:
deadlines, ``BusUnavailable`` for every failure, errors counted by kind; the stores use
the same link). The blocking ``XREAD`` has a dedicated connection and a server-side BLOCK
shorter than the deadline around it; a health probe (``PING`` of every master every
``bus.health_interval_s``) notices a hung Redis even when nothing else is asking, so the
node turns not ready and reconnects.

Every entry read from a stream is checked against the event catalog before anyone is
handed it (``parse_entry``): the nodes, the schedule projector and the webhook and push
dispatchers all open the bus with the same catalog (``RedisBus.for_config``), so an
entry one of them refuses (and the nodes dead-letter) is forwarded by none.
"""

from __future__ import annotations

import collections
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence

import msgspec
import structlog
import trio

from protocol.catalog import Catalog
from protocol.cursors import MAX_OFFSET_PART, Cursor, Offset, shard_of
from protocol.envelope import Envelope, Inbound, StoredEvent
from protocol.errors import ReplyError
from protocol.limits import decode_bounded
from protocol.polling_relay import RELAY_TENANT
from rtserver.backends.bus import AppendResult, History, broadcast, ephemeral_event, live_feed
from rtserver.backends.config import BusConfig, Config
from rtserver.backends.redis_client import Command, Connection, ErrorReply, Unreachable, pairs, stream_entries
from rtserver.backends.redis_link import BusUnavailable, RedisLink
from rtserver.backends.retry import Backoff

#: Server-side BLOCK of the live reader's XREAD (and the ephemeral reader's wait), ms.
READ_BLOCK_MS = 1000
#: Entries one XREAD returns at most.
READ_COUNT = 1000
#: Entries of a read handed on between two yields to the other tasks (the routing and
#: fan-out of what was handed on): fewer task switches per event, a bounded delay.
YIELD_EVERY = 64

# KEYS[1] stream, KEYS[2] id key; ARGV[1] maxlen, ARGV[2] id ttl s, ARGV[3..] field, value...
_APPEND_ONCE = """
local existing = redis.call('GET', KEYS[2])
if existing then return {existing, 1} end
local eid = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[2], eid, 'EX', ARGV[2])
return {eid, 0}
"""

#: How often the readers' lag is measured, s; the lag over which the node is not ready.
LAG_INTERVAL_S = 2.0
READY_LAG_ENTRIES = 1_000

log = structlog.get_logger("rtserver.bus.redis")
_json = msgspec.json.Encoder()
_decode_rooms = msgspec.json.Decoder(list[str]).decode
_decode_data = msgspec.json.Decoder(dict).decode
_decode_ephemeral = msgspec.json.Decoder(StoredEvent).decode
#: The greatest stream offset (Redis Streams ids are two unsigned 64-bit integers).
LAST_OFFSET = Offset(MAX_OFFSET_PART, MAX_OFFSET_PART)


def stream_key(shard: int) -> str:
    return f"rt:{{{shard}}}:events"


def _epoch_key(shard: int) -> str:
    return f"rt:{{{shard}}}:epoch"


def _id_key(shard: int, event_id: str) -> str:
    return f"rt:{{{shard}}}:id:{event_id}"


def inbound_key(shard: int) -> str:
    return f"rt:{{{shard}}}:inbound"


def _channel(shard: int) -> str:
    return f"rt:{{{shard}}}:ephemeral"


def _fields(envelope: Envelope) -> list[bytes | str]:
    """The stream entry's fields and values, alternating."""
    fields: list[bytes | str] = [
        "event", envelope.event, "tenant", envelope.tenant,
        "rooms", _json.encode(envelope.rooms), "data", _json.encode(envelope.data),
    ]
    for name in ("id", "ts", "traceparent"):
        value = getattr(envelope, name)
        if value is not None:
            fields += [name, str(value)]
    return fields


def _xadd(key: str, maxlen: int, entry_id: str | bytes, fields: Sequence[bytes | str | int]) -> Command:
    """``XADD`` of ``fields`` (names and values alternating), the stream trimmed to about ``maxlen``."""
    return ("XADD", key, "MAXLEN", "~", maxlen, entry_id, *fields)


def _offset(entry_id: bytes | str) -> Offset:
    return Offset.parse(entry_id.decode() if isinstance(entry_id, bytes) else entry_id)


class DedupeWindow:
    """The ``id`` fields of the last ``size`` entries of a stream, in stream order."""

    __slots__ = ("size", "_order", "_counts")

    def __init__(self, size: int) -> None:
        self.size = size
        self._order: collections.deque[bytes | None] = collections.deque()
        self._counts: collections.Counter[bytes] = collections.Counter()

    def seen_then_add(self, fields: dict[bytes, bytes]) -> bool:
        """Whether the entry repeats an id of the window; the entry joins the window."""
        event_id = fields.get(b"id")
        repeated = event_id is not None and self._counts[event_id] > 0
        self._order.append(event_id)
        if event_id is not None:
            self._counts[event_id] += 1
        if len(self._order) > self.size:
            oldest = self._order.popleft()
            if oldest is not None:
                self._counts[oldest] -= 1
        return repeated


class RepeatLedger:
    """The live reader's decisions on one shard: which entries after ``start`` through
    ``through`` were producers' repeats (the ``RepeatLedger.KEPT`` newest of them)."""

    __slots__ = ("start", "through", "repeats", "_order", "_advanced")
    KEPT = 100_000

    def __init__(self, start: Offset) -> None:
        self.start = start
        self.through = start
        self.repeats: set[Offset] = set()
        self._order: collections.deque[Offset] = collections.deque()
        self._advanced = trio.Event()

    def judged(self, offset: Offset, repeated: bool) -> None:
        """The live reader decided on the entry at ``offset`` (in stream order)."""
        if repeated:
            self.repeats.add(offset)
            self._order.append(offset)
            if len(self._order) > self.KEPT:  # forgotten: entries up to it are no longer answered
                self.start = self._order.popleft()
                self.repeats.discard(self.start)
        self.through = offset

    def advanced(self) -> None:
        """Wake the history reads waiting for the reader to reach their entries."""
        self._advanced.set()
        self._advanced = trio.Event()

    async def wait_through(self, offset: Offset) -> None:
        """Until the reader decided on the entry at ``offset`` (bound it with a scope)."""
        while self.through < offset:
            await self._advanced.wait()


def _is_repeated_dead_letter(error: Exception) -> bool:
    """The refusal of a dead letter whose id another node's dead letter already took."""
    return "equal or smaller than the target stream top item" in str(error)


def _info(answer: list | ErrorReply) -> dict | None:
    """What the bus needs of an ``XINFO STREAM`` answer; None for no stream (the answer
    was the error "no such key")."""
    if isinstance(answer, Exception):
        return None
    xinfo = pairs(answer)
    return {
        "last": _offset(xinfo[b"last-generated-id"]),
        "first": _offset(xinfo[b"recorded-first-entry-id"]),
        "added": xinfo[b"entries-added"],
        "trimmed": xinfo[b"entries-added"] > xinfo[b"length"],
        "max-deleted": _offset(xinfo[b"max-deleted-entry-id"]),
    }


def dead_letter_key(shard: int) -> str:
    return f"rt:{{{shard}}}:dead"


#: Dead letters kept per shard (``MAXLEN ~``).
DEAD_LETTERS_KEPT = 10_000


class RedisBus:
    spans_nodes = True

    def __init__(
        self,
        config: BusConfig,
        url: str,
        catalog: Catalog,
        *,
        on_dead_letter: Callable[[str], None] | None = None,
    ) -> None:
        """Entries that break ``catalog`` are never handed on (the live readers put them
        in the dead-letter stream); ``on_dead_letter(code)`` counts what went there."""
        self.shards = config.shards
        #: The shards this node reads live (``bus.read_shards``, all by default), with the
        #: Socket.IO relays' own, which every node reads.
        self.read = tuple(sorted({*(config.read_shards or range(config.shards)), shard_of(RELAY_TENANT, config.shards)}))
        self._config = config
        self._url = url
        self._catalog = catalog
        self._on_dead_letter = on_dead_letter
        #: The connection every Redis user of this process shares (the stores too).
        self.link = RedisLink(config, url)
        self._epochs: dict[int, str] = {}
        self._subscribers: list[trio.MemorySendChannel[StoredEvent]] = []
        self._ready = False
        #: Times the connection to Redis was lost (for metrics).
        self.reconnects = 0
        #: Per shard: (entries, seconds) this node's reader is behind the stream's end.
        self.lag: dict[int, tuple[int, float]] = {s: (0, 0.0) for s in self.read}
        #: Per shard: the stream's ``entries-added`` count at this reader's position.
        self._consumed: dict[int, int] = {}
        #: Per shard: what the live reader decided about producers' repeats.
        self._ledgers: dict[int, RepeatLedger] = {}

    @classmethod
    def for_config(cls, config: Config, *, on_dead_letter: Callable[[str], None] | None = None) -> RedisBus:
        """The bus of ``config.bus.redis_url``, checking entries against the configured
        catalog: how every process that reads the streams opens them."""
        return cls(config.bus, config.bus.redis_url, config.catalog(), on_dead_letter=on_dead_letter)

    def serves(self, tenant: str) -> bool:
        return shard_of(tenant, self.shards) in self.read

    def ready(self) -> bool:
        """Connected, Redis answering, and no shard's reader more than ``READY_LAG_ENTRIES`` behind."""
        return self._ready and self.link.healthy and all(entries <= READY_LAG_ENTRIES for entries, _ in self.lag.values())

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Feed live subscribers until cancelled, through Redis outages.

        Reports started once the feeds are in place, or at the first failure to connect (a
        node starts without Redis and says so on ``/readyz``). While Redis cannot be
        reached the bus is not ``ready``, calls fail with a temporary ``UNAVAILABLE``
        error, and it reconnects with exponential backoff and jitter. Reading resumes from
        this node's own positions; a shard whose epoch changed (the stream was lost) is
        read from its new start.
        """
        positions: dict[str, str] = {}
        backoff = Backoff()
        started = False

        def report_started() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        try:
            while True:
                connected_at = trio.current_time()
                try:
                    await self._serve_feeds(positions, report_started)
                except* BusUnavailable as group:
                    report_started()
                    self._ready = False
                    self.reconnects += 1
                    if trio.current_time() - connected_at > backoff.max_s:
                        backoff.reset()  # it had been working: start over
                    log.warning("bus_unavailable", error=str(group.exceptions[0]), retry_in_s=round(backoff.next_s, 2))
                await backoff.pause()
        finally:
            self._ready = False
            self.link.close()

    async def _serve_feeds(self, positions: dict[str, str], on_ready: Callable[[], None]) -> None:
        """One connected period: fresh connections (none to a server that went away),
        epochs and positions established again, then read."""
        readers: list[tuple[Connection, list[int]]] = []
        pubsub = None
        try:
            readers, pubsub = await self._connect()
            for shard in self.read:
                key, known = stream_key(shard), self._epochs.get(shard)
                epoch = await self._epoch(shard)
                if key not in positions:  # first connection: live from now on
                    info = await self._stream_info(shard)
                    positions[key] = str(info["last"] if info else Offset(0, 0))
                    self._consumed[shard] = info["added"] if info else 0
                elif epoch != known:  # the stream was lost: all it holds now is new
                    positions[key] = str(Offset(0, 0))
                    self._consumed[shard] = 0
            await self.link.answer(0.0, pubsub.send, [("SUBSCRIBE", *(_channel(s) for s in self.read))])
            self._ready = True
            on_ready()
            async with trio.open_nursery() as nursery:
                for reader, shards in readers:
                    nursery.start_soon(self._read_streams, reader, shards, positions)
                nursery.start_soon(self._read_ephemeral, pubsub)
                nursery.start_soon(self._measure_lag, positions)
                nursery.start_soon(self._probe_health)
        finally:
            for connection in (pubsub, *(reader for reader, _ in readers)):
                if connection is not None:
                    connection.discard()

    async def _connect(self) -> tuple[list[tuple[Connection, list[int]]], Connection]:
        """The command client (``self._redis``), the dedicated blocking readers with the
        shards each reads, and the PUB/SUB connection of the ephemeral events.

        A standalone Redis gets one reader for every shard. On a Redis Cluster commands
        are routed to the master of their key's slot; ``XREAD`` cannot name keys of two
        slots, so each shard gets a reader connected to the master owning its slot (a slot
        that moves answers ``MOVED``: the bus reconnects and reads the topology again).
        Ephemeral events use classic PUB/SUB, which a cluster forwards to every node, so
        one subscription on any master hears every shard's channel.
        """
        await self.link.connect()
        client = self.link.client
        keys = [stream_key(s) for s in self.read] if client.clustered else [None]
        readers = []
        try:
            for key in keys:
                readers.append(await self.link.answer(0.0, client.dedicated, key))
            pubsub = await self.link.answer(0.0, client.dedicated)
        except BaseException:
            for reader in readers:
                reader.discard()
            raise
        if not client.clustered:
            return [(readers[0], list(self.read))], pubsub
        return [(reader, [shard]) for shard, reader in zip(self.read, readers, strict=True)], pubsub

    @contextlib.asynccontextmanager
    async def commands(self) -> AsyncIterator[RedisBus]:
        """Connected for commands alone, without live feeds (the outbox relay, the webhook
        dispatcher), epochs known; ``BusUnavailable`` when Redis cannot be reached."""
        try:
            await self.link.connect()
            for shard in range(self.shards):
                await self._epoch(shard)
            yield self
        finally:
            self.link.close()

    async def epoch(self, shard: int) -> str:
        """The shard's epoch as last seen (read, or drawn, when not known yet)."""
        return self._epochs.get(shard) or await self._epoch(shard)

    async def _epoch(self, shard: int) -> str:
        """The shard's epoch, drawn if the key is missing (a new or lost stream)."""
        drawn = secrets.token_hex(4)
        return self._settle_epoch(
            shard, drawn, await self.link.call("SET", _epoch_key(shard), drawn, "NX", "GET"))

    def _settle_epoch(self, shard: int, drawn: str, existing: bytes | None) -> str:
        """The epoch after ``SET NX GET`` of ``drawn``: the existing one, else ``drawn``."""
        epoch = existing.decode() if existing is not None else drawn
        self._epochs[shard] = epoch
        return epoch

    def _stored(self, shard: int, entry_id, fields: dict[bytes, bytes]) -> StoredEvent:
        offset = _offset(entry_id)
        raw_ts = fields.get(b"ts")
        envelope = Envelope(
            event=fields[b"event"].decode(),
            tenant=fields[b"tenant"].decode(),
            rooms=decode_bounded(_decode_rooms, fields[b"rooms"]),
            data=decode_bounded(_decode_data, fields.get(b"data", b"{}")),
            id=fields[b"id"].decode() if b"id" in fields else None,
            ts=int(raw_ts) if raw_ts else None,
            traceparent=fields[b"traceparent"].decode() if b"traceparent" in fields else None,
        )
        return StoredEvent(
            envelope=envelope,
            id=envelope.id or str(offset),
            ts=envelope.ts or offset.ms,
            offset=offset,
            cursor=Cursor(shard, self._epochs[shard], offset).encode(),
        )

    async def append(self, envelope: Envelope) -> AppendResult:
        shard = shard_of(envelope.tenant, self.shards)
        fields = _fields(envelope)
        if envelope.id is None:
            entry_id = await self.link.call(*_xadd(stream_key(shard), self._config.retention, "*", fields))
            duplicate = False
        else:
            [(entry_id, duplicate)] = await self.link.scripts(_APPEND_ONCE, [(
                [stream_key(shard), _id_key(shard, envelope.id)],
                [self._config.retention, self._config.dedupe_ttl_s, *fields])])
        offset = _offset(entry_id)
        epoch = await self.epoch(shard)
        event = StoredEvent(
            envelope=envelope, id=envelope.id or str(offset), ts=envelope.ts or offset.ms,
            offset=offset, cursor=Cursor(shard, epoch, offset).encode())
        return AppendResult(event, duplicate=bool(duplicate))

    async def publish_ephemeral(self, *envelopes: Envelope) -> list[StoredEvent]:
        events = [ephemeral_event(envelope) for envelope in envelopes]
        await self.link.execute([("PUBLISH", _channel(shard_of(event.envelope.tenant, self.shards)),
                             msgspec.json.encode(event)) for event in events])
        return events

    async def hand_in(self, command: Inbound) -> str:
        fields = ["event", command.event, "tenant", command.tenant, "user", command.user,
                  "session", command.session, "data", _json.encode(command.data), "ts", command.ts]
        entry_id = await self.link.call(*_xadd(inbound_key(shard_of(command.tenant, self.shards)),
                                          self._config.retention, "*", fields))
        return entry_id.decode()

    async def read_since(self, cursor: Cursor, limit: int) -> History:
        if cursor.shard >= self.shards:
            return History([], recovered=False, cursor=await self.head(0), more=False)
        shard = cursor.shard
        # One round trip: the epoch (drawn if the stream was lost), what the stream holds,
        # and the page; the page is thrown away when the cursor cannot be honoured.
        drawn, key = secrets.token_hex(4), stream_key(shard)
        commands: list[Command] = [("SET", _epoch_key(shard), drawn, "NX", "GET"), ("XINFO", "STREAM", key)]
        if cursor.offset < LAST_OFFSET:  # no entry can follow the last offset there is
            commands.append(("XRANGE", key, f"({cursor.offset}", "+", "COUNT", limit + 1))
        existing, raw_info, *page = await self.link.execute(commands)
        read = stream_entries(page[0]) if page else []
        epoch, info = self._settle_epoch(shard, drawn, existing), _info(raw_info)
        head = Cursor(shard, epoch, info["last"] if info else Offset(0, 0))
        if cursor.epoch != epoch or cursor.offset > head.offset or (info is not None and (
                cursor.offset < info["max-deleted"] or (info["trimmed"] and cursor.offset < info["first"]))):
            return History([], recovered=False, cursor=head, more=False)
        page = read[:limit]
        repeated = await self._repeats(shard, cursor.offset, _offset(page[-1][0])) \
            if any(b"id" in fields for _, fields in page) else None  # no producer ids: nothing repeats
        events = []
        for entry_id, fields in page:
            if repeated is not None and repeated(_offset(entry_id), fields):
                continue  # a producer's repeat
            parsed = self._parse(shard, entry_id, fields)
            if isinstance(parsed, StoredEvent):  # the live readers dead-letter the rest
                events.append(parsed)
        last = Cursor(shard, epoch, _offset(page[-1][0])) if page else cursor
        return History(events, recovered=True, cursor=last, more=len(read) > limit)

    async def _repeats(self, shard: int, after: Offset, last: Offset) -> Callable[[Offset, dict], bool]:
        """Whether each entry after ``after`` through ``last`` (asked in stream order) is a
        producer's repeat: from the live reader's ledger when it started before ``after``
        (waiting, within the call deadline, for it to reach ``last``), else by reading the
        dedupe window before ``after``."""
        ledger = self._ledgers.get(shard)
        if ledger is not None and ledger.start <= after:
            with trio.move_on_after(self._config.call_timeout_s):
                await ledger.wait_through(last)
            if ledger.through >= last and self._ledgers.get(shard) is ledger:
                return lambda offset, fields: offset in ledger.repeats
        window = await self._window_before(shard, str(after))
        return lambda offset, fields: window.seen_then_add(fields)

    async def _window_before(self, shard: int, position: str) -> DedupeWindow:
        """The dedupe window as it stands after the entry at ``position`` (inclusive)."""
        window = DedupeWindow(self._config.read_dedupe_window)
        if window.size:
            previous = await self.link.call("XREVRANGE", stream_key(shard), position, "-", "COUNT", window.size)
            for _, fields in reversed(stream_entries(previous)):
                window.seen_then_add(fields)
        return window

    async def _stream_info(self, shard: int) -> dict | None:
        [answer] = await self.link.execute([("XINFO", "STREAM", stream_key(shard))])
        return _info(answer)

    async def head(self, shard: int) -> Cursor:
        info = await self._stream_info(shard)
        epoch = await self.epoch(shard)
        return Cursor(shard, epoch, info["last"] if info else Offset(0, 0))

    def subscribe(self, capacity: int):
        return live_feed(self._subscribers, capacity)

    async def _read_streams(self, reader: Connection, shards: list[int], positions: dict[str, str]) -> None:
        """XREAD BLOCK ``shards`` from this node's own positions; feed the subscribers."""
        shard_of_key = {stream_key(s).encode(): s for s in shards}
        windows = {s: await self._window_before(s, positions[stream_key(s)]) for s in shards}
        for shard in shards:  # a ledger goes on only from where it stopped
            position, ledger = _offset(positions[stream_key(shard)]), self._ledgers.get(shard)
            if ledger is None or ledger.through != position:
                self._ledgers[shard] = RepeatLedger(position)
        while True:
            keys = [stream_key(s) for s in shards]
            [answer] = await self.link.answer(READ_BLOCK_MS / 1000, reader.execute, [(
                "XREAD", "COUNT", READ_COUNT, "BLOCK", READ_BLOCK_MS, "STREAMS", *keys, *(positions[k] for k in keys))])
            for key, read in self.link.raised(answer) or ():
                shard, position_key = shard_of_key[key], key.decode()
                ledger = self._ledgers[shard]
                for handed, (entry_id, fields) in enumerate(stream_entries(read), 1):
                    repeated = windows[shard].seen_then_add(fields)
                    if not repeated:
                        event = await self._checked(shard, entry_id, fields)
                        if event is not None:  # the next read (or every YIELD_EVERY) yields
                            await broadcast(self._subscribers, event, checkpoint=handed % YIELD_EVERY == 0)
                    # Per entry: a reconnect in the middle of a batch re-reads nothing handed on.
                    positions[position_key] = entry_id.decode()
                    ledger.judged(_offset(entry_id), repeated)
                    self._consumed[shard] += 1
                ledger.advanced()

    def parse_entry(self, shard: int, entry_id: bytes, fields: dict[bytes, bytes]) -> StoredEvent | None:
        """The entry as an event; None when it must not be forwarded (dead-lettered)."""
        parsed = self._parse(shard, entry_id, fields)
        return parsed if isinstance(parsed, StoredEvent) else None

    def _parse(self, shard: int, entry_id: bytes, fields: dict[bytes, bytes]) -> StoredEvent | tuple[str, str]:
        """The entry as an event, or (reason code, reason) when it must not be forwarded."""
        try:
            event = self._stored(shard, entry_id, fields)
            env = event.envelope
            self._catalog.validate_publish(env.event, env.tenant, env.rooms, env.data)
            return event
        except ReplyError as exc:
            return exc.code.name.lower(), exc.message
        except (KeyError, ValueError, TypeError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            return "malformed", f"malformed entry: {type(exc).__name__}: {exc}"

    async def _checked(self, shard: int, entry_id: bytes, fields: dict[bytes, bytes]) -> StoredEvent | None:
        """The entry as an event, or None once it is in the dead-letter stream.

        Every node reads every entry, so each would dead-letter it: the dead letter takes
        the entry's own id, and the nodes after the first are refused by Redis (an id not
        above the stream's top), so each bad entry is dead-lettered and counted once.
        """
        parsed = self._parse(shard, entry_id, fields)
        if isinstance(parsed, StoredEvent):
            return parsed
        code, reason = parsed
        kept = {b"reason": reason.encode(), b"code": code.encode(), b"entry": entry_id, **fields}
        answer = await self.link.reply(*_xadd(dead_letter_key(shard), DEAD_LETTERS_KEPT, entry_id,
                                         [item for pair in kept.items() for item in pair]))
        if isinstance(answer, ErrorReply):
            if not _is_repeated_dead_letter(answer):  # not recorded (out of memory...): still never forwarded
                self.link.refused(answer)
                log.warning("dead_letter_not_recorded", shard=shard, entry=entry_id.decode(), code=code)
            return None
        if self._on_dead_letter is not None:
            self._on_dead_letter(code)
        return None

    async def _measure_lag(self, positions: dict[str, str]) -> None:
        """Every ``LAG_INTERVAL_S``: how far each shard's reader is behind its stream, from
        ``XINFO`` alone (entries added minus entries this reader consumed)."""
        while True:
            answers = await self.link.execute([("XINFO", "STREAM", stream_key(s)) for s in self.read])
            for shard, answer in zip(self.read, answers, strict=True):
                info = _info(answer)
                behind = max(0, info["added"] - self._consumed[shard]) if info else 0
                position = Offset.parse(positions[stream_key(shard)])
                seconds = max(0.0, time.time() - position.ms / 1000) if behind and position.ms else 0.0
                self.lag[shard] = (behind, seconds)
            await trio.sleep(LAG_INTERVAL_S)

    async def _probe_health(self) -> None:
        """``PING`` of every master every ``bus.health_interval_s``: a Redis that stops
        answering (not only one that closes connections) fails it within
        ``bus.call_timeout_s``, and the bus turns not ready and reconnects."""
        while True:
            await trio.sleep(self._config.health_interval_s)
            await self.link.probe()

    async def _read_ephemeral(self, pubsub: Connection) -> None:
        """Hand on what the nodes publish. A quiet channel is normal: no deadline here (the
        health probe notices a hung Redis and the whole connected period starts again)."""
        while True:
            try:
                message = await pubsub.receive()
            except Unreachable as exc:
                raise self.link.lost(exc) from None
            if isinstance(message, list) and message[0] == b"message":
                try:
                    event = decode_bounded(_decode_ephemeral, message[2])
                except (ReplyError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                    # Only nodes publish there; anything else is dropped, never forwarded.
                    log.warning("ephemeral_malformed", error=str(exc)[:200])
                    continue
                await broadcast(self._subscribers, event)
