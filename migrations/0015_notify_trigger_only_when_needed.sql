-- Only key and user events are announced from the trigger (0005). With a WHEN clause the
-- trigger does not fire at all for the others (nearly every event is a job event), which saves
-- queuing an after-trigger event and calling the function for each of them.
DROP TRIGGER events_notify ON events;
CREATE TRIGGER events_notify
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type IN ('api_key', 'user'))
    EXECUTE FUNCTION events_notify();
