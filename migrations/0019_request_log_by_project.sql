-- no-transaction
-- A project's records, newest first, without walking every tenant's: `GET /audit/requests` for
-- a project-bound caller (or with `project=`) and a project's export. Without it a page for a
-- project with few records scanned the log backwards through everyone else's (about 50 ms at a
-- million records; docs/PERFORMANCE.md, twenty-third section). Built CONCURRENTLY (hence no
-- transaction), so replicas still serving keep writing records while an upgrade builds it; a
-- build that was interrupted leaves an invalid index behind, which `REINDEX INDEX
-- request_log_by_project` repairs.
CREATE INDEX CONCURRENTLY IF NOT EXISTS request_log_by_project ON request_log (project_id, seq);
