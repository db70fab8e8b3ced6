#!/usr/bin/env bash
# Starts (or reuses) a throwaway Redis for the shared rate-limit tests and prints the
# `export TEST_REDIS_URL=...` line to eval. Installs the OS package `redis-server` with apt-get
# when it is missing. No persistence: never point it at data you care about.
#   usage: eval "$(scripts/test-redis.sh start)"   |   scripts/test-redis.sh stop
# Listens on 127.0.0.1:${HERALD_TEST_REDIS_PORT:-56379}; its files are in /tmp/herald-test-redis.
set -euo pipefail

port=${HERALD_TEST_REDIS_PORT:-56379}
dir=${HERALD_TEST_REDIS_DIR:-/tmp/herald-test-redis}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

start() {
  if ! command -v redis-server >/dev/null; then
    echo "redis-server not found; installing the OS package 'redis-server' with apt-get" >&2
    as_root apt-get -o Acquire::Retries=3 update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=3 install -y -qq redis-server >&2
  fi
  mkdir -p "$dir"
  if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
      --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >&2
    for _ in $(seq 1 50); do
      redis-cli -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    redis-cli -p "$port" ping >/dev/null || { tail -n 20 "$dir/redis.log" >&2; exit 1; }
  fi
  echo "export TEST_REDIS_URL=redis://127.0.0.1:$port"
}

stop() {
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
