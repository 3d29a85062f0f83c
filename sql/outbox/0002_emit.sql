-- outbox, version 2: the SQL API any service calls from its own transaction
-- (DESIGN §7 "Emitting from any service").
--
--   SELECT outboxd.emit('product', '42', 'product.repriced', '{"price": "9.90"}');
--   SELECT outboxd.emit_bytes('stock', '42', 'stock.changed', '\x0a02...', 'application/x-protobuf');
--
-- A rollback means the event never exists; a commit means it will be
-- published, in commit order among the events of its aggregate.

-- What `outboxd migrate` keeps equal to the configuration: the partition
-- count is the one the HTTP workers hash with, so one aggregate's events are
-- never split over two counts; migrate refuses to change it. The reserved
-- aggregate types are those whose events outboxd's own workers write and
-- its ledger books ('order' while the orders API is served): a service
-- allowed to emit must not be able to book in the ledger.
CREATE TABLE outboxd.settings (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    partitions      integer NOT NULL CHECK (partitions BETWEEN 1 AND 4096),
    max_event_bytes integer NOT NULL CHECK (max_event_bytes >= 1),
    reserved_types  text[] NOT NULL DEFAULT '{}',
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The last seq of each aggregate `emit` numbered. Outside the outbox rows,
-- so numbering survives the janitor deleting published ones; its row lock,
-- held to commit, orders concurrent writers of one aggregate.
CREATE TABLE outboxd.aggregate_seq (
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    last_seq       integer NOT NULL CHECK (last_seq >= 1),
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Kafka's murmur2 (the Java client's Utils.murmur2, seed 0x9747b28c) over
-- bytes, as Java's signed int. 32-bit arithmetic in bigint: every product
-- is of a value below 2^32 and m below 2^31, so it cannot overflow.
CREATE FUNCTION outboxd.murmur2(data bytea) RETURNS integer
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    m    constant bigint := 1540483477;
    mask constant bigint := 4294967295;
    n    constant integer := length(data);
    tail constant integer := n - n % 4;
    h    bigint := (2538058380 # n) & mask;
    k    bigint;
BEGIN
    FOR i IN 0 .. n / 4 - 1 LOOP
        k := get_byte(data, 4 * i)::bigint | (get_byte(data, 4 * i + 1)::bigint << 8)
             | (get_byte(data, 4 * i + 2)::bigint << 16) | (get_byte(data, 4 * i + 3)::bigint << 24);
        k := (k * m) & mask;
        k := k # (k >> 24);
        k := (k * m) & mask;
        h := ((h * m) & mask) # k;
    END LOOP;
    IF n % 4 = 3 THEN
        h := h # (get_byte(data, tail + 2)::bigint << 16);
    END IF;
    IF n % 4 >= 2 THEN
        h := h # (get_byte(data, tail + 1)::bigint << 8);
    END IF;
    IF n % 4 >= 1 THEN
        h := ((h # get_byte(data, tail)::bigint) * m) & mask;
    END IF;
    h := h # (h >> 13);
    h := (h * m) & mask;
    h := h # (h >> 15);
    RETURN (CASE WHEN h >= 2147483648 THEN h - 4294967296 ELSE h END)::integer;
END
$$;

-- The partition Kafka's Java default partitioner picks for a key, and
-- outboxd's HTTP workers (common/murmur2.c): toPositive(murmur2) mod n.
CREATE FUNCTION outboxd.kafka_partition(key text, n integer) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (outboxd.murmur2(convert_to(key, 'UTF8')) & 2147483647) % n
$$;

-- A UUIDv7 (RFC 9562), as the HTTP workers make: ids in time order keep the
-- event_id index's inserts at its right edge.
CREATE FUNCTION outboxd.uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
                  substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                  FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;

-- What is wrong with a headers object, or NULL when nothing is. The names
-- outboxd sets itself are refused: a consumer must be able to trust them.
CREATE FUNCTION outboxd.headers_problem(h jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    e record;
BEGIN
    IF h IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(h) <> 'object' THEN
        RETURN format('headers must be a JSON object of strings, not %s', jsonb_typeof(h));
    END IF;
    IF (SELECT count(*) FROM jsonb_object_keys(h)) > 32 THEN
        RETURN 'headers has more than 32 names';
    END IF;
    IF octet_length(h::text) > 8192 THEN
        RETURN 'headers is larger than 8192 bytes';
    END IF;
    FOR e IN SELECT key, value FROM jsonb_each(h) LOOP
        IF e.key !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' THEN
            RETURN format('header name %s must be 1 to 64 characters of A-Z a-z 0-9 . _ -', quote_literal(e.key));
        END IF;
        IF lower(e.key) IN ('id', 'event-id', 'event-type', 'aggregate-type', 'aggregate-id', 'aggregate-seq',
                            'content-type', 'outboxd-signature') THEN
            RETURN format('header name %s is set by outboxd itself', quote_literal(e.key));
        END IF;
        IF jsonb_typeof(e.value) <> 'string' THEN
            RETURN format('header %s must be a string, not %s', quote_literal(e.key), jsonb_typeof(e.value));
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

ALTER TABLE outboxd.outbox
    ADD CONSTRAINT outbox_headers_check CHECK (outboxd.headers_problem(headers) IS NULL);

-- The checks emit makes, one sentence per refusal (SQLSTATE 22023, or 54000
-- for a payload over the limit), naming the argument.
CREATE FUNCTION outboxd.emit_check(aggregate_type text, aggregate_id text, event_type text, payload_bytes integer,
                                   content_type text, headers jsonb, max_event_bytes integer,
                                   reserved_types text[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    why text;
BEGIN
    IF aggregate_type IS NULL OR aggregate_type !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' THEN
        why := format('aggregate_type must be 1 to 64 characters of A-Z a-z 0-9 . _ - starting with a letter or'
                      ' digit, got %s', coalesce(quote_literal(left(aggregate_type, 80)), 'NULL'));
    ELSIF aggregate_type = ANY (reserved_types) THEN
        why := format('aggregate type %s is reserved: outboxd''s own orders API writes those events and its ledger'
                      ' books them', quote_literal(aggregate_type));
    ELSIF aggregate_id IS NULL OR aggregate_id = '' THEN
        why := 'aggregate_id must not be empty';
    ELSIF octet_length(aggregate_id) > 255 THEN
        why := format('aggregate_id is %s bytes, more than 255', octet_length(aggregate_id));
    ELSIF event_type IS NULL OR event_type = '' OR octet_length(event_type) > 128 OR event_type ~ '[[:cntrl:]]' THEN
        why := 'event_type must be 1 to 128 bytes without control characters';
    ELSIF payload_bytes IS NULL THEN
        why := 'payload must not be NULL';
    ELSIF content_type IS NULL OR content_type = '' OR octet_length(content_type) > 128
          OR content_type ~ '[[:cntrl:]]' THEN
        why := 'content_type must be 1 to 128 bytes without control characters';
    ELSE
        why := outboxd.headers_problem(headers);
    END IF;
    IF why IS NOT NULL THEN
        RAISE EXCEPTION 'outboxd.emit: %', why USING ERRCODE = '22023';
    END IF;
    IF payload_bytes > max_event_bytes THEN
        RAISE EXCEPTION 'outboxd.emit: payload is % bytes, more than the limit of % (outboxd.settings.max_event_bytes,'
                        ' from [kafka] max_event_bytes)', payload_bytes, max_event_bytes USING ERRCODE = '54000';
    END IF;
END
$$;

-- The exact bytes given, sent with the content type given.
CREATE FUNCTION outboxd.emit_bytes(aggregate_type text, aggregate_id text, event_type text, payload bytea,
                                   content_type text, headers jsonb DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s       outboxd.settings;
    v_seq   integer;
    v_event uuid := outboxd.uuid_v7();
BEGIN
    SELECT * INTO s FROM outboxd.settings;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outboxd.emit: outboxd.settings is empty; run outboxd migrate with this database''s'
                        ' configuration' USING ERRCODE = '55000';
    END IF;
    PERFORM outboxd.emit_check(aggregate_type, aggregate_id, event_type, octet_length(payload), content_type, headers,
                               s.max_event_bytes, s.reserved_types);
    INSERT INTO outboxd.aggregate_seq AS a (aggregate_type, aggregate_id, last_seq)
    VALUES (emit_bytes.aggregate_type, emit_bytes.aggregate_id, 1)
    ON CONFLICT ON CONSTRAINT aggregate_seq_pkey DO UPDATE SET last_seq = a.last_seq + 1
    RETURNING a.last_seq INTO v_seq;
    INSERT INTO outboxd.outbox (event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload,
                                content_type, headers)
    VALUES (v_event, emit_bytes.aggregate_type, emit_bytes.aggregate_id, v_seq, emit_bytes.event_type,
            outboxd.kafka_partition(emit_bytes.aggregate_id, s.partitions), payload, emit_bytes.content_type,
            emit_bytes.headers);
    RETURN v_event;
END
$$;

-- A JSON payload, as PostgreSQL normalises jsonb (key order, whitespace).
CREATE FUNCTION outboxd.emit(aggregate_type text, aggregate_id text, event_type text, payload jsonb,
                             headers jsonb DEFAULT NULL) RETURNS uuid
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT outboxd.emit_bytes(aggregate_type, aggregate_id, event_type, convert_to(payload::text, 'UTF8'),
                              'application/json', headers)
$$;

-- Calling emit is granted, not writing the outbox: a service's role gets
--   GRANT USAGE ON SCHEMA outboxd TO app;
--   GRANT EXECUTE ON FUNCTION outboxd.emit(text, text, text, jsonb, jsonb),
--                 outboxd.emit_bytes(text, text, text, bytea, text, jsonb) TO app;
REVOKE EXECUTE ON FUNCTION outboxd.emit(text, text, text, jsonb, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION outboxd.emit_bytes(text, text, text, bytea, text, jsonb) FROM PUBLIC;
