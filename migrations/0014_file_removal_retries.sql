-- A file's bytes are removed after its row is marked (`expired` or `removed`, which stops any
-- job from claiming it), and `removed_at` is set only once they are gone. The janitor removes
-- what is marked; a removal the object store refused is retried, at most once a minute and the
-- longest-waiting first (`removal_attempted_at` is when it last failed).
ALTER TABLE files ADD COLUMN removal_attempted_at timestamptz;
CREATE INDEX files_removal_unfinished ON files (removal_attempted_at NULLS FIRST, id)
    WHERE state IN ('expired', 'removed') AND removed_at IS NULL;
