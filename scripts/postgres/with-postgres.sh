#!/usr/bin/env bash
# Runs a command with a throw-away PostgreSQL server: initdb into a fresh
# temporary directory as an unprivileged user, listening only on a Unix
# socket in that directory, stopped and removed afterwards (also on error or
# Ctrl-C). The command sees HYBRID_PG_URL, a postgres:// URL of an empty
# database, and HYBRID_PG_ADMIN_URL for the same server's `postgres`
# database (to create more databases).
#
# Usage: scripts/postgres/with-postgres.sh COMMAND [ARG...]
# Needs Debian's postgresql package (installed with apt-get when run as root,
# otherwise it says what to install). As root the server runs as the
# `postgres` user the package creates (PostgreSQL refuses to run as root).
set -euo pipefail

say() { echo "with-postgres: $*" >&2; }
die() { say "$*"; exit 1; }
[ $# -gt 0 ] || die "usage: $0 COMMAND [ARG...]"

. "$(dirname "${BASH_SOURCE[0]}")/server-lib.sh"

DIR=$(mktemp -d /tmp/hybrid-pg.XXXXXX)
chmod 755 "$DIR"
chown "$owner" "$DIR"
LOG="$DIR/server.log"
# The server's tools run in $DIR: as the postgres user they cannot enter
# a checkout under a private directory, and would say so on every call.
as_owner() { (cd "$DIR" && "${run_as[@]}" "$@"); }
cleanup() {
    local status=$?
    if [ -f "$DIR/data/postmaster.pid" ]; then
        as_owner "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_owner "$BIN/initdb" -D "$DIR/data" -U hybrid --auth=trust --no-instructions \
    -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
# No TCP at all: only the socket in $DIR, which only this run knows.
as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$LOG" -w -t 60 start \
    -o "-c listen_addresses='' -k $DIR -c max_connections=200" >/dev/null \
    || { cat "$LOG" >&2; die "the server did not start"; }
as_owner "$BIN/createdb" -h "$DIR" -U hybrid hybrid_test

socket=$(printf '%s' "$DIR" | sed 's|/|%2F|g')
export HYBRID_PG_URL="postgresql://hybrid@$socket/hybrid_test"
export HYBRID_PG_ADMIN_URL="postgresql://hybrid@$socket/postgres"
say "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on $DIR (HYBRID_PG_URL=$HYBRID_PG_URL)"
"$@"
