-- A user's project-role events (`user.project_role_granted`, `user.project_role_revoked`)
-- belong to the project their payload names, so the project's auditors (its owners, its keys
-- with `audit:read`) see who was given or lost a role in it through `GET /api/v1/events`.
-- Until now a user's events all took the user's first event's project (none), so only admins
-- saw them. A user's other events still belong to no project, even one whose payload named a
-- project. (Webhooks: only account-wide endpoints hear user events, as before; see
-- `herald_webhooks::projector::audience`.)
CREATE OR REPLACE FUNCTION events_project() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    id text;
BEGIN
    IF NEW.aggregate_type = 'project' THEN
        id := NEW.aggregate_id;
    ELSIF NEW.sequence = 1
       OR (NEW.aggregate_type = 'user'
           AND NEW.event_type IN ('user.project_role_granted', 'user.project_role_revoked')) THEN
        id := NEW.payload->>'project_id';
    ELSE
        NEW.project_id := (SELECT f.project_id FROM events f
                            WHERE f.aggregate_type = NEW.aggregate_type
                              AND f.aggregate_id = NEW.aggregate_id AND f.sequence = 1);
        RETURN NEW;
    END IF;
    IF id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        NEW.project_id := id::uuid;
    END IF;
    RETURN NEW;
END;
$$;

-- The role events already stored (a handful per member: the log refuses updates, so that
-- trigger is off for this transaction, as in 0020).
ALTER TABLE events DISABLE TRIGGER events_append_only;
UPDATE events
   SET project_id = (payload->>'project_id')::uuid
 WHERE aggregate_type = 'user' AND project_id IS NULL
   AND event_type IN ('user.project_role_granted', 'user.project_role_revoked')
   AND payload->>'project_id' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
ALTER TABLE events ENABLE TRIGGER events_append_only;
