-- Account-wide webhook endpoints (created by admins): no project, so they hear every project's
-- events and the account's own (users, projects). The projector matches an event against its
-- project's endpoints and these.
ALTER TABLE webhook_endpoints ALTER COLUMN project_id DROP NOT NULL;
CREATE INDEX webhook_endpoints_account_wide ON webhook_endpoints (id) WHERE project_id IS NULL AND NOT deleted;
