#!/usr/bin/env bash
# File transfer, measured on one machine against the same file copied by curl to and from a
# plain local file server (nginx: PUT to a directory, GET from it), all over loopback:
#   1. upload: Herald's resumable upload (curl PUT per chunk, then complete) vs one curl PUT
#      to nginx; MiB/s over the whole transfer, including Herald's assembly on complete.
#   2. download: curl GET of the job's input file from Herald vs from nginx; MiB/s.
#   3. memory: Herald's resident set sampled every 50 ms during the upload (peak and before).
# Each figure is the median of BENCH_RUNS runs (3). Storage is a local directory on the
# same disk as nginx's root.
#   usage: bench/files.sh            (BENCH_FILE_MIB=1024, BENCH_CHUNK_MIB=64, BENCH_RUNS=3)
set -euo pipefail
cd "$(dirname "$0")/.."

mib=${BENCH_FILE_MIB:-1024}
chunk_mib=${BENCH_CHUNK_MIB:-64}
runs=${BENCH_RUNS:-3}
port=${BENCH_PORT:-18082}
nginx_port=${BENCH_NGINX_PORT:-18083}
base="http://127.0.0.1:$port"
work=$(mktemp -d /tmp/herald-files-bench.XXXXXX)

command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >&2 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >&2; }
scripts/ensure-postgres.sh
cargo build --release --locked --bin herald >&2

eval "$(scripts/test-postgres.sh start)"
admin_url=$TEST_DATABASE_URL
db_url="${admin_url%/*}/herald_files_bench"
psql -q "$admin_url" -c "DROP DATABASE IF EXISTS herald_files_bench" -c "CREATE DATABASE herald_files_bench"

export DATABASE_URL=$db_url HERALD_API_KEY_PEPPER=bench-pepper-0123456789 HERALD_LOG=warn
export HERALD_RATE_LIMITS__WRITE_PER_MINUTE=1000000000 HERALD_RATE_LIMITS__READ_PER_MINUTE=1000000000
export HERALD_STORAGE__PATH=$work/herald-files
herald=target/release/herald
$herald migrate 2>/dev/null
project=$($herald projects create bench)
KEY=$($herald keys create --name bench --scopes jobs:read,jobs:write --project "$project")

mkdir -p "$work/nginx-root" "$work/nginx-tmp"
cat > "$work/nginx.conf" <<CONF
user $(id -un);
worker_processes 1;
daemon off;
error_log $work/nginx-error.log;
pid $work/nginx.pid;
events { worker_connections 64; }
http {
  access_log off;
  client_max_body_size 0;
  client_body_temp_path $work/nginx-tmp;
  proxy_temp_path $work/nginx-tmp; fastcgi_temp_path $work/nginx-tmp;
  uwsgi_temp_path $work/nginx-tmp; scgi_temp_path $work/nginx-tmp;
  sendfile on;
  server {
    listen 127.0.0.1:$nginx_port;
    root $work/nginx-root;
    location / { dav_methods PUT; create_full_put_path on; }
  }
}
CONF
nginx -c "$work/nginx.conf" -p "$work" &
nginx_pid=$!
$herald serve --listen "127.0.0.1:$port" 2>"$work/herald.log" &
server=$!
trap 'kill $server $nginx_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf "$base/ready" >/dev/null && break; sleep 0.1; done

file=$work/input.bin
head -c "$((mib * 1024 * 1024))" /dev/urandom > "$file"
size=$(stat -c %s "$file")
sum=$(sha256sum "$file" | cut -d' ' -f1)
chunk=$((chunk_mib * 1024 * 1024))
count=$(((size + chunk - 1) / chunk))
for ((n = 0; n < count; n++)); do
  dd if="$file" of="$work/chunk.$n" bs="$chunk" skip="$n" count=1 status=none
  sha256sum "$work/chunk.$n" | cut -d' ' -f1 > "$work/chunk.$n.sum"
done
now() { date +%s.%N; }
rate() { awk -v b="$size" -v s="$1" -v e="$2" 'BEGIN { printf "%.0f\n", b / 1048576 / (e - s) }'; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

herald_upload() {
  local upload id
  upload=$(curl -sf "$base/api/v1/uploads" -H "X-API-Key: $KEY" -H 'Content-Type: application/json' \
    -d "{\"filename\": \"input.bin\", \"size\": $size, \"chunk_size\": $chunk, \"sha256\": \"$sum\"}")
  id=$(echo "$upload" | sed -E 's/.*"id":"([^"]+)".*/\1/')
  for ((n = 0; n < count; n++)); do
    curl -sf -X PUT "$base/api/v1/uploads/$id/chunks/$n" -H "X-API-Key: $KEY" \
      -H "X-Chunk-Sha256: $(cat "$work/chunk.$n.sum")" -H 'Content-Type: application/octet-stream' \
      -T "$work/chunk.$n" >/dev/null
  done
  curl -sf -X POST "$base/api/v1/uploads/$id/complete" -H "X-API-Key: $KEY" >/dev/null
  echo "$id"
}

echo "== ${mib} MiB file, ${chunk_mib} MiB chunks, $runs runs" >&2
: > "$work/up.herald"; : > "$work/up.nginx"; : > "$work/down.herald"; : > "$work/down.nginx"; : > "$work/peak"
before=$(rss_kib)
for run in $(seq 1 "$runs"); do
  # Upload to Herald while sampling its memory.
  ( peak=0; while kill -0 $server 2>/dev/null; do r=$(rss_kib); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" > "$work/peak.now"; sleep 0.05; done ) &
  sampler=$!
  start=$(now); id=$(herald_upload); end=$(now)
  kill $sampler 2>/dev/null || true; wait $sampler 2>/dev/null || true
  cat "$work/peak.now" >> "$work/peak"
  rate "$start" "$end" >> "$work/up.herald"
  job=$(curl -sf "$base/api/v1/jobs" -H "X-API-Key: $KEY" -H 'Content-Type: application/json' \
    -d "{\"kind\": \"bench\", \"input\": {\"upload_id\": \"$id\"}}")
  url=$(echo "$job" | sed -E 's/.*"url":"([^"]+)".*/\1/')
  start=$(now); curl -sf "$base$url" -H "X-API-Key: $KEY" -o /dev/null; end=$(now)
  rate "$start" "$end" >> "$work/down.herald"

  start=$(now); curl -sf -T "$file" "http://127.0.0.1:$nginx_port/input-$run.bin" -o /dev/null; end=$(now)
  rate "$start" "$end" >> "$work/up.nginx"
  start=$(now); curl -sf "http://127.0.0.1:$nginx_port/input-$run.bin" -o /dev/null; end=$(now)
  rate "$start" "$end" >> "$work/down.nginx"
  rm -f "$work/nginx-root/input-$run.bin"
done
up_h=$(median < "$work/up.herald"); up_n=$(median < "$work/up.nginx")
down_h=$(median < "$work/down.herald"); down_n=$(median < "$work/down.nginx")
peak=$(median < "$work/peak")
echo "runs (MiB/s): upload herald $(paste -sd, "$work/up.herald") nginx $(paste -sd, "$work/up.nginx");" \
  "download herald $(paste -sd, "$work/down.herald") nginx $(paste -sd, "$work/down.nginx")" >&2
printf '| transfer | Herald MiB/s | curl + nginx MiB/s | ratio |\n|---|---|---|---|\n'
awk -v h="$up_h" -v n="$up_n" 'BEGIN { printf "| upload (chunked, with assembly) | %s | %s | %.2f |\n", h, n, h / n }'
awk -v h="$down_h" -v n="$down_n" 'BEGIN { printf "| download | %s | %s | %.2f |\n", h, n, h / n }'
printf '\nHerald resident memory: %s MiB before, %s MiB peak during a %s MiB upload (median of runs)\n' \
  "$((before / 1024))" "$((peak / 1024))" "$mib"
