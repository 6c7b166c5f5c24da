#!/usr/bin/env bash
# Checks (and, where it can, installs) what `make test`, `make demo` and
# `make bench` need: cargo, Debian's sqlite3 shell, and a python3 whose
# sqlite3 module can load extensions (Debian's /usr/bin/python3; a pyenv
# build often lacks enable_load_extension).
#
# Installs with apt-get only when running as root (as in CI); otherwise it
# prints the command to run. Usage: scripts/check-tools.sh [extra ...], where
# an extra is a command that is also its Debian package (valgrind), or
# py:MODULE=PACKAGE for a module of $PYTHON (py:matplotlib=python3-matplotlib).
set -euo pipefail

PYTHON=${PYTHON:-/usr/bin/python3}
missing_pkgs=()

need_pkg() { # <command-to-test> <debian-package>
    if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "$1" ]; then
        missing_pkgs+=("$2")
    fi
}

if ! command -v cargo >/dev/null 2>&1; then
    echo "check-tools: cargo not found. Install Rust from https://rustup.rs (stable >= 1.89)." >&2
    exit 1
fi
# rusqlite 0.43 needs Rust 1.89.
rust_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if [ "${rust_minor:-0}" -lt 89 ] 2>/dev/null; then
    echo "check-tools: $(rustc --version) is too old: Rust >= 1.89 is needed (rustup update stable)." >&2
    exit 1
fi

need_pkg sqlite3 sqlite3
# `make ext` strips the debug info from dist/libhybrid.so.
need_pkg strip binutils
need_pkg "$PYTHON" python3
for extra in "$@"; do
    if [[ $extra == py:* ]]; then
        spec=${extra#py:}
        if ! "$PYTHON" -c "import ${spec%%=*}" 2>/dev/null; then
            missing_pkgs+=("${spec#*=}")
        fi
    else
        need_pkg "$extra" "$extra"
    fi
done

if [ ${#missing_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "check-tools: installing missing Debian packages: ${missing_pkgs[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq "${missing_pkgs[@]}" >/dev/null
    else
        echo "check-tools: missing: ${missing_pkgs[*]}" >&2
        echo "  install with: sudo apt-get install ${missing_pkgs[*]}" >&2
        exit 1
    fi
fi

if ! "$PYTHON" -c 'import sqlite3; sqlite3.connect(":memory:").enable_load_extension(True)' 2>/dev/null; then
    echo "check-tools: $PYTHON cannot load SQLite extensions (its sqlite3 module lacks" >&2
    echo "  enable_load_extension). Use Debian's python3 (apt-get install python3) or set PYTHON=..." >&2
    exit 1
fi

echo "check-tools: cargo $(cargo --version | cut -d' ' -f2), sqlite3 $(sqlite3 --version | cut -d' ' -f1), $PYTHON $("$PYTHON" -c 'import sqlite3,sys; print(sys.version.split()[0], "with SQLite", sqlite3.sqlite_version)')"
