#!/usr/bin/env bash
# Builds the release library for distribution: the loadable extension for an
# old glibc baseline (manylinux2014, glibc 2.17) with cargo zigbuild, stripped
# and checked. Used by wheel.sh and dist.sh; prints the library's path last.
#
#   scripts/packaging/lib.sh            -> target/packaging/lib/libhybrid.so
#
# What it needs, installed on first use (all under target/packaging/, which
# git ignores; nothing else on the machine changes):
#   * a venv with zig (PyPI's `ziglang`), auditwheel, hatchling and build,
#     made with $PACKAGING_PYTHON (default: Debian's /usr/bin/python3, else python3);
#   * cargo-zigbuild (`cargo install --locked`), unless one is on PATH.
# Environment: JOBS (default 2) caps cargo's parallel jobs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PKG="$ROOT/target/packaging"
VENV="$PKG/venv"
TRIPLE=x86_64-unknown-linux-gnu
GLIBC_BASELINE=2.17
OUT="$PKG/lib/libhybrid.so"
JOBS=${JOBS:-2}

# Tested versions (2026-11-25); bump together and rerun hosts/run.sh.
ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1
PY_TOOLS=("ziglang==$ZIGLANG_VERSION" "auditwheel==6.8.2" "hatchling==1.33.0" "build==1.6.1")

say() { echo "packaging: $*" >&2; }
die() { echo "packaging: error: $*" >&2; exit 1; }

for tool in cargo strip objdump readelf; do
    command -v "$tool" >/dev/null || die "$tool not found (cargo: https://rustup.rs; the others: apt-get install binutils)"
done

# --- the build venv (zig, auditwheel, the wheel builder) -------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import ziglang, auditwheel, hatchling, build' 2>/dev/null; then
    PACKAGING_PYTHON=${PACKAGING_PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || command -v python3 )}
    say "creating $VENV with $PACKAGING_PYTHON"
    if ! "$PACKAGING_PYTHON" -m venv --clear "$VENV" >/dev/null 2>&1; then
        die "$PACKAGING_PYTHON cannot create a venv; on Debian: apt-get install python3-venv"
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_TOOLS[@]}"
fi
export PATH="$VENV/bin:$PATH"   # cargo-zigbuild runs `python3 -m ziglang` when no zig is on PATH
"$VENV/bin/python" -m ziglang version >/dev/null || die "zig from the ziglang package does not run"

# --- cargo-zigbuild ------------------------------------------------------------
if ! command -v cargo-zigbuild >/dev/null; then
    export PATH="$PKG/cargo/bin:$PATH"
    if ! command -v cargo-zigbuild >/dev/null; then
        say "installing cargo-zigbuild $CARGO_ZIGBUILD_VERSION into $PKG/cargo (a few minutes, once)"
        CARGO_TARGET_DIR="$PKG/cargo-install" nice cargo install -q --locked -j "$JOBS" \
            --root "$PKG/cargo" "cargo-zigbuild@$CARGO_ZIGBUILD_VERSION" \
            || die "cargo install cargo-zigbuild failed"
        rm -rf "$PKG/cargo-install"
        command -v cargo-zigbuild >/dev/null || die "cargo-zigbuild not on PATH after the install"
    fi
fi

# --- the build ---------------------------------------------------------------
# * Its own target dir: target/release/libhybrid.so (make ext, tests) stays
#   untouched, and a concurrent `cargo build` in the workspace is not blocked.
# * loadable/Cargo.toml exactly as `make ext` builds it (rusqlite 0.39, whose
#   bindings load into SQLite 3.34.1 and later; its own lockfile).
# * SQLITE3_NO_PKG_CONFIG: in loadable mode libsqlite3-sys links nothing, but
#   when pkg-config finds libsqlite3-dev it still emits `-lsqlite3`, which
#   zig's linker cannot resolve (it does not search /usr/lib) and which the
#   library must not need anyway.
# * Caches of zig and cargo-zigbuild under target/packaging too.
export CARGO_TARGET_DIR="$PKG/cargo-target"
export ZIG_GLOBAL_CACHE_DIR="$PKG/zig-cache" ZIG_LOCAL_CACHE_DIR="$PKG/zig-cache"
export CARGO_ZIGBUILD_CACHE_DIR="$PKG/zigbuild-cache"
export SQLITE3_NO_PKG_CONFIG=1
say "cargo zigbuild --manifest-path loadable/Cargo.toml --release --target $TRIPLE.$GLIBC_BASELINE"
(cd "$ROOT" && nice cargo zigbuild -q -j "$JOBS" --manifest-path loadable/Cargo.toml --release \
    --target "$TRIPLE.$GLIBC_BASELINE")
BUILT="$CARGO_TARGET_DIR/$TRIPLE/release/libhybrid.so"
[ -f "$BUILT" ] || die "no $BUILT after the build"

# --- strip (debug info and .symtab; .dynsym, the exported symbols, stays) ---
mkdir -p "$(dirname "$OUT")"
strip --strip-all -o "$OUT.tmp" "$BUILT"
mv "$OUT.tmp" "$OUT"

# --- checks ----------------------------------------------------------------------
if readelf -S "$OUT" | grep -qE '\.debug_|\.symtab'; then
    die "$OUT still has debug sections or a symbol table after strip"
fi
objdump -T "$OUT" | grep -qE '\sDF \.text\s.*\ssqlite3_hybrid_init$' \
    || die "$OUT does not export sqlite3_hybrid_init"
if objdump -T "$OUT" | grep -q 'GLIBC_PRIVATE'; then
    die "$OUT needs GLIBC_PRIVATE symbols"
fi
max_glibc=$(objdump -T "$OUT" | grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' | sed 's/^GLIBC_//' | sort -uV | tail -1)
[ -n "$max_glibc" ] || die "no GLIBC symbol versions found in $OUT (not a glibc build?)"
if [ "$(printf '%s\n%s\n' "$max_glibc" "$GLIBC_BASELINE" | sort -V | tail -1)" != "$GLIBC_BASELINE" ]; then
    objdump -T "$OUT" | grep -E "GLIBC_$max_glibc" >&2
    die "$OUT needs GLIBC_$max_glibc, above the $GLIBC_BASELINE baseline"
fi
# Only libraries every manylinux2014 system has (auditwheel checks it again).
needed=$(readelf -d "$OUT" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
for lib in $needed; do
    case "$lib" in
        libc.so.6|libm.so.6|libdl.so.2|libpthread.so.0|librt.so.1|libgcc_s.so.1|ld-linux-x86-64.so.2) ;;
        *) die "$OUT needs $lib, which is not part of the manylinux2014 baseline" ;;
    esac
done
# It must load: the sqlite3 shell if there is one (Debian's 3.40.1 here).
version=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/Cargo.toml")
if command -v sqlite3 >/dev/null; then
    got=$(cd "$(dirname "$OUT")" && sqlite3 :memory: '.load ./libhybrid' 'SELECT hybrid_version();' 2>&1) \
        || die "sqlite3 $(sqlite3 --version | cut -d' ' -f1) cannot load $OUT: $got"
    [ "$got" = "$version" ] || die "hybrid_version() is '$got', Cargo.toml says '$version'"
    loaded_into="sqlite3 $(sqlite3 --version | cut -d' ' -f1)"
else
    loaded_into="(no sqlite3 shell to try)"
fi

size=$(stat -c %s "$OUT")
{
    echo "library: $OUT"
    echo "size: $size bytes (unstripped $(stat -c %s "$BUILT"))"
    echo "needed: $needed"
    echo "highest GLIBC symbol version: GLIBC_$max_glibc (baseline $GLIBC_BASELINE)"
    echo "exports: $(objdump -T "$OUT" | awk '$2 == "g" && $4 != "*UND*" {print $NF}' | tr '\n' ' ')"
    echo "loads into: $loaded_into, hybrid_version() = $version"
} | tee "$PKG/lib/facts.txt" >&2
echo "$OUT"
