#!/usr/bin/env bash
# Herald's HTTP throughput against PostgreSQL's own, measured in one run on one database:
#   1. POST /api/v1/jobs         (wrk, BENCH_CONNECTIONS connections, authenticated)
#   2. GET  /api/v1/jobs/{id}    (wrk, BENCH_CONNECTIONS connections, authenticated)
#   3. pgbench single-row inserts into an events-shaped table (BENCH_CONNECTIONS clients)
#   4. pgbench primary-key selects on that table (BENCH_CONNECTIONS clients)
# and prints the ratios the targets are stated in. Phases run one after the other.
#   usage: bench/run.sh            (BENCH_SECONDS=15 per phase by default; BENCH_CONNECTIONS=32
#          wrk connections and pgbench clients by default)
# Uses the throwaway cluster of scripts/test-postgres.sh (fsync off, for Herald and pgbench alike).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_SECONDS:-15}
connections=${BENCH_CONNECTIONS:-32}
port=${BENCH_PORT:-18080}
base="http://127.0.0.1:$port"

if ! command -v wrk >/dev/null; then
  echo "wrk not found; installing the OS package 'wrk' with apt-get"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
scripts/ensure-postgres.sh
command -v pgbench >/dev/null || { echo "pgbench not found (package postgresql-client)" >&2; exit 1; }
cargo build --release --locked --bin herald >&2

eval "$(scripts/test-postgres.sh start)"
admin_url=$TEST_DATABASE_URL
db_url="${admin_url%/*}/herald_bench"
psql -q "$admin_url" -c "DROP DATABASE IF EXISTS herald_bench" -c "CREATE DATABASE herald_bench"

export DATABASE_URL=$db_url HERALD_API_KEY_PEPPER=bench-pepper-0123456789 HERALD_LOG=warn
# One key sends every request: raise its limits so they are evaluated but never refuse.
export HERALD_RATE_LIMITS__READ_PER_MINUTE=1000000000 HERALD_RATE_LIMITS__WRITE_PER_MINUTE=1000000000
export HERALD_RATE_LIMITS__DAILY_QUOTA=4000000000
herald=target/release/herald
$herald migrate 2>/dev/null
project=$($herald projects create bench)
KEY=$($herald keys create --name bench --scopes jobs:read,jobs:write --project "$project")
export KEY

start_server() {
  $herald serve --listen "127.0.0.1:$port" 2>/tmp/herald-bench.log &
  server=$!
  for _ in $(seq 1 100); do curl -sf "$base/ready" >/dev/null && break; sleep 0.1; done
}
start_server
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT

job=$(curl -sf -X POST "$base/api/v1/jobs" -H "X-API-Key: $KEY" -H 'Content-Type: application/json' -d '{"kind": "bench"}')
job_id=$(echo "$job" | sed -E 's/.*"id":"([^"]+)".*/\1/')

# wrk prints "Requests/sec: N" and, with --latency, a "99%  Xms" line.
run_wrk() {
  local out
  out=$(wrk -t2 -c"$connections" -d"${duration}s" --latency "$@")
  echo "$out" >&2
  if echo "$out" | grep -q "Non-2xx"; then echo "warning: non-2xx responses in this phase" >&2; fi
  local rps p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  echo "$rps $p99"
}

run_pgbench() {
  local out
  out=$(pgbench -n -c"$connections" -j2 -T"$duration" -f "$1" "$db_url" 2>&1)
  echo "$out" >&2
  local tps lat
  tps=$(echo "$out" | awk -F'= ' '/^tps/ {split($2, a, " "); print a[1]}')
  lat=$(echo "$out" | awk -F'= ' '/latency average/ {print $2}')
  echo "$tps $lat"
}

# Each phase after the first starts from a vacuumed, analyzed and checkpointed database, so
# it does not inherit the autovacuum and checkpoint work of the phases before it, which
# otherwise lands inside whichever phase is running. (The first phase starts on a fresh
# database, with no statistics at all.)
settle() { psql -q "$db_url" -c "VACUUM ANALYZE" -c "CHECKPOINT"; }

echo "== POST /api/v1/jobs" >&2
read -r post_rps post_p99 < <(run_wrk -s bench/post_job.lua "$base/api/v1/jobs")
settle
echo "== GET /api/v1/jobs/{id}" >&2
read -r get_rps get_p99 < <(run_wrk -H "X-API-Key: $KEY" "$base/api/v1/jobs/$job_id")
kill $server 2>/dev/null || true; wait $server 2>/dev/null || true

# The same two phases with the audit trail and rate limiting turned off, to price them.
HERALD_AUDIT__ENABLED=false HERALD_RATE_LIMITS__ENABLED=false start_server
settle
echo "== POST /api/v1/jobs (audit trail and rate limits off)" >&2
read -r post_off_rps post_off_p99 < <(run_wrk -s bench/post_job.lua "$base/api/v1/jobs")
settle
echo "== GET /api/v1/jobs/{id} (audit trail and rate limits off)" >&2
read -r get_off_rps get_off_p99 < <(run_wrk -H "X-API-Key: $KEY" "$base/api/v1/jobs/$job_id")
kill $server 2>/dev/null || true; wait $server 2>/dev/null || true

psql -q "$db_url" <<'SQL'
CREATE TABLE bench_events (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL,
    event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL,
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at timestamptz NOT NULL DEFAULT now(), project_id uuid,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence), UNIQUE (global_position));
CREATE INDEX ON bench_events (tx_id, global_position);
CREATE INDEX ON bench_events (project_id, global_position) WHERE project_id IS NOT NULL;
CREATE INDEX ON bench_events USING brin (recorded_at) WITH (autosummarize = on);
CREATE INDEX ON bench_events ((metadata ->> 'actor_id'), global_position);
CREATE INDEX ON bench_events (event_type, global_position);
INSERT INTO bench_events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, project_id)
SELECT 'seed', 'k' || g, 1, 'job.queued', '1', '{"kind": "bench"}', '{}', '00000000-0000-4000-8000-000000000001' FROM generate_series(1, 100000) g;
ANALYZE bench_events;
SQL
settle
echo "== pgbench inserts" >&2
read -r ins_tps ins_lat < <(run_pgbench bench/pgbench_insert.sql)
settle
echo "== pgbench selects" >&2
read -r sel_tps sel_lat < <(run_pgbench bench/pgbench_select.sql)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
cat <<REPORT

phase                         rate (/s)   p99 / avg latency
POST /api/v1/jobs             $post_rps   p99 $post_p99
GET /api/v1/jobs/{id}         $get_rps   p99 $get_p99
pgbench insert (events-like)  $ins_tps   avg ${ins_lat}
pgbench select (primary key)  $sel_tps   avg ${sel_lat}

submission / insert = $(ratio "$post_rps" "$ins_tps")   (target >= 0.35)
read / select       = $(ratio "$get_rps" "$sel_tps")   (target >= 0.20)

audit trail and rate limits off:
POST /api/v1/jobs             $post_off_rps   p99 $post_off_p99
GET /api/v1/jobs/{id}         $get_off_rps   p99 $get_off_p99
on / off: submission $(ratio "$post_rps" "$post_off_rps"), reads $(ratio "$get_rps" "$get_off_rps")   (target >= 0.85)
REPORT
