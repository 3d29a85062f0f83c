-- ledgerdb, version 4: the W3C trace context an event carried (its
-- traceparent header, from the client's POST /orders through the outbox),
-- kept with its ledger entry so a trace crosses the outbox.
--
-- A table beside ledger_entries, keyed by event id, rather than a column:
-- ledger_entries is append-only and its booking functions stay as they are;
-- a parked event's trace is written when it is parked and found again by
-- its event id when it is booked. Only well-formed values are kept (the
-- consumer checks, and so does this table).
CREATE TABLE ledger_traces (
    event_id    uuid PRIMARY KEY,
    traceparent text NOT NULL CHECK (traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Keeps the traces of a batch's booked or parked events. A trace is worth
-- less than the booking beside it: whatever stops its insert (a role not
-- granted the new table after an upgrade, say) is returned as a message for
-- the consumer to log, and never fails the batch or stalls the partition.
CREATE FUNCTION ledger_keep_traces(p_events uuid[], p_traces text[]) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_traces (event_id, traceparent)
    SELECT * FROM unnest(p_events, p_traces) ON CONFLICT DO NOTHING;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
