-- One primary-key select from the pre-filled events-shaped table.
\set n random(1, 100000)
SELECT * FROM bench_events WHERE aggregate_type = 'seed' AND aggregate_id = 'k' || :n AND sequence = 1;
