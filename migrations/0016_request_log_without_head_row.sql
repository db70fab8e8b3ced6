-- The request log's chain head is its last record: a batch is inserted only while the log still
-- ends where its writer chained it (the primary key refuses a second writer's batch at the same
-- positions), so the head row that every batch updated goes, and with it each record's copy of
-- the previous record's hash, which the chain already implies.
DROP TABLE request_log_head;
ALTER TABLE request_log DROP COLUMN prev_hash;

-- Usage counts are no longer added by the statement that appends a batch: a background task
-- counts the records after `usage_checkpoint.seq` into `usage_hourly` and moves the checkpoint
-- in the same transaction, and usage reads add the records after the checkpoint, so they stay
-- exactly the log's counts. Everything logged so far is already counted.
CREATE TABLE usage_checkpoint (
    id  integer PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL
);
INSERT INTO usage_checkpoint
SELECT 1, greatest((SELECT max(seq) FROM request_log), (SELECT seq FROM request_log_anchor), 0);
