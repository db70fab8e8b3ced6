-- Where the log ended when a projection was last reset for a rebuild, as its (tx_id,
-- global_position) pair: until the checkpoint passes it, the read model is still being filled
-- from old events. The webhook dispatcher claims no delivery meanwhile, since the endpoint
-- copy it would read may be an old version (an old URL, or `disabled`). NULL: never rebuilt.
ALTER TABLE projection_checkpoints ADD COLUMN rebuild_tx xid8, ADD COLUMN rebuild_position bigint;
