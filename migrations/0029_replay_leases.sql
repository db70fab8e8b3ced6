-- A replay is run by one server at a time, which holds it for a lease (`leased_until`) under
-- a token of its run (`runner`) and renews it with every page it queues; when the server stops,
-- another takes the replay over once the lease has run out and goes on from `scanned_until`.
-- Replays left `running` before this migration have no lease and are taken over at once (a
-- server of the previous version still running one would then share its pages: a delivery
-- queued twice is sent again, which receivers dedupe on `webhook-id`).
-- A run stopped by a database error gives its lease up at once, to be run again; `failures`
-- counts such stops, and the fifth leaves the replay `failed`.
ALTER TABLE webhook_replays ADD COLUMN runner uuid, ADD COLUMN leased_until timestamptz,
    ADD COLUMN failures int NOT NULL DEFAULT 0;
CREATE INDEX webhook_replays_running ON webhook_replays (leased_until) WHERE status = 'running';
