-- ledgerdb, version 3: poison events can no longer wedge the consumer, and
-- transient errors can no longer dead-letter a valid event.
--
--   * A dead letter holds the Kafka record itself (key, value, headers,
--     coordinates), so `outboxd replay --dead-letters` can re-apply it once
--     the cause is fixed; sqlstate says which class of error put it there.
--   * A parked event keeps its record too: a parked successor that fails
--     when its turn comes is dead-lettered from here, not from the consumer.
--   * ledger_apply_event wraps EVERY statement of one event (duplicate
--     check, sequence row, parking, booking) in one handler, and that
--     handler catches only data errors (SQLSTATE classes 22 and 23).
--     Serialization failures, deadlocks, full disks, out of memory, I/O
--     errors, cancels and lost connections propagate: the consumer retries
--     the batch and dead-letters nothing.
--   * The consumer now writes dead letters for events in hand (it has their
--     records), so the functions return the error instead of inserting it.

ALTER TABLE ledger_dead_letter
    ADD COLUMN kafka_header_keys   bytea[],
    ADD COLUMN kafka_header_values bytea[],
    ADD COLUMN sqlstate            text,
    ADD COLUMN replays             integer NOT NULL DEFAULT 0,
    ADD COLUMN last_replay_at      timestamptz;

ALTER TABLE ledger_parked
    ADD COLUMN kafka_key           bytea,
    ADD COLUMN kafka_header_keys   bytea[],
    ADD COLUMN kafka_header_values bytea[];

DROP FUNCTION ledger_apply_batch(uuid[], uuid[], int[], text[], numeric[], text[], text, int[], bigint[]);
DROP FUNCTION ledger_apply_one(uuid, uuid, int, text, numeric, text, text, int, bigint);

-- Same bookings as version 2; its refusals are data errors (22000), so a
-- caller can tell them from a database in trouble.
CREATE OR REPLACE FUNCTION ledger_book(p_event uuid, p_order uuid, p_seq int, p_type text, p_amount numeric,
                                       p_currency text, p_partition int, p_offset bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    charge record;
BEGIN
    IF p_type = 'order.created' THEN
        INSERT INTO ledger_entries (event_id, order_id, seq, kind, amount, currency, kafka_partition, kafka_offset)
        VALUES (p_event, p_order, p_seq, 'charge', p_amount, p_currency, p_partition, p_offset);
    ELSIF p_type = 'order.cancelled' THEN
        SELECT id, amount, currency INTO charge FROM ledger_entries WHERE order_id = p_order AND kind = 'charge';
        IF NOT FOUND THEN
            RAISE EXCEPTION 'order.cancelled for order % without a charge to reverse', p_order
                USING ERRCODE = 'data_exception';
        END IF;
        INSERT INTO ledger_entries (event_id, order_id, seq, kind, amount, currency, reverses_entry_id,
                                    kafka_partition, kafka_offset)
        VALUES (p_event, p_order, p_seq, 'credit_note', -charge.amount, charge.currency, charge.id,
                p_partition, p_offset);
    ELSE
        RAISE EXCEPTION 'unknown event type %', p_type USING ERRCODE = 'data_exception';
    END IF;
    UPDATE ledger_orders SET last_seq = p_seq, updated_at = now() WHERE order_id = p_order;
END
$$;

-- One event: o_code > 0 booked (that many, parked successors included), 0
-- parked, -1 duplicate, -2 refused with o_state/o_message (the caller
-- dead-letters it). o_late counts parked successors dead-lettered here.
CREATE FUNCTION ledger_apply_event(p_event uuid, p_order uuid, p_seq int, p_type text, p_amount numeric,
                                   p_currency text, p_topic text, p_partition int, p_offset bigint,
                                   OUT o_code int, OUT o_state text, OUT o_message text, OUT o_late int)
LANGUAGE plpgsql AS $$
DECLARE
    v_last  int;
    v_state text;
    v_msg   text;
    nxt     record;
BEGIN
    o_late := 0;
    BEGIN
        IF EXISTS (SELECT 1 FROM ledger_entries WHERE event_id = p_event) THEN
            o_code := -1;
            RETURN;
        END IF;
        INSERT INTO ledger_orders (order_id, last_seq) VALUES (p_order, 0) ON CONFLICT (order_id) DO NOTHING;
        SELECT last_seq INTO v_last FROM ledger_orders WHERE order_id = p_order FOR UPDATE;
        IF p_seq <= v_last THEN
            o_code := -1;
            RETURN;
        END IF;
        IF p_seq > v_last + 1 THEN
            INSERT INTO ledger_parked (event_id, order_id, seq, kafka_topic, kafka_partition, kafka_offset,
                                       event_type, amount, currency)
            VALUES (p_event, p_order, p_seq, p_topic, p_partition, p_offset, p_type, p_amount, p_currency)
            ON CONFLICT (event_id) DO NOTHING;
            o_code := 0;
            RETURN;
        END IF;
        PERFORM ledger_book(p_event, p_order, p_seq, p_type, p_amount, p_currency, p_partition, p_offset);
    EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
        GET STACKED DIAGNOSTICS o_state = RETURNED_SQLSTATE, o_message = MESSAGE_TEXT;
        o_code := -2;
        RETURN;
    END;
    o_code := 1;
    LOOP
        SELECT * INTO nxt FROM ledger_parked WHERE order_id = p_order AND seq = p_seq + o_code;
        EXIT WHEN NOT FOUND;
        BEGIN
            DELETE FROM ledger_parked WHERE event_id = nxt.event_id;
            PERFORM ledger_book(nxt.event_id, nxt.order_id, nxt.seq, nxt.event_type, nxt.amount, nxt.currency,
                                nxt.kafka_partition, nxt.kafka_offset);
        EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            DELETE FROM ledger_parked WHERE event_id = nxt.event_id;
            INSERT INTO ledger_dead_letter (kafka_topic, kafka_partition, kafka_offset, kafka_key, kafka_value,
                                            kafka_header_keys, kafka_header_values, error, sqlstate)
            VALUES (nxt.kafka_topic, nxt.kafka_partition, nxt.kafka_offset, nxt.kafka_key, nxt.payload,
                    nxt.kafka_header_keys, nxt.kafka_header_values, v_msg, v_state)
            ON CONFLICT (kafka_topic, kafka_partition, kafka_offset)
            DO UPDATE SET error = EXCLUDED.error, sqlstate = EXCLUDED.sqlstate;
            o_late := o_late + 1;
            EXIT;
        END;
        o_code := o_code + 1;
    END LOOP;
END
$$;

-- A poll batch in one round trip: one row per event, in order.
CREATE FUNCTION ledger_apply_events(p_events uuid[], p_orders uuid[], p_seqs int[], p_types text[],
                                    p_amounts numeric[], p_currencies text[], p_topic text,
                                    p_partitions int[], p_offsets bigint[])
RETURNS TABLE (code int, state text, message text, late int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_events, 1), 0) LOOP
        RETURN QUERY SELECT * FROM ledger_apply_event(p_events[i], p_orders[i], p_seqs[i], p_types[i], p_amounts[i],
                                                      p_currencies[i], p_topic, p_partitions[i], p_offsets[i]);
    END LOOP;
END
$$;
