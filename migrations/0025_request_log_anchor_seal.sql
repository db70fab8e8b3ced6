-- The anchor retention leaves (the last pruned record's position and hash) is sealed: `seal`
-- is HMAC-SHA256 under the request log's chain key (api/src/audit/key.rs) over the anchor's
-- position, hash and whether that record was keyed (`keyed`), so someone who can write to the
-- database but holds no pepper cannot delete the log's first records and move the anchor
-- past them, which verification would otherwise read as retention. Anchors written before
-- this migration have neither: verification accepts such an anchor only while no keyed record
-- follows it (docs/API.md).
ALTER TABLE request_log_anchor ADD COLUMN keyed boolean, ADD COLUMN seal text;
