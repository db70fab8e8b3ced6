-- Requests counted against each caller's daily quota, per UTC day, so the quota survives a
-- restart. Rate-limit state within a minute stays in memory.
CREATE TABLE rate_limit_daily (
    subject text NOT NULL,
    day     date NOT NULL,
    used    bigint NOT NULL,
    PRIMARY KEY (subject, day)
);
