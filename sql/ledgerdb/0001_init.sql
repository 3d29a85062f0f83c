-- ledgerdb, version 1: the immutable ledger, per-order sequence tracking,
-- parked (out-of-order) events and dead letters (DESIGN §5, §7).

CREATE TABLE ledger_entries (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id          uuid NOT NULL UNIQUE,           -- idempotent apply: ON CONFLICT DO NOTHING
    order_id          uuid NOT NULL,
    seq               integer NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('charge', 'credit_note')),
    amount            numeric(20, 4) NOT NULL,
    currency          char(3) NOT NULL,
    reverses_entry_id bigint REFERENCES ledger_entries (id),
    kafka_partition   integer,
    kafka_offset      bigint,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'charge' AND amount > 0 AND reverses_entry_id IS NULL)
        OR (kind = 'credit_note' AND amount < 0 AND reverses_entry_id IS NOT NULL))
);
CREATE INDEX ledger_entries_order ON ledger_entries (order_id, seq);
-- Belt and braces against double booking, whatever the event ids say.
CREATE UNIQUE INDEX ledger_one_charge ON ledger_entries (order_id) WHERE kind = 'charge';
CREATE UNIQUE INDEX ledger_one_credit_note ON ledger_entries (order_id) WHERE kind = 'credit_note';

-- Ledger rows are immutable: corrections are new rows (credit notes).
CREATE FUNCTION ledger_entries_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER ledger_entries_no_update_delete
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_immutable();
CREATE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_immutable();

CREATE TABLE ledger_orders (
    order_id   uuid PRIMARY KEY,
    last_seq   integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Events whose predecessor has not arrived yet: kept, counted, applied later.
CREATE TABLE ledger_parked (
    event_id        uuid PRIMARY KEY,
    order_id        uuid NOT NULL,
    seq             integer NOT NULL,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    payload         bytea NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_parked_order ON ledger_parked (order_id, seq);

CREATE TABLE ledger_dead_letter (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    kafka_key       bytea,
    kafka_value     bytea,
    error           text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kafka_topic, kafka_partition, kafka_offset)
);
