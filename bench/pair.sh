#!/usr/bin/env bash
# One benchmark phase on a fresh database, with the CPU each process used: for A/B pairs of
# builds or settings, where bench/run.sh's four phases are more than is needed.
#   usage: bench/pair.sh on|off|limits|audit get|post [SECONDS]
#     on: audit trail and rate limits (the default); off: neither; limits / audit: only that.
#     env: BENCH_CONNECTIONS (wrk connections, 32), BENCH_BINARY (a binary to test instead of
#     target/release/herald, which is built when it is used), BENCH_SQL (run after migrating).
# Prints wrk's rate and p99; over the middle of the run, the CPU used by Herald, PostgreSQL and
# wrk and the cores' idle time (in 1/100 s, from /proc); and how many rows a commit of the event
# log and of the request log held on average (their group commits). Uses
# scripts/test-postgres.sh's cluster; the database herald_pair is dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:?on|off|limits|audit}; what=${2:?get|post}; seconds=${3:-10}
connections=${BENCH_CONNECTIONS:-32}
port=${BENCH_PORT:-18080}; base="http://127.0.0.1:$port"
(( seconds >= 6 )) || { echo "at least 6 seconds" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk not found: run bench/run.sh once (it installs it)" >&2; exit 1; }
herald=${BENCH_BINARY:-target/release/herald}
[[ -n ${BENCH_BINARY:-} ]] || cargo build --release --locked --bin herald >&2

eval "$(scripts/test-postgres.sh start)"
db_url="${TEST_DATABASE_URL%/*}/herald_pair"
psql -q "$TEST_DATABASE_URL" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS herald_pair" -c "CREATE DATABASE herald_pair"
export DATABASE_URL=$db_url HERALD_API_KEY_PEPPER=bench-pepper-0123456789 HERALD_LOG=warn
export HERALD_RATE_LIMITS__READ_PER_MINUTE=1000000000 HERALD_RATE_LIMITS__WRITE_PER_MINUTE=1000000000
export HERALD_RATE_LIMITS__DAILY_QUOTA=4000000000
case $mode in
  on) ;;
  off) export HERALD_AUDIT__ENABLED=false HERALD_RATE_LIMITS__ENABLED=false ;;
  limits) export HERALD_AUDIT__ENABLED=false ;;
  audit) export HERALD_RATE_LIMITS__ENABLED=false ;;
  *) echo "mode: on, off, limits or audit" >&2; exit 1 ;;
esac
$herald migrate >/dev/null
# BENCH_SQL: statements run on the fresh database after its migrations (to measure without an
# index, say); none by default.
[[ -z ${BENCH_SQL:-} ]] || psql -q "$db_url" -c "$BENCH_SQL"
project=$($herald projects create bench)
KEY=$($herald keys create --name bench --scopes jobs:read,jobs:write --project "$project")
export KEY
$herald serve --listen "127.0.0.1:$port" 2>/tmp/herald-pair.log &
server=$!
cleanup() {
  kill $server 2>/dev/null || true
  wait $server 2>/dev/null || true
  psql -q "$TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS herald_pair" || true
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -sf "$base/ready" >/dev/null && break; sleep 0.1; done
job_id=$(curl -sf -X POST "$base/api/v1/jobs" -H "X-API-Key: $KEY" \
  -H 'Content-Type: application/json' -d '{"kind": "bench"}' | sed -E 's/.*"id":"([^"]+)".*/\1/')
if [[ $what == get ]]; then
  target=(-H "X-API-Key: $KEY" "$base/api/v1/jobs/$job_id")
else
  target=(-s bench/post_job.lua "$base/api/v1/jobs")
fi

# CPU ticks (1/100 s) of every process with each name, and the machine's idle ticks. The server
# is found by its binary's name (as the kernel keeps it, at most 15 characters), so a
# BENCH_BINARY called something other than herald is still counted.
server_name=$(basename "$herald"); server_name=${server_name:0:15}
ticks() {
  for name in "$server_name" postgres wrk; do
    local sum=0
    for pid in $(pgrep -x "$name"); do
      read -r user system < <(awk '{print $14, $15}' "/proc/$pid/stat" 2>/dev/null || echo "0 0")
      sum=$((sum + user + system))
    done
    echo -n "$sum "
  done
  awk '/^cpu /{print $5 + $6}' /proc/stat
}
# The request log's writer has a backend of its own, named apart (api/src/audit/writer.rs), so
# its share of PostgreSQL's ticks is printed on its own too (0 when the audit trail is off).
writer_pid=$(psql -qtA "$db_url" -c "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE datname = 'herald_pair' AND application_name LIKE '% audit writer'")
writer_ticks() { awk '{print $14 + $15}' "/proc/$writer_pid/stat" 2>/dev/null || echo 0; }
out=$(mktemp)
wrk -t2 -c"$connections" -d"${seconds}s" --latency "${target[@]}" >"$out" &
load=$!
sleep 2
read -r h1 p1 w1 i1 < <(ticks); a1=$(writer_ticks)
sleep $((seconds - 4))
read -r h2 p2 w2 i2 < <(ticks); a2=$(writer_ticks)
wait $load
grep -q "Non-2xx" "$out" && echo "warning: non-2xx responses" >&2
rate=$(awk '/Requests\/sec/ {print $2}' "$out")
p99=$(awk '$1 == "99%" {print $2}' "$out")
rm -f "$out"
# Rows per commit (rows of one transaction share its xmin): how large the group commits were.
per_commit() {
  psql -qtA "$db_url" -c "SELECT coalesce(round(count(*)::numeric / nullif(count(DISTINCT xmin::text), 0), 1)::text, '-') FROM $1"
}
echo "$mode $what c=$connections: $rate req/s, p99 $p99; over $((seconds - 4)) s: herald $((h2 - h1)), postgres $((p2 - p1)) (writer $((a2 - a1))), wrk $((w2 - w1)), idle $((i2 - i1)) (1/100 s); rows per commit: events $(per_commit events), request log $(per_commit request_log)"
