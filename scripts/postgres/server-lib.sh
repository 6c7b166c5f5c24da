# Sourced by with-postgres.sh and with-replicas.sh: finds Debian's PostgreSQL
# server binaries (installing the package with apt-get when run as root) and
# the user the servers run as. The caller defines say and die first.
# Sets: BIN (the directory of pg_ctl, initdb, pg_basebackup), owner (the
# servers' user), run_as (the command prefix that runs a tool as that user;
# empty when not root). PostgreSQL refuses to run as root, so as root the
# servers run as the `postgres` user the package creates.

find_bin() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/pg_ctl" ] && [ -x "$dir/pg_basebackup" ] && { echo "$dir"; return 0; }
    done
    return 1
}

if ! BIN=$(find_bin); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing Debian's postgresql (server binaries only are used)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq postgresql >/dev/null
        BIN=$(find_bin) || die "postgresql installed but no pg_ctl under /usr/lib/postgresql/*/bin"
    else
        die "PostgreSQL server binaries not found; install them with: sudo apt-get install postgresql"
    fi
fi

run_as=()
owner=$(id -un)
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin postgres
    run_as=(runuser -u postgres --)
    owner=postgres
fi
