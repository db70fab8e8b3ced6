-- Each replica (each process) stores its own count of a subject's day as an absolute number,
-- so a flush retried after a lost answer cannot count twice and no count is missing while a
-- flush is in flight. A subject's use of a day is the sum over replicas. Rows written before
-- this migration keep counting as the share of one earlier replica.
ALTER TABLE rate_limit_daily ADD COLUMN replica text NOT NULL DEFAULT 'before-0017';
ALTER TABLE rate_limit_daily ALTER COLUMN replica DROP DEFAULT;
ALTER TABLE rate_limit_daily DROP CONSTRAINT rate_limit_daily_pkey;
ALTER TABLE rate_limit_daily ADD PRIMARY KEY (subject, day, replica);
