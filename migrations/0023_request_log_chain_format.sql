-- How each record's hash was computed (api/src/audit/chain.rs):
--   1: records written before this migration, and by servers older than it: a missing value
--      and an empty one hash alike, so an edit between the two (`actor_id` NULL to '') is not
--      seen by verification;
--   2: records written since: the format itself and whether each optional value is present are
--      hashed, so any such edit, or a changed format, breaks the chain.
-- A constant default, so adding the column rewrites nothing; the servers of this version write
-- 2 explicitly, so a server still running the version before it keeps writing 1, as it hashes.
ALTER TABLE request_log ADD COLUMN chain_format smallint NOT NULL DEFAULT 1;
