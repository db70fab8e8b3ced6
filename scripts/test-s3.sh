#!/usr/bin/env bash
# Starts (or reuses) a throwaway S3-compatible server for the storage tests (moto in server
# mode, from PyPI, installed into target/pydeps-moto when missing), creates the bucket
# `herald-test`, and prints the `export TEST_S3_ENDPOINT=... TEST_S3_BUCKET=...` line to eval.
# Keeps everything in memory: never point it at data you care about.
#   usage: eval "$(scripts/test-s3.sh start)"   |   scripts/test-s3.sh stop
# Listens on 127.0.0.1:${HERALD_TEST_S3_PORT:-59000}; its log and pid are in /tmp/herald-test-s3.
set -euo pipefail
cd "$(dirname "$0")/.."

port=${HERALD_TEST_S3_PORT:-59000}
dir=${HERALD_TEST_S3_DIR:-/tmp/herald-test-s3}
deps=target/pydeps-moto
bucket=herald-test

answers() { curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; }

start() {
  if ! PYTHONPATH=$deps python3 -c 'import moto.server' 2>/dev/null; then
    echo "installing moto[server] from PyPI into $deps (the S3 storage tests use it)" >&2
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
      --target "$deps" 'moto[server]' >&2
  fi
  mkdir -p "$dir"
  if ! answers; then
    PYTHONPATH=$deps setsid nohup python3 -m moto.server -H 127.0.0.1 -p "$port" \
      >"$dir/moto.log" 2>&1 < /dev/null &
    echo $! > "$dir/moto.pid"
    for _ in $(seq 1 150); do
      answers && break
      sleep 0.1
    done
    answers || { echo "moto did not start:" >&2; tail -n 20 "$dir/moto.log" >&2; exit 1; }
  fi
  # Creating a bucket that exists already is fine.
  curl -s -o /dev/null -X PUT "http://127.0.0.1:$port/$bucket"
  echo "export TEST_S3_ENDPOINT=http://127.0.0.1:$port TEST_S3_BUCKET=$bucket"
}

stop() {
  if [ -f "$dir/moto.pid" ]; then
    kill "$(cat "$dir/moto.pid")" 2>/dev/null || true
    rm -f "$dir/moto.pid"
  fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
