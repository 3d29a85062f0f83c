-- orderdb, version 2: what relay mode `wal` must remember across crashes.
--
-- A relay's replication slot streams only changes committed after the slot's
-- confirmed position, filtered by its publication. Rows committed before the
-- slot was created, or before its publication's row filter was changed for a
-- new relay count, are not in that stream: the relay sends them by polling
-- first. `catchup_needed` is set in the same transaction as the publication
-- change (or before the slot is created) and cleared only once the polling
-- pass found nothing left, so a crash in between repeats the pass.
CREATE TABLE relay_slots (
    slot_name      text PRIMARY KEY,
    publication    text NOT NULL,
    row_filter     text NOT NULL,                  -- what the publication was last set to
    catchup_needed boolean NOT NULL DEFAULT true,
    invalidations  bigint NOT NULL DEFAULT 0,      -- slots found lost and recreated
    updated_at     timestamptz NOT NULL DEFAULT now()
);
