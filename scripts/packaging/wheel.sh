#!/usr/bin/env bash
# Builds the Python wheel of sqlite-hybrid into dist/:
#
#   dist/sqlite_hybrid-<version>-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
#
# distribution `sqlite-hybrid`, import package `sqlite_hybrid` (python/), with
# the stripped library built for glibc 2.17 by lib.sh as package data. The
# tag is py3-none (the package is pure Python; the library is not a Python
# extension module, so any CPython 3.8+ or PyPy can use it) and
# manylinux2014 / manylinux_2_17 (checked by lib.sh from the symbol versions,
# and here by `auditwheel show`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PKG="$ROOT/target/packaging"
TAG=py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64
PLATFORM=manylinux_2_17_x86_64

say() { echo "wheel: $*" >&2; }
die() { echo "wheel: error: $*" >&2; exit 1; }

LIB=$("$ROOT/scripts/packaging/lib.sh")
PY="$PKG/venv/bin/python"
VERSION=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/Cargo.toml")
[ -n "$VERSION" ] || die "no version under [workspace.package] in Cargo.toml"

# Stage python/ + LICENSE + the library under target/ (python/ stays clean).
SRC="$PKG/wheel-src"
rm -rf "$SRC" "$PKG/wheel-out"
mkdir -p "$SRC/sqlite_hybrid"
cp "$ROOT/python/pyproject.toml" "$ROOT/python/hatch_build.py" "$ROOT/python/README.md" "$SRC/"
cp "$ROOT/LICENSE" "$SRC/LICENSE"
cp "$ROOT"/python/sqlite_hybrid/*.py "$SRC/sqlite_hybrid/"
mkdir -p "$SRC/sqlite_hybrid/django"
cp "$ROOT"/python/sqlite_hybrid/django/*.py "$SRC/sqlite_hybrid/django/"
install -m 0755 "$LIB" "$SRC/sqlite_hybrid/libhybrid.so"

say "building sqlite-hybrid $VERSION ($TAG)"
SQLITE_HYBRID_VERSION="$VERSION" SQLITE_HYBRID_WHEEL_TAG="$TAG" SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s) \
    "$PY" -m build --wheel --no-isolation --outdir "$PKG/wheel-out" "$SRC" >"$PKG/wheel-build.log" 2>&1 \
    || { cat "$PKG/wheel-build.log" >&2; die "the wheel build failed"; }
WHEEL_NAME="sqlite_hybrid-$VERSION-$TAG.whl"
[ -f "$PKG/wheel-out/$WHEEL_NAME" ] || { ls "$PKG/wheel-out" >&2; die "expected $WHEEL_NAME"; }

# Check what is inside: the library, the plugins' entry points, platlib.
"$PY" - "$PKG/wheel-out/$WHEEL_NAME" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
z = zipfile.ZipFile(sys.argv[1])
def member(suffix):
    found = [n for n in names if n.endswith(suffix)]
    assert len(found) == 1, (suffix, names)
    return z.read(found[0]).decode()
assert "sqlite_hybrid/libhybrid.so" in names, names
for module in ("__init__", "_errors", "_retry", "datasette_plugin", "sqlite_utils_plugin", "sqlalchemy",
               "django/__init__", "django/apps"):
    assert f"sqlite_hybrid/{module}.py" in names, (module, names)
wheel = member(".dist-info/WHEEL")
assert "Root-Is-Purelib: false" in wheel, wheel
entry_points = member(".dist-info/entry_points.txt")
assert "[datasette]" in entry_points and "[sqlite_utils]" in entry_points, entry_points
assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
EOF

# auditwheel: the platform tag it computes must be ours.
AUDIT=$("$PKG/venv/bin/auditwheel" show "$PKG/wheel-out/$WHEEL_NAME" 2>&1) || { echo "$AUDIT" >&2; die "auditwheel show failed"; }
echo "$AUDIT" > "$PKG/auditwheel-show.txt"
echo "$AUDIT" | tr '\n' ' ' | grep -q "consistent with the following platform tag: \"$PLATFORM\"" \
    || { echo "$AUDIT" >&2; die "auditwheel does not find the wheel consistent with $PLATFORM"; }

mkdir -p "$ROOT/dist"
rm -f "$ROOT"/dist/sqlite_hybrid-*.whl
cp "$PKG/wheel-out/$WHEEL_NAME" "$ROOT/dist/"
say "$(echo "$AUDIT" | tr '\n' ' ' | sed 's/  */ /g')"
say "dist/$WHEEL_NAME ($(stat -c %s "$ROOT/dist/$WHEEL_NAME") bytes)"
