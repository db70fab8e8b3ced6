-- One single-row insert into a table shaped like `events` (same columns, keys and defaults, and
-- the project the server's appends pass for a first event).
INSERT INTO bench_events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, project_id)
VALUES ('job', gen_random_uuid()::text, 1, 'job.queued', '1', '{"kind": "bench", "input": {"n": 1}}', '{"actor_type": "api_key"}', '00000000-0000-4000-8000-000000000001');
