-- Appending processes now announce new events themselves, coalesced, after their transaction
-- (see store/src/announce.rs): a NOTIFY inside every appending transaction serialised commits.
-- Key changes are still announced from the trigger, in the transaction, because every replica
-- must drop a revoked key from its cache promptly and key changes are rare.
CREATE OR REPLACE FUNCTION events_notify() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    IF NEW.aggregate_type = 'api_key' THEN
        PERFORM pg_notify('herald_keys', NEW.aggregate_id);
    END IF;
    RETURN NULL;
END;
$$;
