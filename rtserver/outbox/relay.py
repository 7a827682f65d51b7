"""``rtserver relay``: moves committed ``outbox_events`` rows into the shard streams.

Contract
  owns      a PostgreSQL session (asyncpg, through trio-asyncio) holding the leader locks
            of the shards this relay leads, and each led shard's cursor (commit_seq).
  reads     ``outbox_events`` rows of its led shards with ``commit_seq`` above the
            cursor, in ``commit_seq`` order (= commit order per shard, see schema.sql).
  writes    each batch with one Lua script per shard: a compare-and-set of the shard's
            relay cursor in Redis (``rt:{<shard>}:relay:<outbox id>``) and the ``XADD`` s,
            atomically;
            then the cursor's copy in ``rt_outbox_relayed``.
  leadership  one relay per shard: ``pg_try_advisory_lock(LEADER_LOCK, shard)`` on the
            session. Standbys try every ``outbox.standby_poll_s``; a relay that dies
            (``kill -9``, lost session) frees its locks with its session. A leader that
            kept running without its lock (a partition) is fenced by the compare-and-set:
            its next batch finds the cursor moved, appends nothing, and it gives the
            shard up.
  wake-up   LISTEN on ``rt_outbox`` (committing writers notify) as a hint; a poll every
            ``outbox.poll_interval_s`` is the guarantee.
  failure   PostgreSQL or Redis unreachable: everything is dropped (locks go with the
            session), and the relay reconnects with jittered exponential backoff.
  idempotent  a row is appended once: the cursor moves with the appends in one script. The
            event's ``id`` is the row's ``event_id``, so should Redis lose its data and the
            relay go back to the cursor kept in PostgreSQL, readers drop the repeats.
"""

from __future__ import annotations

import time

import asyncpg
import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from trio_asyncio import aio_as_trio

from rtserver.backends.bus.redis import RedisBus, stream_key
from rtserver.backends.config import Config
from rtserver.backends.metrics import watch_bus
from rtserver.backends.redis_link import BusUnavailable
from rtserver.backends.retry import Backoff
from rtserver.backends.tracing import Tracing
from rtserver.outbox import CHANNEL, LEADER_LOCK, check_schema

log = structlog.get_logger("rtserver.relay")


#: Failures meaning "PostgreSQL cannot serve now": reconnect. (A server shutting down can
#: leave asyncpg's connection mid-operation: InternalClientError, "another operation is in
#: progress"; the connection is dropped with the rest.)
PG_UNREACHABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                  asyncpg.exceptions.OperatorInterventionError)

# KEYS[1] stream, KEYS[2] relay cursor. ARGV[1] expected cursor ('' = none yet), ARGV[2] new
# cursor, ARGV[3] maxlen, then per entry: its number of field/value items, the items.
# Answers {1, new} or, when the cursor is not the expected one, {0, current}.
_RELAY = """
local current = redis.call('GET', KEYS[2]) or ''
if current ~= ARGV[1] then return {0, current} end
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
redis.call('SET', KEYS[2], ARGV[2])
return {1, ARGV[2]}
"""

_READ = """
SELECT commit_seq, event_id, tenant, event, rooms::text, data::text, ts, traceparent,
       extract(epoch FROM created_at)::float8 AS created
FROM outbox_events WHERE shard = $1 AND commit_seq > $2 ORDER BY commit_seq LIMIT $3
"""
_SAVE_CURSOR = """
INSERT INTO rt_outbox_relayed (shard, commit_seq) VALUES ($1, $2)
ON CONFLICT (shard) DO UPDATE SET commit_seq = greatest(rt_outbox_relayed.commit_seq, excluded.commit_seq),
                                  updated_at = now()
"""
_CLEAN = """
DELETE FROM outbox_events WHERE id IN (
    SELECT id FROM outbox_events
    WHERE shard = $1 AND commit_seq <= $2 AND created_at < now() - make_interval(secs => $3)
    LIMIT 10000)
"""


def relay_cursor_key(shard: int, outbox_id: str) -> str:
    return f"rt:{{{shard}}}:relay:{outbox_id}"


def entry_fields(row: asyncpg.Record, traceparent: str | None) -> list[str]:
    """A row as the field/value items of its stream entry (docs/protocol.md, Publishing),
    with ``traceparent`` (the row's, or the relay's span's when tracing)."""
    fields = ["event", row["event"], "tenant", row["tenant"], "rooms", row["rooms"], "data", row["data"],
              "id", row["event_id"]]
    if row["ts"] is not None:
        fields += ["ts", str(row["ts"])]
    if traceparent is not None:
        fields += ["traceparent", traceparent]
    return fields


class RelayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.rows = Counter("rt_relay_rows_total", "Outbox rows appended to the streams", registry=r)
        self.batches = Counter("rt_relay_batches_total", "Batches appended (one script each)", registry=r)
        self.fenced = Counter("rt_relay_fenced_total",
                              "Batches refused because another relay had moved the shard's cursor", registry=r)
        self.reconnects = Counter("rt_relay_reconnects_total", "Connected periods that ended in a failure",
                                  registry=r)
        self.leading = Gauge("rt_relay_leading_shards", "Shards this relay leads", registry=r)
        self.row_age = Histogram("rt_relay_row_age_seconds", "Row insertion to its append to the stream",
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
                                 registry=r)


class Shard(msgspec.Struct):
    """A led shard: the cursor, and the relay cursor's text in Redis ('' when none)."""

    cursor: int
    token: str


class Relay:
    def __init__(self, config: Config, metrics: RelayMetrics | None = None) -> None:
        if not config.outbox.postgres_dsn:
            raise ValueError("the relay needs outbox.postgres_dsn")
        if not config.bus.redis_url:
            raise ValueError("the relay needs bus.redis_url (it appends to the Redis shard streams)")
        self._config = config.outbox
        self._bus_config = config.bus
        self._redis = RedisBus.for_config(config)
        self.metrics = metrics or RelayMetrics()
        self.tracing = Tracing.for_config(config.tracing, "rtserver-relay")
        watch_bus(self.metrics.registry, self._redis)
        self._wake = trio.Event()
        self._notified_shards: set[int] = set()
        self.outbox_id = ""
        #: The shards led now (empty while disconnected).
        self.led: dict[int, Shard] = {}

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Relay until cancelled (inside trio-asyncio), through PostgreSQL and Redis outages.
        Reports started at the end of its first connection attempt, successful or not."""
        backoff, started = Backoff(), False

        def report_started() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        while True:
            connected_at = trio.current_time()
            try:
                await self._serve(report_started)
            except (*PG_UNREACHABLE, BusUnavailable) as exc:
                report_started()
                self.metrics.reconnects.inc()
                if trio.current_time() - connected_at > backoff.max_s:
                    backoff.reset()  # it had been working: start over
                log.warning("relay_disconnected", error=f"{type(exc).__name__}: {exc}",
                            retry_in_s=round(backoff.next_s, 2))
            finally:
                self.led.clear()
                self.metrics.leading.set(0)
            await backoff.pause()

    async def _serve(self, on_connected) -> None:
        """One connected period: a session, its LISTEN, leadership, batches."""
        conn = await aio_as_trio(asyncpg.connect)(self._config.postgres_dsn)
        try:
            self.outbox_id = await check_schema(conn, self._bus_config.shards)
            await aio_as_trio(conn.add_listener)(CHANNEL, self._notified)
            async with self._redis.commands():
                on_connected()
                await self._lead(conn)
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await aio_as_trio(conn.close)(timeout=2)
                except Exception:
                    conn.terminate()

    def _notified(self, _conn, _pid, _channel, payload: str) -> None:
        """A commit wrote the shard named in ``payload``: relay it now."""
        self._notified_shards.add(int(payload))
        self._wake.set()

    async def _lead(self, conn: asyncpg.Connection) -> None:
        """Relay the notified shards when notified, every led shard on each poll."""
        claim_at = clean_at = poll_at = trio.current_time()
        while True:
            now = trio.current_time()
            if now >= claim_at:
                await self._claim(conn)
                claim_at = now + self._config.standby_poll_s
            if now >= poll_at:
                shards = set(self.led)
                poll_at = now + self._config.poll_interval_s
            else:
                shards = self._notified_shards & set(self.led)
            self._notified_shards, self._wake = set(), trio.Event()  # commits from now on wake the next wait
            for shard in sorted(shards):
                while shard in self.led and await self._relay_batch(conn, shard):
                    pass
            if now >= clean_at and self._config.keep_relayed_s >= 0:
                await self._clean(conn)
                clean_at = now + self._config.cleanup_interval_s
            with trio.move_on_at(min(poll_at, claim_at)):
                await self._wake.wait()

    async def _claim(self, conn: asyncpg.Connection) -> None:
        """Lead every shard whose leader lock is free; read where each got to."""
        taken = {}
        for shard in range(self._bus_config.shards):
            if shard in self.led:
                continue
            if not await aio_as_trio(conn.fetchval)("SELECT pg_try_advisory_lock($1, $2)", LEADER_LOCK, shard):
                continue
            token = await self._redis.link.call("GET", relay_cursor_key(shard, self.outbox_id))
            token = token.decode() if token else ""
            saved = await aio_as_trio(conn.fetchval)(
                "SELECT commit_seq FROM rt_outbox_relayed WHERE shard = $1", shard)
            # Redis's cursor moves with the appends; PostgreSQL's copy only when Redis lost it.
            self.led[shard] = Shard(cursor=int(token) if token else (saved or 0), token=token)
            taken[str(shard)] = self.led[shard].cursor
        if taken:
            log.info("relay_leads", cursors=taken)
        self.metrics.leading.set(len(self.led))

    async def _relay_batch(self, conn: asyncpg.Connection, shard: int) -> bool:
        """Append the next batch of ``shard``; whether a full batch went (more may follow)."""
        led = self.led[shard]
        rows = await aio_as_trio(conn.fetch)(_READ, shard, led.cursor, self._config.batch)
        if not rows:
            return False
        tracing = self.tracing
        spans = [tracing.start("rt.outbox.relay", row["traceparent"], "producer", **{
            "rt.event_type": row["event"], "rt.event_id": row["event_id"], "rt.tenant": row["tenant"],
            "rt.shard": shard}) for row in rows] if tracing.enabled else []
        try:
            ok, current = await self._append(shard, led, rows, [tracing.traceparent(span) for span in spans])
        finally:
            for span in spans:
                span.end()
        new = rows[-1]["commit_seq"]
        if not ok:
            self.metrics.fenced.inc()
            log.warning("relay_fenced", shard=shard, expected=led.token, found=current.decode())
            del self.led[shard]
            self.metrics.leading.set(len(self.led))
            await aio_as_trio(conn.execute)("SELECT pg_advisory_unlock($1, $2)", LEADER_LOCK, shard)
            return False
        led.cursor, led.token = new, str(new)
        await aio_as_trio(conn.execute)(_SAVE_CURSOR, shard, new)
        self.metrics.rows.inc(len(rows))
        self.metrics.batches.inc()
        now = time.time()
        for row in rows:
            self.metrics.row_age.observe(max(0.0, now - row["created"]))
        return len(rows) == self._config.batch

    async def _append(self, shard: int, led: Shard, rows: list[asyncpg.Record],
                      traceparents: list[str]) -> tuple[bool, bytes]:
        """Append ``rows`` to the shard's stream if the relay cursor is still ``led``'s:
        (appended, the cursor found). ``traceparents``: the entries' (else the rows')."""
        args: list = [led.token, str(rows[-1]["commit_seq"]), self._bus_config.retention]
        for i, row in enumerate(rows):
            fields = entry_fields(row, traceparents[i] if traceparents else row["traceparent"])
            args += [len(fields), *fields]
        keys = [stream_key(shard), relay_cursor_key(shard, self.outbox_id)]
        [(ok, current)] = await self._redis.link.scripts(_RELAY, [(keys, args)])
        return bool(ok), current

    async def _clean(self, conn: asyncpg.Connection) -> None:
        """Delete relayed rows older than ``outbox.keep_relayed_s`` in the led shards."""
        for shard, led in list(self.led.items()):
            await aio_as_trio(conn.execute)(_CLEAN, shard, led.cursor, float(self._config.keep_relayed_s))
