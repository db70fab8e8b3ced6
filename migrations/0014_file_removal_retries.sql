-- A file's bytes are removed after its row is marked (`expired` or `removed`, which stops any
-- job from claiming it) and `removed_at` is set only once they are gone, so a removal that
-- failed (the object store did not answer) is found again and retried by the janitor.
CREATE INDEX files_removal_unfinished ON files (id)
    WHERE state IN ('expired', 'removed') AND removed_at IS NULL;
