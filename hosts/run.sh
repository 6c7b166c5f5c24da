#!/usr/bin/env bash
# Installs the built wheel into a fresh venv and tests every host with it:
# Python (stdlib sqlite3, apsw, pysqlite3, sqlean.py), Datasette, sqlite-utils,
# SQLAlchemy (sync and aiosqlite), the sqlite3 shell, Node (better-sqlite3)
# and Go (mattn/go-sqlite3). See hosts/README.md.
#
#   scripts/packaging/wheel.sh && hosts/run.sh
#
# Environment:
#   WHEEL          the wheel to test (default: the one in dist/)
#   HOSTS_PYTHON   the venv's interpreter (default: Debian's /usr/bin/python3)
#   HOSTS_NO_APT=1 never apt-get install (python3-venv, golang-go, the Go driver)
#   KEEP_TMP=1     keep the scratch directory
#
# Caches (pip, npm, the compiled better-sqlite3, Go's build cache) live in
# target/hosts/; the venv, the databases and the logs in a temp directory
# that is removed at the end. Every step is bounded in time.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="$ROOT/target/hosts"
HOSTS_PYTHON=${HOSTS_PYTHON:-/usr/bin/python3}
BETTER_SQLITE3=12.11.1   # 13.x needs Node 22; keep in step with hosts/node/package.json

say() { echo "hosts: $*" >&2; }
die() { echo "hosts: error: $*" >&2; exit 1; }
is_root_with_apt() { [ "$(id -u)" = 0 ] && [ "${HOSTS_NO_APT:-0}" != 1 ] && command -v apt-get >/dev/null; }
apt_install() { # packages...; updates the package lists once if the first try fails
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get install -y -qq "$@" >"$CACHE/apt.log" 2>&1 \
        || { timeout 120 apt-get update -qq >>"$CACHE/apt.log" 2>&1 && timeout 300 apt-get install -y -qq "$@" >>"$CACHE/apt.log" 2>&1; }
}

mkdir -p "$CACHE"
VERSION=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/Cargo.toml")
if [ -z "${WHEEL:-}" ]; then
    WHEEL=$(ls -t "$ROOT"/dist/sqlite_hybrid-"$VERSION"-*.whl 2>/dev/null | head -1 || true)
fi
[ -n "$WHEEL" ] && [ -f "$WHEEL" ] \
    || die "no wheel for $VERSION in dist/: build it with scripts/packaging/wheel.sh (make wheel)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sqlite-hybrid-hosts.XXXXXX")
cleanup() {
    if [ "${KEEP_TMP:-0}" = 1 ]; then say "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Python: a clean venv (no --system-site-packages) ---------------------------
[ -x "$HOSTS_PYTHON" ] || die "$HOSTS_PYTHON not found (apt-get install python3, or set HOSTS_PYTHON)"
if ! "$HOSTS_PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    if is_root_with_apt; then
        say "installing python3-venv"
        apt_install python3-venv || die "apt-get install python3-venv failed (see $CACHE/apt.log)"
    else
        die "$HOSTS_PYTHON cannot create venvs; run: sudo apt-get install python3-venv"
    fi
fi
VENV="$TMP/venv"
"$HOSTS_PYTHON" -m venv "$VENV"
export PIP_CACHE_DIR="$CACHE/pip-cache" PIP_DISABLE_PIP_VERSION_CHECK=1
pip_install() { timeout 300 "$VENV/bin/python" -m pip install -q "$@"; }
say "installing $(basename "$WHEEL") into a fresh venv ($("$HOSTS_PYTHON" --version))"
pip_install "$WHEEL" >"$TMP/pip-wheel.log" 2>&1 || { cat "$TMP/pip-wheel.log" >&2; die "pip could not install $WHEEL"; }

# The hosts' packages, one at a time: one without a wheel for this platform
# skips its host instead of failing the run.
: > "$TMP/missing.tsv"
# The web stacks (issue "zero database is locked"): FastAPI served by uvicorn
# on SQLAlchemy's async engine, and Django; lower bounds are the oldest tested.
for spec in datasette sqlite-utils "sqlalchemy[asyncio]>=1.4.24" aiosqlite apsw sqlean.py pysqlite3-binary \
            "fastapi>=0.100" "uvicorn>=0.22" "django>=4.2"; do
    case "$spec" in
        apsw|sqlean.py|pysqlite3-binary) binary=(--only-binary=:all:) ;;  # no compiling here
        *) binary=(--prefer-binary) ;;
    esac
    if ! pip_install "${binary[@]}" "$spec" >"$TMP/pip.log" 2>&1; then
        reason=$(grep -m1 -E 'ERROR|error' "$TMP/pip.log" | cut -c1-160 || true)
        say "skipping $spec: pip could not install it (${reason:-see pip output}); its host is skipped"
        name=${spec%%[\[>=<]*}
        printf '%s\t%s\n' "$name" "no installable wheel for this platform/python: ${reason:-pip failed}" >> "$TMP/missing.tsv"
    fi
done
# Django < 5.1 (no OPTIONS["transaction_mode"]) beside the venv's newer one, in
# a --target directory the Django check puts first on PYTHONPATH.
DJANGO_OLD_PATH=""
if pip_install --prefer-binary --no-deps --target "$TMP/django-old" "django>=4.2,<5.1" >"$TMP/pip.log" 2>&1; then
    DJANGO_OLD_PATH="$TMP/django-old"
else
    say "skipping the Django < 5.1 check: pip could not install it ($(grep -m1 -E 'ERROR|error' "$TMP/pip.log" | cut -c1-160))"
fi
# SQLAlchemy 1.4 the same way, for the attach()/writer()/retry checks on both majors.
SQLALCHEMY14_PATH=""
if pip_install --prefer-binary --no-deps --target "$TMP/sqlalchemy14" "sqlalchemy>=1.4.24,<2" >"$TMP/pip.log" 2>&1; then
    SQLALCHEMY14_PATH="$TMP/sqlalchemy14"
else
    say "skipping the SQLAlchemy 1.4 check: pip could not install it ($(grep -m1 -E 'ERROR|error' "$TMP/pip.log" | cut -c1-160))"
fi
HOSTS_MISSING=$("$VENV/bin/python" -c 'import json, sys; print(json.dumps(dict(l.rstrip("\n").split("\t", 1) for l in open(sys.argv[1]) if l.strip())))' "$TMP/missing.tsv")
HYBRID_LIB=$(cd "$TMP" && "$VENV/bin/python" -c 'import sqlite_hybrid; print(sqlite_hybrid.loadable_path())')
installed=$(cd "$TMP" && "$VENV/bin/python" -c 'import sqlite_hybrid; print(sqlite_hybrid.__version__)')
[ "$installed" = "$VERSION" ] || die "the installed package says $installed, Cargo.toml $VERSION"
say "library from the wheel: $HYBRID_LIB.so"

# --- Node: better-sqlite3, built from source into target/hosts/node -----------------
NODE_WORKER="" NODE_SKIP=""
if command -v node >/dev/null && command -v npm >/dev/null; then
    NODE_DIR="$CACHE/node"
    mkdir -p "$NODE_DIR"
    cp "$ROOT/hosts/node/package.json" "$ROOT/hosts/node/worker.js" "$NODE_DIR/"
    if ! (cd "$NODE_DIR" && node -e "const d = new (require('better-sqlite3'))(':memory:'); if (require('better-sqlite3/package.json').version !== '$BETTER_SQLITE3') process.exit(1)") >/dev/null 2>&1; then
        say "npm install better-sqlite3@$BETTER_SQLITE3 into $NODE_DIR (compiles it: about a minute, once)"
        # Prebuilt binaries come from outside the npm registry: build from
        # source, against the headers that came with node when it has them.
        nodedir=()
        [ -f /usr/include/node/common.gypi ] && nodedir=(npm_config_nodedir=/usr)
        if (cd "$NODE_DIR" && env "${nodedir[@]}" npm_config_build_from_source=true JOBS=2 \
                npm_config_cache="$CACHE/npm-cache" timeout 600 \
                npm install --no-package-lock --no-audit --no-fund --loglevel=error) >"$NODE_DIR/npm-install.log" 2>&1 \
           && (cd "$NODE_DIR" && node -e "new (require('better-sqlite3'))(':memory:')") >/dev/null 2>&1; then
            :
        else
            NODE_SKIP="npm install of better-sqlite3@$BETTER_SQLITE3 failed (needs make, g++ and python3 to compile; see $NODE_DIR/npm-install.log)"
        fi
    fi
    [ -z "$NODE_SKIP" ] && NODE_WORKER="[\"$(command -v node)\", \"$NODE_DIR/worker.js\"]"
else
    NODE_SKIP="node/npm not found: install Node.js 20+ with npm (Debian: apt-get install nodejs npm) to test better-sqlite3"
fi
[ -n "$NODE_SKIP" ] && say "node: $NODE_SKIP"

# --- Go: mattn/go-sqlite3 -------------------------------------------------------------
GO_WORKER="" GO_SKIP=""
MATTN=/usr/share/gocode/src/github.com/mattn/go-sqlite3
if ! command -v go >/dev/null || [ ! -d "$MATTN" ]; then
    if is_root_with_apt; then
        say "installing golang-go and golang-github-mattn-go-sqlite3-dev with apt-get"
        apt_install golang-go golang-github-mattn-go-sqlite3-dev gcc || say "apt-get failed (see $CACHE/apt.log)"
    fi
fi
if ! command -v go >/dev/null; then
    GO_SKIP="go not found: apt-get install golang-go golang-github-mattn-go-sqlite3-dev (as root, hosts/run.sh does it)"
elif ! command -v gcc >/dev/null; then
    GO_SKIP="mattn/go-sqlite3 needs cgo and a C compiler: apt-get install gcc"
else
    mkdir -p "$CACHE/go"
    export GOCACHE="$CACHE/go-cache" CGO_ENABLED=1
    if [ -d "$MATTN" ]; then
        # Debian's package: GOPATH mode, offline, linked to the system libsqlite3.
        build=(env GO111MODULE=off GOPATH=/usr/share/gocode go build -p 2 -o "$CACHE/go/hybrid-go" main.go)
        where="$ROOT/hosts/go"
    else
        # Upstream through the module proxy (bundles its own SQLite; compiles it once).
        cp "$ROOT/hosts/go/main.go" "$ROOT/hosts/go/go.mod" "$TMP/"
        build=(env GOMODCACHE="$CACHE/go-mod" GOFLAGS=-mod=mod sh -c "go mod tidy && go build -p 2 -o '$CACHE/go/hybrid-go' .")
        where="$TMP"
    fi
    if (cd "$where" && timeout 600 nice "${build[@]}") >"$CACHE/go/build.log" 2>&1; then
        GO_WORKER="[\"$CACHE/go/hybrid-go\"]"
    else
        GO_SKIP="building the Go worker failed (no Debian golang-github-mattn-go-sqlite3-dev and no module proxy?): see $CACHE/go/build.log"
    fi
fi
[ -n "$GO_SKIP" ] && say "go: $GO_SKIP"

# --- the checks --------------------------------------------------------------------------
mkdir -p "$TMP/work"
status=0
DJANGO_OLD_PATH="$DJANGO_OLD_PATH" SQLALCHEMY14_PATH="$SQLALCHEMY14_PATH" HOSTS_TMP="$TMP/work" HYBRID_VERSION="$VERSION" HYBRID_LIB="$HYBRID_LIB" HOSTS_MISSING="$HOSTS_MISSING" \
NODE_WORKER="$NODE_WORKER" NODE_SKIP="$NODE_SKIP" GO_WORKER="$GO_WORKER" GO_SKIP="$GO_SKIP" \
    timeout 900 "$VENV/bin/python" "$ROOT/hosts/python/test_hosts.py" || status=$?

# --- the write buffer, chunked imports and the log handler (pytest) ----------------------
# About 15 s. pytest is required; fastapi and httpx only for the lifespan example's
# test, which is skipped (with the reason) when they cannot be installed.
pip_install --prefer-binary pytest >"$TMP/pip-pytest.log" 2>&1 \
    || { cat "$TMP/pip-pytest.log" >&2; die "pip could not install pytest (needed by hosts/python/test_buffer.py)"; }
pip_install --prefer-binary fastapi httpx >"$TMP/pip-fastapi.log" 2>&1 \
    || say "fastapi/httpx could not be installed: the FastAPI lifespan example's test is skipped (see $TMP/pip-fastapi.log)"
say "python: write buffer, chunked imports, log handler (hosts/python/test_buffer.py)"
(cd "$TMP/work" && timeout 300 "$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider \
    "$ROOT/hosts/python/test_buffer.py") || status=$?
exit $status
