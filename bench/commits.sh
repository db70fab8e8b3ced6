#!/usr/bin/env bash
# What one commit for both logs would save: PostgreSQL alone, no Herald in the loop. Alternates
# bench/pgbench_two_commits.sql (11 events and 11 request-log records, two transactions) and
# bench/pgbench_one_commit.sql (the same rows in one statement), pgbench with one client and
# prepared statements, on a scratch database that Herald's migrations set up. Prints each run's
# iterations per second and the CPU per iteration of pgbench's backend (from /proc, over the
# middle of the run).
#   usage: bench/commits.sh [ROUNDS] [SECONDS]     env: BENCH_BINARY (as in bench/pair.sh)
# Uses scripts/test-postgres.sh's cluster; the database herald_commits is dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}; seconds=${2:-10}
(( seconds >= 6 )) || { echo "at least 6 seconds" >&2; exit 1; }
command -v pgbench >/dev/null || { echo "pgbench not found (PostgreSQL's client package)" >&2; exit 1; }
herald=${BENCH_BINARY:-target/release/herald}
[[ -n ${BENCH_BINARY:-} ]] || cargo build --release --locked --bin herald >&2

eval "$(scripts/test-postgres.sh start)"
db_url="${TEST_DATABASE_URL%/*}/herald_commits"
psql -q "$TEST_DATABASE_URL" -c "SET client_min_messages = warning" \
  -c "DROP DATABASE IF EXISTS herald_commits" -c "CREATE DATABASE herald_commits"
trap 'psql -q "$TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS herald_commits" || true' EXIT
DATABASE_URL=$db_url HERALD_API_KEY_PEPPER=bench-pepper-0123456789 $herald migrate >/dev/null

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for round in $(seq 1 "$rounds"); do
  for variant in two_commits one_commit; do
    out=$(mktemp)
    pgbench -n -M prepared -c1 -T "$seconds" -f "bench/pgbench_$variant.sql" "$db_url" >"$out" 2>&1 &
    load=$!
    sleep 2
    backend=$(psql -qtA "$TEST_DATABASE_URL" \
      -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' LIMIT 1")
    t1=$(ticks "$backend")
    sleep $((seconds - 4))
    t2=$(ticks "$backend")
    wait $load
    rate=$(awk '/^tps/ {print $3}' "$out")
    rm -f "$out"
    awk -v v="$variant" -v r="$round" -v rate="$rate" -v t="$((t2 - t1))" -v s="$((seconds - 4))" \
      'BEGIN {printf "round %d %-11s %7.0f iterations/s, backend %5.1f µs per iteration\n", r, v, rate, t * 10000 / (rate * s)}'
  done
done
