#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the template store tests.
#
#   export ROI_RELAY_TEST_POSTGRES_URL="$(.ci/postgres.sh)"     # install if needed, start
#   .ci/postgres.sh stop                                        # stop and delete it
#
# Installs Debian's postgresql package when no server binaries are present, creates a cluster
# in $ROI_RELAY_PG_DIR (default /tmp/roi-relay-pg) listening on 127.0.0.1:$ROI_RELAY_PG_PORT
# (default 55432) with trust authentication, and prints the SQLAlchemy URL on stdout (all
# other output goes to stderr). Starting again while it runs just prints the URL.
set -euo pipefail

PGDIR="${ROI_RELAY_PG_DIR:-/tmp/roi-relay-pg}"
PORT="${ROI_RELAY_PG_PORT:-55432}"
URL="postgresql+psycopg://postgres@127.0.0.1:${PORT}/postgres"

log() { echo "postgres.sh: $*" >&2; }

server_bin() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    [[ -n "$dir" && -x "$dir/initdb" ]] && echo "$dir"
}

# PostgreSQL refuses to run as root: run its tools as the postgres user when we are root.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

BIN="$(server_bin || true)"

if [[ "${1:-start}" == "stop" ]]; then
    if [[ -n "$BIN" && -f "$PGDIR/PG_VERSION" ]]; then
        as_owner "$BIN/pg_ctl" -D "$PGDIR" -m fast stop >&2 || true
    fi
    rm -rf "$PGDIR"
    exit 0
fi

if [[ -z "$BIN" ]]; then
    log "installing postgresql (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
    BIN="$(server_bin)"
fi

if [[ ! -f "$PGDIR/PG_VERSION" ]]; then
    mkdir -p "$PGDIR"
    [[ "$(id -u)" == 0 ]] && chown postgres:postgres "$PGDIR"
    chmod 700 "$PGDIR"
    as_owner "$BIN/initdb" -D "$PGDIR" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >&2
fi

if ! as_owner "$BIN/pg_ctl" -D "$PGDIR" status >/dev/null 2>&1; then
    as_owner "$BIN/pg_ctl" -D "$PGDIR" -w -t 60 -l "$PGDIR/server.log" \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PGDIR -c fsync=off" start >&2
fi

as_owner "$BIN/pg_isready" -h 127.0.0.1 -p "$PORT" -t 30 >&2
echo "$URL"
