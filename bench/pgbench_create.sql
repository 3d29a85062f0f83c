-- pgbench script for bench/run.sh section 1: the statement an HTTP worker
-- runs for POST /orders (workers/http/db.c "create"), with what C computes
-- per request made here instead, at the same cost to the database:
--   ids: UUIDv7 (time-ordered, as ob_uuid_v7 makes them), so both uuid
--        indexes see the same append pattern as under POST /orders;
--   partition: random, where C uses murmur2 of the id (same value range);
--   payload: a real 240-byte msgpack order.created event (ob_event_encode),
--        the size every event of the bench has.
\set amt random(100, 50099)
\set cust random(0, 999)
\set part random(0, 11)
WITH ids AS (
  SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
           substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) FROM 1 FOR 6),
           52, 1), 53, 1), 'hex')::uuid AS order_id,
         encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
           substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) FROM 1 FOR 6),
           52, 1), 53, 1), 'hex')::uuid AS event_id
), o AS (
  INSERT INTO orders (id, customer_id, amount, currency, idempotency_key)
  SELECT order_id, 'c-' || :cust, :amt / 100.0, 'USD', NULL FROM ids
  ON CONFLICT (idempotency_key) DO NOTHING RETURNING id
), e AS (
  INSERT INTO outboxd.outbox (event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload,
   content_type, headers)
  SELECT ids.event_id, 'order', o.id::text, 1, 'order.created', :part, '\x87a26964d92430316132303838342d313663322d373030302d613831662d613531656236393835363638a474797065ad6f726465722e63726561746564ae6167677265676174655f74797065a56f72646572ac6167677265676174655f6964d92430316132303838342d313663322d373030312d386562652d656166366434303937396336a373657101ab6f636375727265645f6174b8323032362d31312d32335431333a30363a34342e3033345aa46461746184aa637573746f6d65724964a5632d313233a6616d6f756e74a63132342e3233a863757272656e6379a3555344a6737461747573a763726561746564'::bytea,
  'application/msgpack', NULL
  FROM o, ids RETURNING 1
) SELECT (SELECT count(*) FROM o), (SELECT count(*) FROM e);
