-- Read models. Only projections write these tables (DESIGN invariant 1); each can be emptied and
-- rebuilt from the log. `version` is the aggregate sequence of the last event applied, which
-- lets readers tell a lagging row from a current one and lets projections refuse an event that
-- arrives out of order or twice.

-- Jobs: indexed columns for filtering and leasing, plus the whole job as `doc` (the domain's
-- JobState serialised), so a read is one row fetch.
CREATE TABLE jobs
(
    id               uuid PRIMARY KEY,
    project_id       uuid        NOT NULL,
    kind             text        NOT NULL,
    status           text        NOT NULL,
    priority         smallint    NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    lease_expires_at timestamptz,
    deleted          boolean     NOT NULL DEFAULT false,
    version          bigint      NOT NULL,
    doc              jsonb       NOT NULL
);

CREATE INDEX jobs_project_created_idx ON jobs (project_id, created_at DESC, id DESC) WHERE NOT deleted;
CREATE INDEX jobs_created_idx ON jobs (created_at DESC, id DESC) WHERE NOT deleted;
CREATE INDEX jobs_queue_idx ON jobs (priority DESC, created_at, id) WHERE status = 'queued' AND NOT deleted;
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE status = 'running';

CREATE TABLE projects
(
    id         uuid PRIMARY KEY,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL,
    version    bigint      NOT NULL
);

-- API keys as listings show them: never the key, only its hash (for verification) and start.
CREATE TABLE api_keys
(
    id         text PRIMARY KEY,
    name       text        NOT NULL,
    project_id uuid,
    scopes     text[]      NOT NULL,
    key_hash   text        NOT NULL,
    start      text        NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL,
    version    bigint      NOT NULL
);
