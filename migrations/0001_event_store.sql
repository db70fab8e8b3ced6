-- The event store: postgres-es's `events` table, plus what Herald needs to read the log in a
-- global order without skipping anything.
--
-- * global_position: a gap-tolerant, monotonically assigned position for every event.
-- * tx_id: the id of the inserting transaction. Positions are assigned at insert time but
--   become visible at commit time, so a reader that only follows global_position can skip an
--   event whose transaction commits late. Readers instead order by (tx_id, global_position)
--   and never read a transaction id at or above pg_snapshot_xmin(pg_current_snapshot()): every
--   transaction below that horizon has finished, so nothing can appear behind the reader.
-- * recorded_at: wall-clock time of the append, for operators.
CREATE TABLE events
(
    aggregate_type  text                         NOT NULL,
    aggregate_id    text                         NOT NULL,
    sequence        bigint CHECK (sequence >= 0) NOT NULL,
    event_type      text                         NOT NULL,
    event_version   text                         NOT NULL,
    payload         json                         NOT NULL,
    metadata        json                         NOT NULL,
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    tx_id           xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz                  NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    CONSTRAINT events_global_position_key UNIQUE (global_position)
);

CREATE INDEX events_tx_order_idx ON events (tx_id, global_position);

-- Wake-ups. Projection runners LISTEN on `herald_events` (the payload is constant, so
-- PostgreSQL folds all notifications of one transaction into one). API-key changes are also
-- announced on `herald_keys` with the key id, so every replica drops its cached copy.
CREATE FUNCTION events_notify() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('herald_events', '');
    IF NEW.aggregate_type = 'api_key' THEN
        PERFORM pg_notify('herald_keys', NEW.aggregate_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify
    AFTER INSERT ON events
    FOR EACH ROW
EXECUTE FUNCTION events_notify();

-- The log is append-only: refuse updates and deletes outright.
CREATE FUNCTION events_append_only() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    RAISE EXCEPTION 'the events table is append-only';
END;
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW
EXECUTE FUNCTION events_append_only();

-- Where each projection has read up to: the (tx_id, global_position) pair of the last event it
-- applied, written in the same transaction as its read-model changes.
CREATE TABLE projection_checkpoints
(
    name            text PRIMARY KEY,
    tx_id           xid8        NOT NULL DEFAULT '0',
    global_position bigint      NOT NULL DEFAULT 0,
    events_applied  bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
