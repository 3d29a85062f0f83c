-- outbox, version 1: the outboxd schema's tables (DESIGN §7).
--
-- Everything the relay needs lives in the schema `outboxd`, so it cannot
-- collide with a table the user already has, and a relay-only deployment
-- installs only this schema into the user's own database.
--
-- An outboxd older than this schema kept these tables in `public`
-- (orderdb versions 1 and 2). Such tables are moved; otherwise they are
-- created here in that older shape. Either way the same statements below
-- then bring them to the current shape, so an upgraded database and a
-- fresh one cannot differ.

CREATE SCHEMA IF NOT EXISTS outboxd;

DO $$
DECLARE
    ours boolean;
BEGIN
    IF to_regclass('public.outbox') IS NULL OR to_regclass('public.schema_migrations') IS NULL THEN
        RETURN;
    END IF;
    -- Ours, not a user's table of the same name: an older outboxd recorded
    -- its orderdb migrations, and the table has the relay's columns. Another
    -- tool's schema_migrations (Rails: version varchar; golang-migrate: no
    -- name) is not read at all. EXECUTE, because a plan naming
    -- public.schema_migrations fails where it is absent.
    IF (SELECT count(*) FROM pg_attribute
         WHERE attrelid = 'public.schema_migrations'::regclass AND NOT attisdropped
           AND ((attname = 'version' AND atttypid = 'integer'::regtype)
                OR (attname = 'name' AND atttypid = 'text'::regtype))) <> 2
       OR NOT has_table_privilege('public.schema_migrations', 'SELECT') THEN
        RETURN;
    END IF;
    EXECUTE $q$SELECT EXISTS (SELECT 1 FROM public.schema_migrations WHERE version = 1 AND name = '0001_init')$q$
        INTO ours;
    IF ours AND NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'public.outbox'::regclass),
                                'USAGE') THEN
        RAISE EXCEPTION 'public.outbox (an older outboxd''s) is owned by %, which this migration cannot move',
                        (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'public.outbox'::regclass)
            USING HINT = 'run outboxd migrate --orders-dsn with that role, or a member of it';
    END IF;
    IF ours AND (SELECT count(*) FROM pg_attribute
                  WHERE attrelid = 'public.outbox'::regclass AND NOT attisdropped
                    AND attname IN ('event_id', 'aggregate_id', 'seq', 'partition', 'published', 'kafka_offset')) = 6
    THEN
        ALTER TABLE public.outbox SET SCHEMA outboxd;
        ALTER TABLE public.outbox_quarantine SET SCHEMA outboxd;
        IF to_regclass('public.relay_slots') IS NOT NULL THEN
            ALTER TABLE public.relay_slots SET SCHEMA outboxd;
        END IF;
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS outboxd.outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid NOT NULL UNIQUE,
    aggregate_type text NOT NULL,
    aggregate_id   uuid NOT NULL,
    seq            integer NOT NULL CHECK (seq >= 1),
    event_type     text NOT NULL,
    partition      integer NOT NULL CHECK (partition >= 0),
    payload        bytea NOT NULL,
    published      boolean NOT NULL DEFAULT false,
    published_at   timestamptz,
    kafka_offset   bigint,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (aggregate_id, seq)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outboxd.outbox (partition, id) WHERE NOT published;
CREATE INDEX IF NOT EXISTS outbox_published_at ON outboxd.outbox (published_at) WHERE published;

CREATE TABLE IF NOT EXISTS outboxd.outbox_quarantine (
    id             bigint PRIMARY KEY,
    event_id       uuid NOT NULL UNIQUE,
    aggregate_type text NOT NULL,
    aggregate_id   uuid NOT NULL,
    seq            integer NOT NULL,
    event_type     text NOT NULL,
    partition      integer NOT NULL,
    payload        bytea NOT NULL,
    created_at     timestamptz NOT NULL,
    error          text NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_quarantine_aggregate ON outboxd.outbox_quarantine (aggregate_id);

CREATE TABLE IF NOT EXISTS outboxd.relay_slots (
    slot_name      text PRIMARY KEY,
    publication    text NOT NULL,
    row_filter     text NOT NULL,
    catchup_needed boolean NOT NULL DEFAULT true,
    invalidations  bigint NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- From here on, the same for both: what changed since the older shape.

-- Aggregate ids are text, and identity is (type, id): product "42" and
-- stock "42" are different aggregates. The bounds are the relay's: a row
-- it could not copy whole must not exist, rather than be truncated.
ALTER TABLE outboxd.outbox
    ALTER COLUMN aggregate_id TYPE text USING aggregate_id::text,
    DROP CONSTRAINT outbox_aggregate_id_seq_key,
    ADD CONSTRAINT outbox_aggregate_seq_key UNIQUE (aggregate_type, aggregate_id, seq),
    ADD CONSTRAINT outbox_aggregate_type_check CHECK (aggregate_type ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    ADD CONSTRAINT outbox_aggregate_id_check CHECK (octet_length(aggregate_id) BETWEEN 1 AND 255),
    ADD CONSTRAINT outbox_event_type_check CHECK (octet_length(event_type) BETWEEN 1 AND 128
                                                  AND event_type !~ '[[:cntrl:]]'),
    -- NULL: outboxd's own event encoding, whose type `[kafka] format` names
    ADD COLUMN content_type text CHECK (octet_length(content_type) BETWEEN 1 AND 128
                                        AND content_type !~ '[[:cntrl:]]'),
    -- a JSON object of string values, sent as Kafka headers
    ADD COLUMN headers jsonb;

ALTER TABLE outboxd.outbox_quarantine
    ALTER COLUMN aggregate_id TYPE text USING aggregate_id::text,
    ADD COLUMN content_type text,
    ADD COLUMN headers jsonb;
DROP INDEX outboxd.outbox_quarantine_aggregate;
CREATE INDEX outbox_quarantine_aggregate ON outboxd.outbox_quarantine (aggregate_type, aggregate_id);
