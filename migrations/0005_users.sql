-- Users. Their lifecycle is in the log (aggregate type `user`); what is kept outside it:
--
-- * `user_credentials`: the argon2id hash of each user's password. A secret must never enter
--   an event (events are kept forever and sent to webhooks), so the hash lives here, written
--   before the `user.created` event and replaced on a password change. Its unique email is also
--   what makes two registrations of one address impossible.
-- * `users` and `project_members`: read models, written only by the `users` projection.
CREATE TABLE user_credentials (
    user_id       uuid PRIMARY KEY,
    email         text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id         uuid PRIMARY KEY,
    email      text NOT NULL,
    role       text NOT NULL,
    created_at timestamptz NOT NULL,
    version    bigint NOT NULL
);

CREATE TABLE project_members (
    project_id uuid NOT NULL,
    user_id    uuid NOT NULL,
    role       text NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_by_user ON project_members (user_id);

-- Every replica caches users (sessions and project roles) as it caches keys; user events are
-- announced in the transaction on `herald_users` so a logout or a removed membership reaches
-- every replica promptly.
CREATE OR REPLACE FUNCTION events_notify() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    IF NEW.aggregate_type = 'api_key' THEN
        PERFORM pg_notify('herald_keys', NEW.aggregate_id);
    ELSIF NEW.aggregate_type = 'user' THEN
        PERFORM pg_notify('herald_users', NEW.aggregate_id);
    END IF;
    RETURN NULL;
END;
$$;
