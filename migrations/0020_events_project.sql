-- Each event's project, stored with it, so `GET /api/v1/events` finds a project's events
-- through an index instead of walking the whole log backwards and looking up every event's
-- aggregate (967 ms for a rare project at a million events; docs/PERFORMANCE.md, twenty-fifth
-- section). The project is what the search computed before: a project's own events belong to
-- it; any other aggregate's events belong to the project named in its first event's payload
-- (`project_id`), or to none (users, account-wide keys and endpoints).
--
-- The backfill rewrites every event that has a project while holding the table's exclusive
-- lock: 16 s for a million events on the 2-core machine of docs/PERFORMANCE.md. Appends wait
-- meanwhile, and with them every audited response (the request log's writer shares their
-- statements, and gives up after 10 s: 503s on replicas still serving). On a large log, run
-- `herald migrate` while the API is stopped or quiet. The updated rows' old versions leave the
-- table and its indexes about twice their size until autovacuum reclaims them.
ALTER TABLE events ADD COLUMN project_id uuid;

-- Set on insert by whoever inserts it, or else by this trigger, for every writer (postgres-es's
-- multi-event commits, anything else): the batched appends pass the project of the events
-- that name it themselves (a project's own, an aggregate's first), so the trigger runs only
-- for the rest (about 5.5 µs an event spared; docs/PERFORMANCE.md). A later event copies its
-- aggregate's first event's project. VOLATILE (the default), so a later event inserted by the
-- same statement as its first event sees that first row. An id that is not a UUID in its
-- hyphenated form (the only one Herald writes) leaves the project empty instead of refusing
-- the append.
CREATE FUNCTION events_project() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    id text;
BEGIN
    IF NEW.aggregate_type = 'project' THEN
        id := NEW.aggregate_id;
    ELSIF NEW.sequence = 1 THEN
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

CREATE TRIGGER events_project
    BEFORE INSERT ON events
    FOR EACH ROW
    WHEN (NEW.project_id IS NULL)
EXECUTE FUNCTION events_project();

-- The events already stored, first events before the rest. The log refuses updates
-- (`events_append_only`), so that trigger is off for the length of this transaction; the
-- ALTER TABLE holds the table's exclusive lock until the commit, so no other statement runs
-- meanwhile.
ALTER TABLE events DISABLE TRIGGER events_append_only;
UPDATE events
   SET project_id = (CASE WHEN aggregate_type = 'project' THEN aggregate_id
                          ELSE payload->>'project_id' END)::uuid
 WHERE (aggregate_type = 'project' OR sequence = 1)
   AND (CASE WHEN aggregate_type = 'project' THEN aggregate_id ELSE payload->>'project_id' END)
       ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
UPDATE events e
   SET project_id = f.project_id
  FROM events f
 WHERE e.aggregate_type <> 'project' AND e.sequence <> 1 AND f.project_id IS NOT NULL
   AND f.aggregate_type = e.aggregate_type AND f.aggregate_id = e.aggregate_id
   AND f.sequence = 1;
ALTER TABLE events ENABLE TRIGGER events_append_only;

-- A project's events in log order: a bound caller's page reads it backwards (or forwards) and
-- stops at the page's end. Events with no project are left out of it.
CREATE INDEX events_by_project ON events (project_id, global_position)
    WHERE project_id IS NOT NULL;
