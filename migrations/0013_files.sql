-- Files: resumable uploads in progress, finished uploads, and every file a job holds (its input
-- or its result). The bytes live in object storage (`files/{id}`, chunks under `uploads/{id}/`);
-- this table is the catalogue. A file is used by at most one job (`job_id`), and goes when that
-- job expires or is deleted; a file no job has taken goes at `expires_at`.
CREATE TABLE files (
    id              uuid PRIMARY KEY,
    project_id      uuid NOT NULL,
    state           text NOT NULL CHECK (state IN ('uploading', 'assembling', 'complete', 'expired', 'removed')),
    filename        text NOT NULL,
    content_type    text NOT NULL,
    -- Declared (uploads in progress) or stored (complete) size in bytes.
    size            bigint NOT NULL,
    -- Resumable uploads only.
    chunk_size      bigint,
    chunk_count     integer,
    expected_sha256 text,
    -- SHA-256 of the stored bytes (complete files).
    sha256          text,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    expires_at      timestamptz,
    job_id          uuid,
    role            text CHECK (role IN ('input', 'result')),
    removed_at      timestamptz
);

CREATE INDEX files_by_job ON files (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX files_unclaimed_expiry ON files (expires_at)
    WHERE job_id IS NULL AND state IN ('uploading', 'assembling', 'complete');

-- The chunks of a resumable upload received so far; `object_key` is the attempt that was kept
-- (a re-sent chunk replaces it; a refused one never does).
CREATE TABLE upload_chunks (
    upload_id   uuid NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    n           integer NOT NULL,
    size        bigint NOT NULL,
    sha256      text NOT NULL,
    object_key  text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upload_id, n)
);
