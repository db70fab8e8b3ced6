-- The request log: one row per API call, committed before its response leaves (DESIGN
-- invariant 6), in batches. Each row carries a SHA-256 hash over its fields and the previous
-- row's hash; `request_log_head` holds the end of the chain and is locked by each batch, so
-- replicas append to one chain in turn. `herald audit verify` and GET /api/v1/audit/verify
-- recompute the chain and report the first broken link.
CREATE TABLE request_log (
    seq            bigint PRIMARY KEY,
    occurred_at    timestamptz NOT NULL,
    request_id     text NOT NULL,
    actor_type     text,
    actor_id       text,
    project_id     uuid,
    route          text NOT NULL,
    method         text NOT NULL,
    path           text NOT NULL,
    status         integer NOT NULL,
    latency_us     bigint NOT NULL,
    request_bytes  bigint NOT NULL,
    response_bytes bigint NOT NULL,
    client_ip      text,
    user_agent     text,
    outcome        text NOT NULL,
    error_code     text,
    prev_hash      text NOT NULL,
    hash           text NOT NULL
);
CREATE INDEX request_log_by_time ON request_log (occurred_at);
CREATE INDEX request_log_by_actor ON request_log (actor_id, seq);

CREATE TABLE request_log_head (
    id        integer PRIMARY KEY CHECK (id = 1),
    last_seq  bigint NOT NULL,
    last_hash text NOT NULL
);
INSERT INTO request_log_head VALUES (1, 0, repeat('0', 64));
