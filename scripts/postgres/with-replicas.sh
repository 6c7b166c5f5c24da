#!/usr/bin/env bash
# Runs a command with a throw-away PostgreSQL primary and one streaming
# standby (N with --standbys N): initdb into a fresh temporary directory as an
# unprivileged user, pg_basebackup -R -X stream -C -S standbyK for standby K
# (a physical replication slot, so the primary keeps the WAL it needs), asynchronous
# replication, each server listening only on a Unix socket in its own
# directory, both stopped and everything removed afterwards (also on error
# or Ctrl-C). The command sees:
#   HYBRID_PG_URL          the primary, an empty database
#   HYBRID_PG_ADMIN_URL    the primary's `postgres` database (to create more)
#   HYBRID_PG_STANDBY_URL  the same database on the (first) standby (read-only)
#   HYBRID_PG_STANDBY_URLS every standby's, separated by spaces
#   HYBRID_PG_MULTI_URL    the primary and every standby, as one multi-host
#                          URL with target_session_attrs=read-write (the
#                          primary, whichever it is)
#   HYBRID_PG_PRIMARY_PID_FILE  the primary's postmaster.pid (to kill it)
#   HYBRID_PG_PROMOTE      a command that promotes the first standby (pg_ctl
#                          promote -w, as the servers' user)
#   HYBRID_PG_SYNC         1 with --sync, else 0
#
# With --sync the primary waits for the standby at every commit
# (synchronous_standby_names = '*': the first standby connected; set on the primary after cloning, so the
# standby does not inherit it and a promoted standby does not wait for a
# standby it does not have). A command may kill the primary and promote the
# standby; the old primary is never started again.
#
# Usage: scripts/postgres/with-replicas.sh [--sync] [--standbys N] COMMAND [ARG...]
# (N from 1 to 8; standby K listens on port 5432 + K.)
# Needs Debian's postgresql package (installed with apt-get when run as root,
# otherwise it says what to install). As root the servers run as the
# `postgres` user the package creates (PostgreSQL refuses to run as root).
# Servers are stopped with pg_ctl, never by process group (their children
# call setsid()).
set -euo pipefail

say() { echo "with-replicas: $*" >&2; }
die() { say "$*"; exit 1; }
SYNC=0
STANDBYS=1
while [ $# -gt 0 ]; do
    case "$1" in
        --sync) SYNC=1; shift ;;
        --standbys)
            [[ "${2:-}" =~ ^[1-8]$ ]] || die "--standbys takes a number from 1 to 8"
            STANDBYS=$2; shift 2 ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || die "usage: $0 [--sync] [--standbys N] COMMAND [ARG...]"
# Standby 1 is in $DIR/standby (port 5433), standby K in $DIR/standbyK.
standby_nodes=(standby)
for k in $(seq 2 "$STANDBYS"); do standby_nodes+=("standby$k"); done

. "$(dirname "${BASH_SOURCE[0]}")/server-lib.sh"

DIR=$(mktemp -d /tmp/hybrid-pgr.XXXXXX)
chmod 755 "$DIR"
for node in primary "${standby_nodes[@]}"; do
    mkdir -p "$DIR/$node"
    chown "$owner" "$DIR/$node"
    chmod 700 "$DIR/$node"
done
chown "$owner" "$DIR"
cleanup() {
    local status=$?
    local node
    # The standbys first: stopping the primary first would leave them retrying.
    for node in "${standby_nodes[@]}" primary; do
        if [ -f "$DIR/$node/data/postmaster.pid" ]; then
            "${run_as[@]}" "$BIN/pg_ctl" -D "$DIR/$node/data" -m immediate -w stop \
                >/dev/null 2>&1 || true
        fi
    done
    rm -rf "$DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Each server: only the socket in its own directory, no TCP.
start() { # node port
    "${run_as[@]}" "$BIN/pg_ctl" -D "$DIR/$1/data" -l "$DIR/$1/server.log" -w -t 60 start \
        -o "-c listen_addresses='' -k $DIR/$1 -p $2 -c max_connections=200" >/dev/null \
        || { cat "$DIR/$1/server.log" >&2; die "the $1 did not start"; }
}

"${run_as[@]}" "$BIN/initdb" -D "$DIR/primary/data" -U hybrid --auth=trust --no-instructions \
    -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
start primary 5432
# initdb's pg_hba.conf trusts local replication connections; -C -S makes a
# slot so the primary never recycles WAL the standby still needs.
k=0
for node in "${standby_nodes[@]}"; do
    k=$((k + 1))
    "${run_as[@]}" "$BIN/pg_basebackup" -h "$DIR/primary" -p 5432 -U hybrid \
        -D "$DIR/$node/data" -R -X stream -C -S "standby$k" >"$DIR/basebackup.log" 2>&1 \
        || { cat "$DIR/basebackup.log" >&2; die "pg_basebackup failed"; }
    start "$node" $((5432 + k))
done
"${run_as[@]}" "$BIN/createdb" -h "$DIR/primary" -p 5432 -U hybrid hybrid_test

if [ "$SYNC" = 1 ]; then
    "$BIN/psql" -XAtq -h "$DIR/primary" -p 5432 -U hybrid postgres \
        -c "ALTER SYSTEM SET synchronous_standby_names = '*'" -c 'SELECT pg_reload_conf()' \
        >/dev/null
    for _ in $(seq 1 600); do
        [ "$("$BIN/psql" -XAtq -h "$DIR/primary" -p 5432 -U hybrid postgres \
            -c "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")" = 1 ] && break
        sleep 0.1
    done
fi
# Promotion, as the servers' user (pg_ctl refuses to run as root).
cat >"$DIR/promote" <<PROMOTE
#!/bin/sh
exec ${run_as[*]} "$BIN/pg_ctl" promote -w -t 60 -D "$DIR/standby/data"
PROMOTE
chmod 755 "$DIR/promote"

primary=$(printf '%s' "$DIR/primary" | sed 's|/|%2F|g')
standby_urls=()
hosts="$primary:5432"
k=0
for node in "${standby_nodes[@]}"; do
    k=$((k + 1))
    socket=$(printf '%s' "$DIR/$node" | sed 's|/|%2F|g')
    standby_urls+=("postgresql://hybrid@$socket:$((5432 + k))/hybrid_test")
    hosts="$hosts,$socket:$((5432 + k))"
done
export HYBRID_PG_URL="postgresql://hybrid@$primary:5432/hybrid_test"
export HYBRID_PG_ADMIN_URL="postgresql://hybrid@$primary:5432/postgres"
export HYBRID_PG_STANDBY_URL="${standby_urls[0]}"
export HYBRID_PG_STANDBY_URLS="${standby_urls[*]}"
export HYBRID_PG_MULTI_URL="postgresql://hybrid@$hosts/hybrid_test?target_session_attrs=read-write"
export HYBRID_PG_PRIMARY_PID_FILE="$DIR/primary/data/postmaster.pid"
export HYBRID_PG_PROMOTE="$DIR/promote"
export HYBRID_PG_SYNC="$SYNC"
# A standby has the new database once it replayed its creation.
for url in "${standby_urls[@]}"; do
    for _ in $(seq 1 600); do
        "$BIN/psql" -XAtq "$url" -c 'SELECT 1' >/dev/null 2>&1 && break
        sleep 0.1
    done
    state=$("$BIN/psql" -XAtq "$url" -c 'SELECT pg_is_in_recovery()' 2>&1) \
        || die "a standby has no hybrid_test database after 60 s: $state"
    [ "$state" = t ] || die "a standby is not in recovery: $state"
done
mode=asynchronous; [ "$SYNC" = 1 ] && mode=synchronous
say "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}'): primary and $STANDBYS $mode" \
    "streaming standby(s) on $DIR (HYBRID_PG_URL=$HYBRID_PG_URL HYBRID_PG_STANDBY_URLS=$HYBRID_PG_STANDBY_URLS)"
"$@"
