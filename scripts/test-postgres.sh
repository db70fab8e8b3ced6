#!/usr/bin/env bash
# Starts (or reuses) a throwaway PostgreSQL cluster for the test suite and prints the
# `export TEST_DATABASE_URL=...` line to eval. Tuned for speed, not durability
# (fsync off): never point it at data you care about.
#   usage: eval "$(scripts/test-postgres.sh start)"   |   scripts/test-postgres.sh stop
# The cluster lives in ${HERALD_TEST_PG_DIR:-/tmp/herald-test-pg} and listens on 127.0.0.1:
# ${HERALD_TEST_PG_PORT:-55432}. PostgreSQL refuses to run as root, so as root it runs as the
# `postgres` system user that the OS package creates.
set -euo pipefail

dir=${HERALD_TEST_PG_DIR:-/tmp/herald-test-pg}
port=${HERALD_TEST_PG_PORT:-55432}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[ -n "$bindir" ] || { echo "PostgreSQL server binaries not found; run scripts/ensure-postgres.sh" >&2; exit 1; }

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  if [ ! -s "$dir/PG_VERSION" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    chmod 700 "$dir"
    as_pg "$bindir/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >"$dir.initdb.log" 2>&1 \
      || { cat "$dir.initdb.log" >&2; exit 1; }
  fi
  # A cluster started before pg_stat_statements was loaded here is restarted with it (the
  # options it runs with are in postmaster.opts, read without a connection).
  if as_pg "$bindir/pg_ctl" -D "$dir" status >/dev/null 2>&1 \
     && ! grep -q pg_stat_statements "$dir/postmaster.opts" 2>/dev/null; then
    as_pg "$bindir/pg_ctl" -D "$dir" -m fast -w stop >&2
  fi
  if ! as_pg "$bindir/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    # pg_stat_statements lets a test see which statement a route sent (tests/it/support/sent.rs).
    as_pg "$bindir/pg_ctl" -D "$dir" -w -t 60 -l "$dir/server.log" \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
          -c full_page_writes=off -c max_connections=400 -c shared_buffers=256MB \
          -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.max=50000" start >&2 \
      || { tail -n 30 "$dir/server.log" >&2; exit 1; }
  fi
  prune
  echo "export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres"
}

# Every test creates a database of its own and leaves it for inspection; the ones left by
# earlier runs are dropped here (any still in use is kept), with their statements' counts in
# pg_stat_statements (which outlive a database), so neither the cluster nor the counts grow.
prune() {
  local psql=("$bindir/psql" -X -h 127.0.0.1 -p "$port" -U postgres -d postgres -qtA)
  for db in $("${psql[@]}" -c "SELECT datname FROM pg_database WHERE datname LIKE 'herald\_test\_%'"); do
    "${psql[@]}" -c "DROP DATABASE \"$db\"" >/dev/null 2>&1 || true
  done
  "${psql[@]}" -c "SET client_min_messages = warning" \
    -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" \
    -c "SELECT pg_stat_statements_reset(0, s.dbid, 0) FROM (SELECT DISTINCT dbid FROM pg_stat_statements \
          WHERE dbid NOT IN (SELECT oid FROM pg_database)) s" >/dev/null
}

stop() {
  [ -d "$dir" ] && as_pg "$bindir/pg_ctl" -D "$dir" -m fast stop >&2 || true
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
