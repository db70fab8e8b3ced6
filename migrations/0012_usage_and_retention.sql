-- Usage: a projection of the request log, kept by the request-log writer in the same statement
-- that appends a batch (so it is exactly the log's counts), one row per hour, caller, project,
-- route, method and status class. It outlives the raw records that retention prunes.
CREATE TABLE usage_hourly (
    hour         timestamptz NOT NULL,
    actor_type   text,
    actor_id     text,
    project_id   uuid,
    route        text NOT NULL,
    method       text NOT NULL,
    status_class text NOT NULL,
    requests     bigint NOT NULL,
    UNIQUE NULLS NOT DISTINCT (hour, actor_type, actor_id, project_id, route, method, status_class)
);
CREATE INDEX usage_hourly_by_hour ON usage_hourly (hour);
CREATE INDEX usage_hourly_by_actor ON usage_hourly (actor_id, hour);

INSERT INTO usage_hourly
SELECT date_trunc('hour', occurred_at, 'UTC'), actor_type, actor_id, project_id, route, method,
       (status / 100)::text || 'xx', count(*)
  FROM request_log
 GROUP BY 1, 2, 3, 4, 5, 6, 7;

-- Retention prunes the oldest request-log records; the last pruned record's sequence number
-- and hash stay here, so the chain from the first remaining record still verifies.
CREATE TABLE request_log_anchor (
    id   integer PRIMARY KEY CHECK (id = 1),
    seq  bigint NOT NULL,
    hash text NOT NULL
);
