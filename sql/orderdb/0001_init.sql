-- orderdb, version 1: orders, the outbox, and its quarantine (DESIGN §7).
-- Money is NUMERIC; an order and its first event are written by one statement.

CREATE TABLE orders (
    id              uuid PRIMARY KEY,                 -- UUIDv7, made in C
    customer_id     text NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 128),
    amount          numeric(20, 4) NOT NULL CHECK (amount > 0),
    currency        char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status          text NOT NULL DEFAULT 'created' CHECK (status IN ('created', 'cancelled')),
    version         integer NOT NULL DEFAULT 1,       -- seq of its last event
    idempotency_key text UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE outbox (
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
    UNIQUE (aggregate_id, seq)                        -- one event per order version
);

-- The relay's only read path: pending rows of one partition in id order.
-- Partial, so it stays as small as the backlog, not the table.
CREATE INDEX outbox_pending ON outbox (partition, id) WHERE NOT published;
-- The janitor deletes old published rows in small batches.
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published;

-- Rows Kafka rejected for themselves (too large, invalid). Later events of the
-- same order stay parked behind them until replayed or dropped.
CREATE TABLE outbox_quarantine (
    id             bigint PRIMARY KEY,                -- the outbox id it had
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
CREATE INDEX outbox_quarantine_aggregate ON outbox_quarantine (aggregate_id);
