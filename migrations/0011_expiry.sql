-- Expiry sweeps. Finished jobs expire after the retention period (`job.expired`); keys whose
-- expiry has passed get `api_key.expired`. The sweeper finds candidates in the read models:
-- * `jobs` gains `finished_at` and `expired_at` as columns (both also in `doc`), with an index
--   over finished, unexpired, undeleted jobs. Existing rows are filled from their `doc`, which
--   the jobs projection wrote from the same events.
-- * `api_keys` gets an index over keys whose expiry is set and not yet recorded.
ALTER TABLE jobs
    ADD COLUMN finished_at timestamptz,
    ADD COLUMN expired_at  timestamptz;
UPDATE jobs SET finished_at = (doc->>'finished_at')::timestamptz,
                expired_at  = (doc->>'expired_at')::timestamptz;
CREATE INDEX jobs_retention_idx ON jobs (finished_at)
    WHERE finished_at IS NOT NULL AND expired_at IS NULL AND NOT deleted;

CREATE INDEX api_keys_expiry_idx ON api_keys (expires_at)
    WHERE expires_at IS NOT NULL AND revoked_at IS NULL AND (doc->>'expired_at') IS NULL;
