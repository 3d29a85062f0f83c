-- The same statement an HTTP worker runs for POST /orders (workers/http/db.c "create"),
-- with ids and payload made by the database instead of C.
\set amt random(1, 50000)
WITH o AS (
  INSERT INTO orders (id, customer_id, amount, currency, idempotency_key)
  VALUES (gen_random_uuid(), 'c-bench', :amt / 100.0, 'USD', NULL)
  ON CONFLICT (idempotency_key) DO NOTHING RETURNING id
), e AS (
  INSERT INTO outbox (event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload)
  SELECT gen_random_uuid(), 'order', o.id, 1, 'order.created', 3, '\x81a26964a131'::bytea FROM o RETURNING 1
) SELECT (SELECT count(*) FROM o), (SELECT count(*) FROM e);
