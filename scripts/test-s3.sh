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

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Whether something answers HTTP on the port (any status will do).
answers() { curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; }

# Whether moto (with its server extras) imports from $deps itself, not from a copy that happens
# to be installed elsewhere on this machine.
installed() {
  PYTHONPATH=$deps python3 -c 'import os, sys, moto, moto.server
sys.exit(not os.path.realpath(moto.__file__).startswith(os.path.realpath(sys.argv[1]) + os.sep))' \
    "$deps" 2>/dev/null
}

start() {
  if ! installed; then
    echo "installing moto[server] from PyPI into $deps (the S3 storage tests use it)" >&2
    python3 -m pip --version >/dev/null 2>&1 || {
      as_root apt-get -o Acquire::Retries=3 update -qq >&2
      as_root env DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=3 install -y -qq python3-pip >&2
    }
    # A registry that fails once (a reset connection, a 5xx) gets two more tries.
    for attempt in 1 2 3; do
      PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
        --upgrade --target "$deps" 'moto[server]' >&2 && installed && break
      [ "$attempt" = 3 ] && { echo "could not install moto[server] from PyPI" >&2; exit 1; }
      echo "installing moto failed (attempt $attempt of 3); trying again in 5 s" >&2
      sleep 5
    done
  fi
  mkdir -p "$dir"
  if answers; then
    # A server left running by an earlier run is reused, unless it cannot create the bucket
    # (its files may be gone, e.g. a deleted clone's): then it is replaced, once, if it is ours.
    create_bucket quietly && { print_exports; return; }
    echo "the S3 server already on port $port cannot create the bucket; starting a fresh one" >&2
    stop
    answers && { echo "port $port is taken by a server this script did not start" >&2; exit 1; }
  fi
  launch
  create_bucket || exit 1
  print_exports
}

launch() {
  PYTHONPATH=$deps setsid nohup python3 -m moto.server -H 127.0.0.1 -p "$port" \
    >"$dir/moto.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/moto.pid"
  # A first start on a cold, busy machine can take a while: up to 60 s.
  for _ in $(seq 1 600); do
    answers && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  # The port is in the ephemeral range: a client connection that just closed may still hold it
  # (TIME_WAIT, up to a minute), and moto does not bind over that. Wait it out, twice at most.
  if ! answers && grep -q "Address already in use" "$dir/moto.log" && [ "${1:-0}" -lt 2 ]; then
    echo "port $port is held by a closing connection; starting moto again in 30 s" >&2
    rm -f "$dir/moto.pid"
    sleep 30
    launch $((${1:-0} + 1))
    return
  fi
  answers || {
    echo "moto did not start on port $port:" >&2
    tail -n 20 "$dir/moto.log" >&2
    kill "$pid" 2>/dev/null || true
    rm -f "$dir/moto.pid"
    exit 1
  }
}

# Creates the bucket (one that exists already is fine: 200 in us-east-1, 409 elsewhere); with
# `quietly`, fails without printing the server's answer.
create_bucket() {
  for attempt in 1 2 3; do
    code=$(curl -s -o "$dir/create-bucket.xml" -w '%{http_code}' --max-time 10 \
      -X PUT "http://127.0.0.1:$port/$bucket" || true)
    case "$code" in
      200 | 409) return 0 ;;
    esac
    if [ "$attempt" = 3 ]; then
      [ "${1:-}" = quietly ] && return 1
      echo "creating the bucket $bucket answered HTTP $code:" >&2
      cat "$dir/create-bucket.xml" >&2 2>/dev/null || true
      return 1
    fi
    sleep 2
  done
}

print_exports() {
  echo "export TEST_S3_ENDPOINT=http://127.0.0.1:$port TEST_S3_BUCKET=$bucket"
}

stop() {
  [ -f "$dir/moto.pid" ] || return 0
  pid=$(cat "$dir/moto.pid")
  # Only a moto server: the pid may be stale and reused by something else.
  if [[ "$(ps -p "$pid" -o args= 2>/dev/null || true)" == *moto.server* ]]; then
    kill "$pid"
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$dir/moto.pid"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
