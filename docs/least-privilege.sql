-- outboxd with least privilege: one role per kind of worker, none a superuser.
--
-- Run as the owner of the tables `outboxd migrate` created (and, for the
-- roles themselves, as someone with CREATEROLE: outboxd never creates roles).
-- psql variables name the roles, e.g.
--   psql -v http=outboxd_http -v relay=outboxd_relay -v ledger=outboxd_ledger ...
-- Then point [orders] dsn at :http, [relay] dsn at :relay and [ledger] dsn at
-- :ledger, and run `outboxd migrate --orders-dsn OWNER --ledger-dsn OWNER`:
-- after migrating it connects as each role and says what is missing.
-- (tests/integration/test_roles.c runs this file, so it stays true.)

-- @orderdb
-- The outbox lives in the schema outboxd: both roles must be able to name it.
GRANT USAGE ON SCHEMA outboxd TO :"http", :"relay";
-- HTTP workers: write an order and its event, read orders and the backlog's age.
GRANT SELECT, INSERT, UPDATE ON orders TO :"http";
GRANT SELECT, INSERT ON outboxd.outbox TO :"http";
-- Relays: claim and mark events, prune published ones, quarantine rejects,
-- check the partition count outboxd.emit hashes with, and (relay 0) keep
-- outboxd.routing equal to [routes].
GRANT SELECT, UPDATE, DELETE ON outboxd.outbox TO :"relay";
GRANT SELECT, INSERT ON outboxd.outbox_quarantine TO :"relay";
GRANT SELECT, INSERT, UPDATE, DELETE ON outboxd.relay_slots TO :"relay";
GRANT SELECT ON outboxd.settings TO :"relay";
GRANT SELECT, INSERT, UPDATE ON outboxd.routing TO :"relay";
-- Relay mode wal also needs, on PostgreSQL 15 (ALTER PUBLICATION ... SET
-- TABLE is the table owner's), as a superuser and the owner:
--   ALTER ROLE :"relay" REPLICATION;
--   ALTER TABLE outboxd.outbox OWNER TO :"relay";
--   GRANT CREATE ON DATABASE orderdb TO :"relay";
-- and, since a new owner takes the old one's grants, give back to the
-- owner of outboxd.emit (the role that migrated) what emit writes:
--   GRANT INSERT ON outboxd.outbox TO <migrating role>;
-- A service that emits its own events needs neither table, only the
-- functions (they run as their owner, with a fixed search_path):
--   GRANT USAGE ON SCHEMA outboxd TO app;
--   GRANT EXECUTE ON FUNCTION outboxd.emit(text, text, text, jsonb, jsonb),
--     outboxd.emit_bytes(text, text, text, bytea, text, jsonb) TO app;

-- @ledgerdb
-- Consumers book events; the ledger API reads them.
GRANT SELECT, INSERT ON ledger_entries TO :"ledger";
GRANT SELECT, INSERT, UPDATE ON ledger_orders TO :"ledger";
GRANT SELECT, INSERT, UPDATE, DELETE ON ledger_parked TO :"ledger";
GRANT SELECT, INSERT ON ledger_dead_letter TO :"ledger";
GRANT SELECT, INSERT ON ledger_traces TO :"ledger";
