-- outbox, version 3: [routes] as emit sees them (DESIGN §7 "Topic routing").
--
-- Which topic an event goes to is the relay's business: it reads [routes]
-- when it starts. What emit needs is only whether an aggregate type may be
-- written at all, which [kafka] strict_routes decides: with it on, a type
-- no route names is refused in the caller's own transaction, rather than
-- parked by the relay later. `outboxd migrate` writes this row, and so does
-- relay 0 whenever it starts, so a reload that adds a route lets emit take
-- the new type as soon as the relays run with it.
CREATE TABLE outboxd.routing (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    strict_routes boolean NOT NULL DEFAULT false,
    routed_types text[] NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO outboxd.routing DEFAULT VALUES;

DROP FUNCTION outboxd.emit_check(text, text, text, integer, text, jsonb, integer, text[]);

-- The checks emit makes, one sentence per refusal (SQLSTATE 22023, or 54000
-- for a payload over the limit), naming the argument.
CREATE FUNCTION outboxd.emit_check(aggregate_type text, aggregate_id text, event_type text, payload_bytes integer,
                                   content_type text, headers jsonb, max_event_bytes integer,
                                   reserved_types text[], strict_routes boolean,
                                   routed_types text[]) RETURNS void
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
    ELSIF strict_routes AND NOT aggregate_type = ANY (routed_types) THEN
        why := format('aggregate type %s has no route, and [kafka] strict_routes refuses it: add it to [routes]'
                      ' (routed: %s)', quote_literal(aggregate_type), array_to_string(routed_types, ', '));
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

CREATE OR REPLACE FUNCTION outboxd.emit_bytes(aggregate_type text, aggregate_id text, event_type text, payload bytea,
                                              content_type text, headers jsonb DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s       outboxd.settings;
    rt      outboxd.routing;
    v_seq   integer;
    v_event uuid := outboxd.uuid_v7();
BEGIN
    SELECT * INTO s FROM outboxd.settings;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outboxd.emit: outboxd.settings is empty; run outboxd migrate with this database''s'
                        ' configuration' USING ERRCODE = '55000';
    END IF;
    SELECT * INTO rt FROM outboxd.routing;
    PERFORM outboxd.emit_check(aggregate_type, aggregate_id, event_type, octet_length(payload), content_type, headers,
                               s.max_event_bytes, s.reserved_types, coalesce(rt.strict_routes, false),
                               coalesce(rt.routed_types, '{}'));
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

-- emit runs as its owner, the role that applied version 2. When another
-- role (a superuser) applies this one, it owns the new table: emit must
-- still be able to read it.
DO $$
DECLARE
    owner name := (SELECT pg_get_userbyid(proowner) FROM pg_proc
                   WHERE oid = 'outboxd.emit_bytes(text, text, text, bytea, text, jsonb)'::regprocedure);
BEGIN
    IF owner <> current_user THEN
        EXECUTE format('GRANT SELECT ON outboxd.routing TO %I', owner);
    END IF;
END
$$;
