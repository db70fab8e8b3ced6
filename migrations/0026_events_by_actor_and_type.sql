-- Events by actor and by type, each in position order, for `GET /api/v1/events?actor=` and
-- `?type=`: a page for a key or user with few events, or for a rare type (`api_key.revoked`),
-- walked the whole log backwards without them, reading each event's metadata on the way:
-- about 0.86 s per page at a million events for an actor with none, and events are kept
-- forever, so that grew without bound (docs/PERFORMANCE.md, thirty-first section). With them a
-- page reads the actor's or type's own entries: under 2 ms at a million events. An actor or
-- type that fills much of the log keeps the walk by position, which finds its page at once.
-- Cost: about 7 µs of PostgreSQL's CPU per appended event for both, and about 70 MB per
-- million events.
--
-- Built in the migration's transaction, holding back appends (about 3 s per million events);
-- on a large log, create them by hand first:
--   CREATE INDEX CONCURRENTLY events_by_actor ON events ((metadata ->> 'actor_id'), global_position);
--   CREATE INDEX CONCURRENTLY events_by_type ON events (event_type, global_position);
-- (check `pg_index.indisvalid`), and this migration then finds them and does nothing.
CREATE INDEX IF NOT EXISTS events_by_actor ON events ((metadata ->> 'actor_id'), global_position);
CREATE INDEX IF NOT EXISTS events_by_type ON events (event_type, global_position);
