-- The API-key read model grows the settings of the full key lifecycle (description, IP
-- allowlist, rate limits, rotation links), still written only by its projection.
ALTER TABLE api_keys
    ADD COLUMN description  text,
    ADD COLUMN ip_allowlist text[] NOT NULL DEFAULT '{}',
    ADD COLUMN rate_limit   jsonb  NOT NULL DEFAULT '{}',
    ADD COLUMN rotated_from text,
    ADD COLUMN successor_id text,
    ADD COLUMN updated_at   timestamptz,
    -- The whole ApiKeyState (including the key's HMAC, which the API never returns).
    ADD COLUMN doc          jsonb;

CREATE INDEX api_keys_project_created_idx ON api_keys (project_id, created_at DESC, id DESC);

-- How often each key is used. This is operational telemetry, not domain state: recording every
-- request as an event would dwarf the log, so replicas add their counts here every few seconds.
CREATE TABLE api_key_usage
(
    key_id       text PRIMARY KEY,
    usage_count  bigint      NOT NULL DEFAULT 0,
    last_used_at timestamptz NOT NULL
);
