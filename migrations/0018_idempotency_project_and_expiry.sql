-- The project an idempotent request acted in, kept with its answer so that a replay (which runs
-- no handler) is recorded in the request log under the same project as the first request.
ALTER TABLE idempotency_keys ADD COLUMN project_id uuid;

-- Keys are forgotten 24 hours after they were claimed (an hourly task deletes them by age).
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
