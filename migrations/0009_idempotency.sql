-- Idempotency keys: the first answer to a keyed POST, kept for replay. `scope` is a hash of
-- the credentials the request was made with, so keys never collide between callers.
CREATE TABLE idempotency_keys (
    scope        text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    status       integer,               -- NULL while the first request is still running
    content_type text,
    location     text,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
