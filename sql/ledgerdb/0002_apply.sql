-- ledgerdb, version 2: the apply logic, server-side, so a consumer applies a
-- whole poll batch in one round trip and one transaction.
--
-- ledger_apply_batch walks its arrays in order. For each event:
--   * its event_id is already booked, or its seq is not above the order's
--     last_seq: a duplicate, skipped (-1);
--   * its seq skips ahead: parked in ledger_parked (0), applied later when
--     the missing predecessor arrives, never out of order;
--   * otherwise booked (order.created -> charge, order.cancelled -> credit
--     note reversing the charge), then every parked successor that now fits
--     is booked too (returns how many were booked, >= 1);
--   * an event the ledger cannot book (constraint, no charge to reverse)
--     goes to ledger_dead_letter with the reason (-2); the batch goes on.

ALTER TABLE ledger_parked
    ALTER COLUMN payload DROP NOT NULL,
    ADD COLUMN event_type text NOT NULL DEFAULT '',
    ADD COLUMN amount numeric(20, 4) NOT NULL DEFAULT 0,
    ADD COLUMN currency char(3) NOT NULL DEFAULT 'XXX';

CREATE FUNCTION ledger_book(p_event uuid, p_order uuid, p_seq int, p_type text, p_amount numeric,
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
            RAISE EXCEPTION 'order.cancelled for order % without a charge to reverse', p_order;
        END IF;
        INSERT INTO ledger_entries (event_id, order_id, seq, kind, amount, currency, reverses_entry_id,
                                    kafka_partition, kafka_offset)
        VALUES (p_event, p_order, p_seq, 'credit_note', -charge.amount, charge.currency, charge.id,
                p_partition, p_offset);
    ELSE
        RAISE EXCEPTION 'unknown event type %', p_type;
    END IF;
    UPDATE ledger_orders SET last_seq = p_seq, updated_at = now() WHERE order_id = p_order;
END
$$;

CREATE FUNCTION ledger_apply_one(p_event uuid, p_order uuid, p_seq int, p_type text, p_amount numeric,
                                 p_currency text, p_topic text, p_partition int, p_offset bigint)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    last   int;
    booked int := 0;
    nxt    record;
BEGIN
    IF EXISTS (SELECT 1 FROM ledger_entries WHERE event_id = p_event) THEN
        RETURN -1;
    END IF;
    INSERT INTO ledger_orders (order_id, last_seq) VALUES (p_order, 0) ON CONFLICT (order_id) DO NOTHING;
    SELECT last_seq INTO last FROM ledger_orders WHERE order_id = p_order FOR UPDATE;
    IF p_seq <= last THEN
        RETURN -1;
    END IF;
    IF p_seq > last + 1 THEN
        INSERT INTO ledger_parked (event_id, order_id, seq, kafka_topic, kafka_partition, kafka_offset,
                                   event_type, amount, currency)
        VALUES (p_event, p_order, p_seq, p_topic, p_partition, p_offset, p_type, p_amount, p_currency)
        ON CONFLICT (event_id) DO NOTHING;
        RETURN 0;
    END IF;
    BEGIN
        PERFORM ledger_book(p_event, p_order, p_seq, p_type, p_amount, p_currency, p_partition, p_offset);
    EXCEPTION WHEN OTHERS THEN
        INSERT INTO ledger_dead_letter (kafka_topic, kafka_partition, kafka_offset, kafka_key, error)
        VALUES (p_topic, p_partition, p_offset, convert_to(p_order::text, 'UTF8'), SQLERRM)
        ON CONFLICT DO NOTHING;
        RETURN -2;
    END;
    booked := 1;
    LOOP
        SELECT * INTO nxt FROM ledger_parked WHERE order_id = p_order AND seq = p_seq + booked;
        EXIT WHEN NOT FOUND;
        DELETE FROM ledger_parked WHERE event_id = nxt.event_id;
        BEGIN
            PERFORM ledger_book(nxt.event_id, nxt.order_id, nxt.seq, nxt.event_type, nxt.amount, nxt.currency,
                                nxt.kafka_partition, nxt.kafka_offset);
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO ledger_dead_letter (kafka_topic, kafka_partition, kafka_offset, kafka_key, error)
            VALUES (nxt.kafka_topic, nxt.kafka_partition, nxt.kafka_offset, convert_to(p_order::text, 'UTF8'), SQLERRM)
            ON CONFLICT DO NOTHING;
            EXIT;
        END;
        booked := booked + 1;
    END LOOP;
    RETURN booked;
END
$$;

CREATE FUNCTION ledger_apply_batch(p_events uuid[], p_orders uuid[], p_seqs int[], p_types text[],
                                   p_amounts numeric[], p_currencies text[], p_topic text,
                                   p_partitions int[], p_offsets bigint[])
RETURNS int[] LANGUAGE plpgsql AS $$
DECLARE
    out int[] := '{}';
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_events, 1), 0) LOOP
        out := out || ledger_apply_one(p_events[i], p_orders[i], p_seqs[i], p_types[i], p_amounts[i],
                                       p_currencies[i], p_topic, p_partitions[i], p_offsets[i]);
    END LOOP;
    RETURN out;
END
$$;
