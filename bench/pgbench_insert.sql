-- One single-row insert into a table shaped like `events` (same columns, keys and defaults).
INSERT INTO bench_events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
VALUES ('job', gen_random_uuid()::text, 1, 'job.queued', '1', '{"kind": "bench", "input": {"n": 1}}', '{"actor_type": "api_key"}');
