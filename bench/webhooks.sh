#!/usr/bin/env bash
# Webhook delivery, measured end to end on one machine:
#   1. throughput: wrk submits jobs (32 connections) for BENCH_SECONDS while the dispatcher sends
#      a `job.queued` webhook for each to a fast local receiver; reports jobs submitted per
#      second and webhooks delivered per second over the time until the last one arrived.
#   2. latency: 50 jobs per second for BENCH_SECONDS; the receiver reports p50/p99 of
#      arrival time minus the event's recorded time (submission to arrival).
#   usage: bench/webhooks.sh        (BENCH_SECONDS=15 by default)
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_SECONDS:-15}
port=${BENCH_PORT:-18081}
receiver_port=${BENCH_RECEIVER_PORT:-19090}
base="http://127.0.0.1:$port"

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
scripts/ensure-postgres.sh
cargo build --release --locked --bin herald >&2
cargo build --release --locked -p herald-tests --example webhook_receiver >&2

eval "$(scripts/test-postgres.sh start)"
admin_url=$TEST_DATABASE_URL
db_url="${admin_url%/*}/herald_webhooks_bench"
psql -q "$admin_url" -c "DROP DATABASE IF EXISTS herald_webhooks_bench" -c "CREATE DATABASE herald_webhooks_bench"

export DATABASE_URL=$db_url HERALD_API_KEY_PEPPER=bench-pepper-0123456789 HERALD_LOG=warn
# One key sends every request: raise its limits so they are evaluated but never refuse.
export HERALD_RATE_LIMITS__READ_PER_MINUTE=1000000000 HERALD_RATE_LIMITS__WRITE_PER_MINUTE=1000000000
export HERALD_RATE_LIMITS__DAILY_QUOTA=4000000000
export HERALD_WEBHOOKS_ALLOW_CIDRS=127.0.0.1/32 HERALD_WEBHOOKS__PER_ENDPOINT_CONCURRENCY=64
herald=target/release/herald
$herald migrate 2>/dev/null
project=$($herald projects create bench)
KEY=$($herald keys create --name bench --scopes jobs:read,jobs:write,webhooks:write --project "$project")
export KEY

target/release/examples/webhook_receiver "127.0.0.1:$receiver_port" &
receiver=$!
$herald serve --listen "127.0.0.1:$port" 2>/tmp/herald-webhooks-bench.log &
server=$!
trap 'kill $server $receiver 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "$base/ready" >/dev/null && break; sleep 0.1; done

curl -sf -X POST "$base/api/v1/webhooks" -H "X-API-Key: $KEY" -H 'Content-Type: application/json' \
  -d "{\"url\": \"http://127.0.0.1:$receiver_port/hook\", \"event_types\": [\"job.queued\"]}" >/dev/null
delivered() { curl -sf "http://127.0.0.1:$receiver_port/stats" | sed -E 's/.*"count":([0-9]+).*/\1/'; }
stat() { curl -sf "http://127.0.0.1:$receiver_port/stats" | sed -E "s/.*\"$1\":([0-9.]+).*/\1/"; }
jobs() { psql -tA "$db_url" -c "SELECT count(*) FROM events WHERE event_type = 'job.queued'"; }
now() { date +%s.%N; }

echo "== throughput: wrk POST /api/v1/jobs for ${duration}s with delivery running" >&2
curl -sf -X POST "http://127.0.0.1:$receiver_port/reset" >/dev/null
start=$(now)
wrk_out=$(wrk -t2 -c32 -d"${duration}s" -s bench/post_job.lua "$base/api/v1/jobs")
echo "$wrk_out" >&2
submit_rps=$(echo "$wrk_out" | awk '/Requests\/sec/ {print $2}')
submitted=$(jobs)
while [ "$(delivered)" -lt "$submitted" ]; do
  sleep 0.05
  if [ "$(awk -v s="$start" -v n="$(now)" 'BEGIN {print (n - s > 300)}')" = 1 ]; then echo "deliveries stalled" >&2; break; fi
done
finish=$(now)
total=$(delivered)
deliver_rps=$(awk -v n="$total" -v s="$start" -v f="$finish" 'BEGIN {printf "%.0f", n / (f - s)}')
drain=$(awk -v s="$start" -v f="$finish" -v d="$duration" 'BEGIN {printf "%.1f", (f - s) - d}')

echo "== latency: 50 jobs/s for ${duration}s" >&2
curl -sf -X POST "http://127.0.0.1:$receiver_port/reset" >/dev/null
python3 - "$base" "$KEY" "$duration" <<'PY'
import http.client, sys, time, urllib.parse
base, key, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
url = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(url.hostname, url.port)
start = time.monotonic()
for i in range(50 * seconds):
    due = start + i / 50
    time.sleep(max(0, due - time.monotonic()))
    conn.request("POST", "/api/v1/jobs", body='{"kind": "bench"}',
                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    conn.getresponse().read()
PY
sleep 1
latency_count=$(delivered)
p50=$(stat p50_ms); p99=$(stat p99_ms)

cat <<REPORT

throughput (submission and delivery together, ${duration}s of wrk at 32 connections)
  jobs submitted          $submit_rps /s
  webhooks delivered      $total in total, $deliver_rps /s until the last arrived (backlog drained ${drain}s after wrk stopped)
latency at 50 jobs/s (${latency_count} deliveries, submission to arrival)
  p50 ${p50} ms   p99 ${p99} ms
REPORT
