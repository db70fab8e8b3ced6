-- Events by the time they were recorded, for `GET /api/v1/events?from=&to=`: a page of a
-- window that ends in the past reads the window first instead of walking back to it from the
-- log's end (docs/PERFORMANCE.md, twenty-seventh section). A BRIN index: `recorded_at` rises
-- with the table's physical order, so a summary per range of pages finds a window's pages, and
-- an append costs next to nothing (a B-tree would cost every append an index entry).
-- `autosummarize` summarizes each range once the next one is started, so the recent end of the
-- log is not left unsummarized (read by every window) until a vacuum; that takes autovacuum,
-- which is on by default (without it, windows are still answered exactly, only more slowly).
--
-- Built in the migration's transaction, which holds back appends while it reads the table
-- once (well under a second per million events). On a large log it can be created by hand
-- first: CREATE INDEX CONCURRENTLY events_by_time ON events USING brin (recorded_at)
-- WITH (autosummarize = on); this migration then finds it and does nothing.
CREATE INDEX IF NOT EXISTS events_by_time ON events USING brin (recorded_at)
    WITH (autosummarize = on);
