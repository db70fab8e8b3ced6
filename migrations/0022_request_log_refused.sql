-- Refused calls (401, 403, 429) by time, for `GET /api/v1/admin/security`: its refusal counts
-- and top refused IPs read these entries instead of every record of the last 24 hours (about
-- 140 ms each at a million records in the window; docs/PERFORMANCE.md, twenty-seventh
-- section). Partial, so a call that is not refused writes no entry: the audit trail's hot path
-- pays only the predicate.
--
-- Built in the migration's transaction, holding back request-log writes (and so every
-- response) while it reads the log once; on a large log, create it by hand first:
--   CREATE INDEX CONCURRENTLY request_log_refused ON request_log (occurred_at)
--     WHERE status IN (401, 403, 429);
-- (check `pg_index.indisvalid`), and this migration then finds it and does nothing.
CREATE INDEX IF NOT EXISTS request_log_refused ON request_log (occurred_at)
    WHERE status IN (401, 403, 429);
