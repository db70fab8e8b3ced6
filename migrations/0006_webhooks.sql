-- Webhooks. Endpoints are an aggregate (`webhook_endpoint`) in the log; the rest is beside it:
--
-- * `webhook_endpoints` and `webhook_deliveries` are written by the webhook projector, in the
--   same transaction as its checkpoint: it keeps its own copy of the endpoints, so matching an
--   event against the endpoints never depends on another projection's progress (an event's
--   project comes from its aggregate's first event).
-- * `webhook_secrets`: signing secrets (never in an event). A rotation adds a row and gives the
--   previous one an expiry; every unexpired secret signs.
-- * `webhook_attempts`: one row per HTTP attempt, written by the dispatcher.
CREATE TABLE webhook_endpoints (
    id             uuid PRIMARY KEY,
    project_id     uuid NOT NULL,
    doc            jsonb NOT NULL,
    enabled        boolean NOT NULL,
    deleted        boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL,
    created_position bigint NOT NULL,
    version        bigint NOT NULL
);
CREATE INDEX webhook_endpoints_by_project ON webhook_endpoints (project_id) WHERE NOT deleted;

CREATE TABLE webhook_secrets (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id uuid NOT NULL,
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz
);
CREATE INDEX webhook_secrets_by_endpoint ON webhook_secrets (endpoint_id);

CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    endpoint_id     uuid NOT NULL,
    global_position bigint NOT NULL,
    event_type      text NOT NULL,
    webhook_id      text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL,          -- pending, succeeded, failed (retries exhausted)
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    leased_until    timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, global_position)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);

CREATE TABLE webhook_attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id   uuid NOT NULL,
    attempted_at  timestamptz NOT NULL,
    duration_ms   double precision NOT NULL,
    status_code   integer,
    error_class   text,
    response_body text,
    manual        boolean NOT NULL DEFAULT false
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, id);

-- Replays asked for with POST /webhooks/{id}/replay, run in the background; their progress.
CREATE TABLE webhook_replays (
    id               uuid PRIMARY KEY,
    endpoint_id      uuid NOT NULL,
    from_position    bigint NOT NULL,
    to_position      bigint NOT NULL,
    event_types      text[],
    only_failed      boolean NOT NULL,
    scanned_until    bigint NOT NULL,
    queued           bigint NOT NULL DEFAULT 0,
    status           text NOT NULL,          -- running, completed, failed
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
