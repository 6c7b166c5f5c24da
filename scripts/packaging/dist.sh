#!/usr/bin/env bash
# Builds the release archive for this platform, like sqlean's release
# archives: the stripped library (glibc 2.17 baseline, from lib.sh), the
# README with the docs/ pages it links to, the CHANGELOG and the LICENSE, in
# one folder.
#
#   dist/sqlite-hybrid-<version>-linux-x86_64.tar.gz
#   dist/sqlite-hybrid-<version>-linux-x86_64.tar.gz.sha256
#
#   tar xzf sqlite-hybrid-0.1.0-linux-x86_64.tar.gz
#   sqlite3 app.db '.load ./sqlite-hybrid-0.1.0-linux-x86_64/libhybrid' 'select hybrid_version()'
#
# The archive is reproducible: sorted names, owner 0, mtimes of the last
# commit, gzip without a timestamp.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PKG="$ROOT/target/packaging"

die() { echo "dist: error: $*" >&2; exit 1; }

LIB=$("$ROOT/scripts/packaging/lib.sh")
VERSION=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/Cargo.toml")
[ -n "$VERSION" ] || die "no version under [workspace.package] in Cargo.toml"
case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) PLATFORM=linux-x86_64 ;;   # lib.sh builds x86_64-unknown-linux-gnu.2.17
    *) die "lib.sh builds linux-x86_64 only; this is $(uname -s)-$(uname -m)" ;;
esac

NAME="sqlite-hybrid-$VERSION-$PLATFORM"
STAGE="$PKG/tarball/$NAME"
rm -rf "$PKG/tarball"
mkdir -p "$STAGE"
install -m 0755 "$LIB" "$STAGE/libhybrid.so"
install -m 0644 "$ROOT/README.md" "$ROOT/CHANGELOG.md" "$ROOT/LICENSE" "$STAGE/"
install -d "$STAGE/docs/bench"
install -m 0644 "$ROOT"/docs/*.md "$STAGE/docs/"
install -m 0644 "$ROOT/docs/bench/contention.png" "$STAGE/docs/bench/"

EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)
mkdir -p "$ROOT/dist"
OUT="$ROOT/dist/$NAME.tar.gz"
tar -C "$PKG/tarball" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" \
    --format=gnu -cf - "$NAME" | gzip -9n > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
(cd "$ROOT/dist" && sha256sum "$NAME.tar.gz" > "$NAME.tar.gz.sha256")

# The archive's library must load as the README says.
CHECK="$PKG/tarball-check"
rm -rf "$CHECK" && mkdir -p "$CHECK"
tar -C "$CHECK" -xzf "$OUT"
if command -v sqlite3 >/dev/null; then
    got=$(cd "$CHECK" && sqlite3 :memory: ".load ./$NAME/libhybrid" 'SELECT hybrid_version();')
    [ "$got" = "$VERSION" ] || die "the archive's library says '$got', expected $VERSION"
fi
rm -rf "$CHECK"
echo "dist: dist/$NAME.tar.gz ($(stat -c %s "$OUT") bytes): $(tar -tzf "$OUT" | tr '\n' ' ')" >&2
