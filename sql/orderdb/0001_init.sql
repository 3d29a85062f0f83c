-- orderdb, version 1: the built-in orders API's table (DESIGN §7).
-- Money is NUMERIC; an order and its first event (in outboxd.outbox, the
-- outbox stream's schema) are written by one statement.
--
-- An older outboxd's version 1 also made the outbox and its quarantine here,
-- and version 2 relay_slots; the outbox stream's version 1 moves them into
-- the schema outboxd, so this file now holds only what is still orderdb's.

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
