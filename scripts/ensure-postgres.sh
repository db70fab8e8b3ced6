#!/usr/bin/env bash
# Makes sure the PostgreSQL server binaries that `herald serve` uses for its private cluster
# (when DATABASE_URL is not set; see api/src/embedded_pg.rs) are installed. Idempotent: when
# initdb and pg_ctl already exist under /usr/lib/postgresql/*/bin it does nothing.
# Debian/Ubuntu only (apt-get); uses sudo when not run as root.
set -euo pipefail

have_server() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]] && return 0
    done
    return 1
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

# herald switches to an unprivileged user with setpriv (util-linux) when it runs as root.
if [[ $(id -u) -eq 0 ]] && ! command -v setpriv >/dev/null; then
    echo "setpriv not found; installing the OS package 'util-linux' with apt-get"
    apt-get -o Acquire::Retries=3 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=3 install -y -qq util-linux
fi

have_server && exit 0

echo "PostgreSQL server binaries not found; installing the OS package 'postgresql' with apt-get"
if ! command -v apt-get >/dev/null; then
    echo "apt-get not found: install the PostgreSQL server (initdb, pg_ctl) yourself, or set DATABASE_URL" >&2
    exit 1
fi
as_root apt-get -o Acquire::Retries=3 update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=3 install -y -qq postgresql
if ! have_server; then
    echo "the 'postgresql' package is installed but no initdb/pg_ctl was found under /usr/lib/postgresql/*/bin" >&2
    exit 1
fi
