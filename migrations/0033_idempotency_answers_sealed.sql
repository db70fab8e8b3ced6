-- The answers kept for an Idempotency-Key are sealed at rest (AES-256-GCM under a key derived
-- from the pepper, bound to the row's scope and key): an answer can hold a secret shown once
-- (a new API key, a webhook endpoint's signing secret, its header values). Rows written before
-- this migration keep their plain bodies (`body_sealed` false) until the hourly expiry forgets
-- them, within 25 hours. A server older than this migration ignores the flag and would replay a
-- sealed body as stored: run one version on every replica. (api/src/http/idempotency/sealed.rs)
ALTER TABLE idempotency_keys ADD COLUMN body_sealed boolean NOT NULL DEFAULT false;
