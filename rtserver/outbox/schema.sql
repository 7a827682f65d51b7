-- rtserver outbox, schema version 1 (applied by `rtserver relay migrate`, which fills in
-- {shards} = bus.shards, {sequencing_lock} and the notify channel).
--
-- A backbone writes one row per event IN THE SAME TRANSACTION as its business change:
--
--   INSERT INTO outbox_events (tenant, event, rooms, data)
--   VALUES ('t1', 'appointment.created', '["schedule:42"]', '{"appointmentId": "a1"}');
--
-- and the relay moves it to the shard stream rt:{shard}:events once the transaction has
-- committed. Columns the backbone may set: event_id (its idempotency key; a UUID by
-- default), tenant, event, rooms, data, ts, traceparent. The others are the relay's.
--
-- Commit order: at COMMIT (a deferred constraint trigger) each transaction takes its
-- shards' transaction-level advisory locks, in shard order, and numbers its rows from
-- one sequence. The next transaction of a shard can number its rows only after that
-- lock is released, i.e. after the commit is visible. So in every shard, commit_seq
-- order is commit order, and a row with a higher commit_seq being visible proves that
-- every lower one of its shard is visible too (or rolled back): the relay reads
-- "commit_seq > cursor" and never skips a transaction that committed late. The lock is
-- held only while the transaction commits (WAL flush): commits of outbox writers
-- serialize per shard, nothing else does.

CREATE TABLE IF NOT EXISTS rt_schema_migrations (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- zlib's CRC-32 (IEEE, unsigned) of the tenant's UTF-8 bytes: the shard of SPEC §13.
CREATE OR REPLACE FUNCTION rt_crc32(input text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    bytes bytea := convert_to(input, 'UTF8');
    crc bigint := 4294967295;
BEGIN
    FOR i IN 0 .. length(bytes) - 1 LOOP
        crc := crc # get_byte(bytes, i);
        FOR _ IN 1 .. 8 LOOP
            crc := (crc >> 1) # (3988292384 * (crc & 1));
        END LOOP;
    END LOOP;
    RETURN crc # 4294967295;
END $$;

-- CACHE 1: values are handed out in the order they are asked for, across sessions.
CREATE SEQUENCE IF NOT EXISTS outbox_events_commit_seq CACHE 1;

CREATE TABLE IF NOT EXISTS outbox_events (
    id          bigserial PRIMARY KEY,  -- insertion order only, never a cursor
    event_id    text NOT NULL DEFAULT gen_random_uuid()::text UNIQUE,
    tenant      text NOT NULL CHECK (tenant <> ''),
    event       text NOT NULL CHECK (event <> ''),
    rooms       jsonb NOT NULL CHECK (jsonb_typeof(rooms) = 'array' AND jsonb_array_length(rooms) > 0),
    data        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
    ts          bigint,                 -- ms since the epoch; empty: the stream entry's time
    traceparent text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    shard       smallint GENERATED ALWAYS AS ((rt_crc32(tenant) % {shards})::smallint) STORED,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    commit_seq  bigint                  -- set at commit; NULL until then
);
CREATE UNIQUE INDEX IF NOT EXISTS outbox_events_relay ON outbox_events (shard, commit_seq);
CREATE INDEX IF NOT EXISTS outbox_events_uncommitted ON outbox_events (xid) WHERE commit_seq IS NULL;

CREATE OR REPLACE FUNCTION rt_outbox_number() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    row record;
    locked integer := -1;
BEGIN
    FOR row IN
        SELECT id, shard FROM outbox_events
        WHERE xid = pg_current_xact_id() AND commit_seq IS NULL
        ORDER BY shard, id
    LOOP
        IF row.shard <> locked THEN
            PERFORM pg_advisory_xact_lock({sequencing_lock}, row.shard);
            PERFORM pg_notify('{channel}', row.shard::text);
            locked := row.shard;
        END IF;
        UPDATE outbox_events SET commit_seq = nextval('outbox_events_commit_seq') WHERE id = row.id;
    END LOOP;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS rt_outbox_number ON outbox_events;
CREATE CONSTRAINT TRIGGER rt_outbox_number AFTER INSERT ON outbox_events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION rt_outbox_number();

-- The shard count the generated column was made with (the relay refuses another), and
-- this outbox's identity: several databases' outboxes may feed the same streams, each
-- relayed with a cursor of its own (rt:{shard}:relay:<outbox_id> in Redis).
CREATE TABLE IF NOT EXISTS rt_outbox_settings (
    shards integer NOT NULL CHECK (shards > 0),
    outbox_id text NOT NULL DEFAULT gen_random_uuid()::text
);

-- Where each shard's relay got to (also kept in Redis, atomically with the appends; this
-- copy survives a Redis that lost its data).
CREATE TABLE IF NOT EXISTS rt_outbox_relayed (
    shard      smallint PRIMARY KEY,
    commit_seq bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO rt_schema_migrations (version) VALUES (1) ON CONFLICT DO NOTHING;
