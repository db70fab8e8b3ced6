-- Webhook endpoints' custom header values are sealed (AES-256-GCM under a key derived from the
-- pepper, which the database never holds) before they enter an event: they are often the
-- receivers' own credentials, and events are kept forever. Values stored before are sealed by
-- the server at start (api/src/webhook_headers.rs), which needs the key, so this migration only
-- lets that one change through the log's append-only rule: an update of a webhook endpoint's
-- event that replaces plain header values by sealed ones (`sealed:v1:…`) and changes nothing
-- else: not a value sealed already, not a header's name, not any other field or column.
CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    IF TG_OP = 'UPDATE'
       AND OLD.aggregate_type = 'webhook_endpoint'
       AND (to_jsonb(NEW) - 'payload') = (to_jsonb(OLD) - 'payload')
       AND (NEW.payload::jsonb - 'headers') = (OLD.payload::jsonb - 'headers')
       AND jsonb_typeof(NEW.payload::jsonb -> 'headers') = 'object'
       AND ARRAY(SELECT jsonb_object_keys(NEW.payload::jsonb -> 'headers') ORDER BY 1)
           = ARRAY(SELECT jsonb_object_keys(OLD.payload::jsonb -> 'headers') ORDER BY 1)
       AND NOT EXISTS (SELECT 1 FROM jsonb_each(NEW.payload::jsonb -> 'headers') h
                         JOIN jsonb_each(OLD.payload::jsonb -> 'headers') o ON o.key = h.key
                        WHERE h.value <> o.value
                          AND (jsonb_typeof(h.value) <> 'string'
                               OR NOT starts_with(h.value #>> '{}', 'sealed:v1:')
                               OR starts_with(o.value #>> '{}', 'sealed:v1:')))
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'the events table is append-only';
END;
$$;
