-- A replay is run by one server at a time, which holds it for a lease (`leased_until`) under
-- a token of its run (`runner`) and renews it with every page it queues; when the server stops,
-- another takes the replay over once the lease has run out and goes on from `scanned_until`.
-- Replays left `running` before this migration have no lease and are taken over at once (a
-- server of the previous version still running one would then share its pages: a delivery
-- queued twice is sent again, which receivers dedupe on `webhook-id`).
ALTER TABLE webhook_replays ADD COLUMN runner uuid, ADD COLUMN leased_until timestamptz;
CREATE INDEX webhook_replays_running ON webhook_replays (leased_until) WHERE status = 'running';
