-- The key-usage flushes that committed: each flush inserts its id (a UUIDv7) first, in the
-- transaction that adds its counts. A flush whose answer was lost is settled by inserting the
-- same id: refused, the flush committed; inserted, it never will (its own insert would now be
-- refused), so its counts are written again. Ids older than a day are pruned by the flushes.
-- (api/src/auth/key_usage.rs)
CREATE TABLE api_key_usage_flushes (id uuid PRIMARY KEY);
