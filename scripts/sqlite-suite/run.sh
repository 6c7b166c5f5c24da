#!/usr/bin/env bash
# run.sh - SQLite's own TCL test suite (Debian's sqlite3 source package) run
# with the hybrid extension loaded into every connection, compared with
# stock SQLite. `make sqlite-suite` runs it; README.md beside this file says
# how to read the result.
#
# Environment:
#   HYBRID_EXT                absolute path of the loadable extension
#                             (required unless SQLITE_SUITE_STOCK=1)
#   SQLITE_SUITE_FILES        test files to run, names or globs without
#                             ".test" (default: the list in DEFAULT_FILES)
#   SQLITE_SUITE_STOCK=1      run only stock SQLite (timings, environment check)
#   SQLITE_SUITE_STOCK=busy   run only stock SQLite with a busy handler on every
#                             connection (to find tests that expect SQLITE_BUSY
#                             at once, for accepted.txt)
#   SQLITE_SUITE_DIR          cache: source, testfixture build, logs
#                             (default: <repo>/target/sqlite-suite)
#   SQLITE_SUITE_TIMEOUT_MS   busy timeout of every connection in the
#                             extension run and in the stock+busy-handler
#                             run (default 200)
#   SQLITE_SUITE_FILE_TIMEOUT seconds one test file may run (default 600)
#   SQLITE_SUITE_JOBS         test files run at once (default 2, at most 2)
#   SQLITE_SUITE_USER         unprivileged user for the tests when run as
#                             root (default sqlitesuite; created if missing)
#   SQLITE_SUITE_KEEP=1       keep the scratch directory (test databases)
#   SQLITE_SUITE_ACCEPTED     the list of accepted differences
#                             (default: accepted.txt beside this script)
#
# Exit status: 0 every file matched stock (or differed only as listed in
# accepted.txt and reproduced by stock SQLite with a busy handler); 1 some
# file differed, aborted, crashed or timed out; 2 setup failed (missing
# packages when not root, extension missing, build failed).

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${SQLITE_SUITE_DIR:-$REPO/target/sqlite-suite}
TIMEOUT_MS=${SQLITE_SUITE_TIMEOUT_MS:-200}
FILE_TIMEOUT=${SQLITE_SUITE_FILE_TIMEOUT:-600}
JOBS=${SQLITE_SUITE_JOBS:-2}
STOCK_ONLY=${SQLITE_SUITE_STOCK:-0}
SUITE_USER=${SQLITE_SUITE_USER:-sqlitesuite}
KEEP=${SQLITE_SUITE_KEEP:-0}
ACCEPTED=${SQLITE_SUITE_ACCEPTED:-$HERE/accepted.txt}
BUILD_OPTS="-DSQLITE_ENABLE_SNAPSHOT=1"
DEFAULT_FILES="busy busy2 lock* wal* walcrash* walro* walprotocol* walvfs walnoshm snapshot*
  shared* pager1 pager2 pager3 journal1 journal2 journal3 incrvacuum walfault pagerfault*
  superlock attach* backup* savepoint* trans* exclusive* tempdb* mmap* vacuum* close*
  capi3* misuse* func func2 func3 vtab1 ioerr* crash* memdb* nolock* unixexcl* sync*
  fallocate* zerodamage* oserror* e_wal* e_vacuum* hook* atomic* autovacuum* rollback*
  schema* pragma* uri* e_uri symlink* openv2 filectrl 8_3_names
  hybrid_*"
# Our own test files (scripts/sqlite-suite/tests/*.test) join SQLite's in the
# scratch copy of test/ and are selected like them.
OWN_TESTS=$HERE/tests

die() { echo "sqlite-suite: $*" >&2; exit 2; }
say() { echo "sqlite-suite: $*"; }
is_root() { [[ $(id -u) -eq 0 ]]; }

[[ $JOBS =~ ^[12]$ ]] || die "SQLITE_SUITE_JOBS must be 1 or 2 (the machine has 2 cores), got '$JOBS'"
[[ $TIMEOUT_MS =~ ^[0-9]+$ ]] || die "SQLITE_SUITE_TIMEOUT_MS must be whole milliseconds, got '$TIMEOUT_MS'"
[[ $FILE_TIMEOUT =~ ^[0-9]+$ ]] || die "SQLITE_SUITE_FILE_TIMEOUT must be whole seconds, got '$FILE_TIMEOUT'"
case $STOCK_ONLY in
0 | "") SINGLE_MODE="" ;;
1) SINGLE_MODE=stock ;;
busy) SINGLE_MODE=timeout ;;
*) die "SQLITE_SUITE_STOCK must be 1 or busy, got '$STOCK_ONLY'" ;;
esac
if [[ -z $SINGLE_MODE ]]; then
  [[ -n ${HYBRID_EXT:-} ]] || die "HYBRID_EXT is not set (the absolute path of dist/libhybrid.so; run 'make ext'), or set SQLITE_SUITE_STOCK=1"
  [[ $HYBRID_EXT == /* ]] || die "HYBRID_EXT must be an absolute path, got '$HYBRID_EXT'"
  [[ -r $HYBRID_EXT ]] || die "HYBRID_EXT=$HYBRID_EXT does not exist; run 'make ext'"
fi
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
# One run at a time per cache: they share the build and the results.
exec 9>"$CACHE/.lock"
flock -n 9 || die "another run.sh is using $CACHE (set SQLITE_SUITE_DIR for a second one)"

# ---------------------------------------------------------------- packages
# The deb-src entry mirrors debian.sources (same URIs, suites, components,
# key), so `apt-get source` fetches from the archive the machine installs from.
SRC_LIST=/etc/apt/sources.list.d/debian-src.sources
write_deb_src() {
  sed -e 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$SRC_LIST"
}

# find_source [DIR]: the unpacked sqlite3 source tree under DIR (default
# CACHE/src), or nothing.
find_source() {
  local d
  for d in "${1:-$CACHE/src}"/sqlite3-*/; do
    [[ -f $d/test/tester.tcl ]] && { echo "${d%/}"; return 0; }
  done
  return 0
}

ensure_packages() {
  local missing=()
  command -v dpkg-source >/dev/null || missing+=(dpkg-dev)
  [[ -f /usr/lib/tcl8.6/tclConfig.sh ]] || missing+=(tcl-dev)
  command -v tclsh >/dev/null || missing+=(tcl)
  command -v gcc >/dev/null && command -v make >/dev/null || missing+=(build-essential)
  local need_src=0
  if [[ -z $(find_source) ]] && ! apt-cache showsrc sqlite3 2>/dev/null | grep -q '^Package: sqlite3$'; then
    need_src=1
  fi
  ((${#missing[@]} == 0 && need_src == 0)) && return 0
  if ! is_root; then
    local what=()
    ((${#missing[@]})) && what+=("packages ${missing[*]}")
    ((need_src)) && what+=("a deb-src entry (for apt-get source sqlite3)")
    local msg
    msg=$(printf '%s; ' "${what[@]}")
    echo "sqlite-suite: not root, cannot install what is missing: ${msg%; }" >&2
    echo "sqlite-suite: run these as root, then run this again:" >&2
    ((need_src)) && echo "  sed -e 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > $SRC_LIST" >&2
    echo "  apt-get update && apt-get install -y dpkg-dev tcl-dev tcl build-essential" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ((need_src)); then
    [[ -f /etc/apt/sources.list.d/debian.sources ]] ||
      die "no /etc/apt/sources.list.d/debian.sources to copy a deb-src entry from; add one for sqlite3 by hand"
    say "adding $SRC_LIST"
    write_deb_src
  fi
  say "apt-get update; apt-get install dpkg-dev tcl-dev tcl build-essential"
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends dpkg-dev tcl-dev tcl build-essential >/dev/null ||
    die "apt-get install failed"
}

# ---------------------------------------------------------- source + build
ensure_source() {
  SRC=$(find_source)
  if [[ -z $SRC ]]; then
    say "fetching the sqlite3 source package into $CACHE/src"
    rm -rf "$CACHE/src.tmp" && mkdir -p "$CACHE/src.tmp"
    (cd "$CACHE/src.tmp" && apt-get source -qq sqlite3 2>&1 | grep -v -e '^W: Download is performed unsandboxed' -e '^dpkg-source: info:' || true)
    [[ -n $(find_source "$CACHE/src.tmp") ]] || die "apt-get source sqlite3 did not unpack a source tree with test/tester.tcl"
    rm -rf "$CACHE/src" && mv "$CACHE/src.tmp" "$CACHE/src"
    SRC=$(find_source)
  fi
  SRC_VERSION=$(sed -n '1s/^sqlite3 (\([^)]*\)).*/\1/p' "$SRC/debian/changelog" 2>/dev/null || true)
  SRC_VERSION=${SRC_VERSION:-unknown}
}

ensure_testfixture() {
  local stamp="src=$SRC_VERSION opts=$BUILD_OPTS"
  BUILD=$CACHE/build
  TESTFIXTURE=$BUILD/testfixture
  BUILD_SECONDS=reused
  if [[ -x $TESTFIXTURE && $(cat "$BUILD/STAMP" 2>/dev/null) == "$stamp" ]]; then
    return 0
  fi
  say "building testfixture ($stamp, make -j2) in $BUILD"
  local t0=$EPOCHREALTIME
  rm -rf "$BUILD.tmp" && mkdir -p "$BUILD.tmp"
  if ! (cd "$BUILD.tmp" &&
    "$SRC/configure" --with-tcl=/usr/lib/tcl8.6 >configure.log 2>&1 &&
    make -j2 testfixture OPTS="$BUILD_OPTS" >make.log 2>&1); then
    tail -n 30 "$BUILD.tmp"/make.log "$BUILD.tmp"/configure.log 2>/dev/null >&2 || true
    die "building testfixture failed; logs in $BUILD.tmp"
  fi
  echo "$stamp" >"$BUILD.tmp/STAMP"
  rm -rf "$BUILD" && mv "$BUILD.tmp" "$BUILD"
  BUILD_SECONDS="$(secs_since "$t0")s"
  say "testfixture built in $BUILD_SECONDS"
}

secs_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# ----------------------------------------------------------------- scratch
# The tests run as an unprivileged user: as root, SQLite's permission checks
# pass where the tests expect them to fail (wal2-13.* fail, stock or not).
setup_scratch() {
  if is_root; then
    if ! id -u "$SUITE_USER" >/dev/null 2>&1; then
      say "creating system user $SUITE_USER"
      useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$SUITE_USER" || die "useradd $SUITE_USER failed"
    fi
    RUN_AS=(runuser -u "$SUITE_USER" --)
  else
    SUITE_USER=$(id -un)
    RUN_AS=()
  fi
  SCRATCH=${SQLITE_SUITE_SCRATCH:-$(mktemp -d /tmp/sqlite-suite.XXXXXX)}
  mkdir -p "$SCRATCH"/{bin,work,home,tmp}
  cp -r "$SRC/test" "$SCRATCH/test"
  cp "$OWN_TESTS"/*.test "$SCRATCH/test/"
  cp "$TESTFIXTURE" "$SCRATCH/bin/testfixture.real"
  cp "$HERE/testfixture-hook.sh" "$SCRATCH/bin/testfixture"
  cp "$HERE/hook.tcl" "$SCRATCH/bin/hook.tcl"
  chmod 755 "$SCRATCH/bin/testfixture" "$SCRATCH/bin/testfixture.real"
  if [[ -z $SINGLE_MODE ]]; then cp "$HYBRID_EXT" "$SCRATCH/bin/libhybrid.so"; fi
  if is_root; then chown -R "$SUITE_USER:" "$SCRATCH"; fi
  if [[ $KEEP != 1 && -z ${SQLITE_SUITE_SCRATCH:-} ]]; then
    trap 'rm -rf "$SCRATCH"' EXIT
  fi
  trap 'kill $(jobs -p) 2>/dev/null; exit 130' INT TERM
}

# ------------------------------------------------------------------- files
select_files() {
  local patterns=${SQLITE_SUITE_FILES:-$DEFAULT_FILES} p f
  local -a pattern_list
  local -A seen=()
  FILES=()
  # Split without globbing: a pattern is matched against the test
  # directories below, never against the directory run.sh started in.
  set -f
  read -r -d '' -a pattern_list <<<"$patterns" || true
  set +f
  for p in "${pattern_list[@]}"; do
    local matched=0
    for f in "$SRC"/test/$p.test "$OWN_TESTS"/$p.test; do
      [[ -f $f ]] || continue
      matched=1
      f=$(basename "$f" .test)
      [[ -n ${seen[$f]:-} ]] && continue
      seen[$f]=1
      FILES+=("$f")
    done
    ((matched)) || die "no test file matches '$p' in $SRC/test or $OWN_TESTS"
  done
  mapfile -t FILES < <(printf '%s\n' "${FILES[@]}" | sort)
  # Start order: the slowest files first (stock seconds measured here:
  # walthread 141, walcrash3 67, walprotocol 20, pagerfault2 16, walsetlk
  # 15, pagerfault 12, walvfs 10), so two at a time finish together.
  local slow=(walthread walcrash3 walprotocol pagerfault2 walsetlk pagerfault walvfs)
  ORDER=()
  for f in "${slow[@]}"; do in_list "$f" "${FILES[@]}" && ORDER+=("$f"); done
  for f in "${FILES[@]}"; do in_list "$f" "${slow[@]}" || ORDER+=("$f"); done
}

# -------------------------------------------------------------- one run
# run_file MODE NAME: runs test/NAME.test in a fresh directory; MODE is
# stock (the real testfixture, no hook), ext (extension in every
# connection) or timeout (stock SQLite, [db timeout] on every connection).
# Writes RESULTS/MODE/NAME.log and NAME.res (key=value lines).
run_file() {
  local mode=$1 name=$2
  local out=$RESULTS/$mode wd=$SCRATCH/work/$mode/$name
  mkdir -p "$out" && rm -rf "$wd" && mkdir -p "$wd"
  is_root && chown "$SUITE_USER:" "$wd" "$SCRATCH/work/$mode" "$SCRATCH/work"
  local envs=(PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME="$SCRATCH/home"
    TMPDIR="$SCRATCH/tmp" LANG=C.UTF-8 USER="$SUITE_USER")
  local prog=$SCRATCH/bin/testfixture.real
  if [[ $mode != stock ]]; then
    prog=$SCRATCH/bin/testfixture
    envs+=(HYBRID_SUITE_MODE="$mode" HYBRID_SUITE_TIMEOUT_MS="$TIMEOUT_MS"
      HYBRID_SUITE_REAL_TESTFIXTURE="$SCRATCH/bin/testfixture.real"
      HYBRID_SUITE_HOOK="$SCRATCH/bin/hook.tcl"
      HYBRID_SUITE_HOOK_LOG="$wd/hook.log")
    [[ $mode == ext ]] && envs+=(HYBRID_SUITE_EXT="$SCRATCH/bin/libhybrid.so")
  fi
  local t0=$EPOCHREALTIME rc=0
  (cd "$wd" && ulimit -c 0 && "${RUN_AS[@]}" env -i "${envs[@]}" \
    timeout -k 10 "$FILE_TIMEOUT" "$prog" "$SCRATCH/test/$name.test") \
    >"$out/$name.log" 2>&1 </dev/null 9>&- || rc=$?
  local secs
  secs=$(secs_since "$t0")
  local loads=0 deferred=0
  if [[ -f $wd/hook.log ]]; then
    loads=$(grep -c ' loaded ' "$wd/hook.log" || true)
    deferred=$(grep -c ' deferred ' "$wd/hook.log" || true)
  fi
  parse_log "$out/$name.log" "$name" "$rc" "$secs" "$loads" "$deferred" >"$out/$name.res"
  [[ $KEEP == 1 ]] || rm -rf "$wd"
  printf '  %-7s %-16s %-7s %6ss  %s errors / %s tests\n' "$mode" "$name" "$(res "$mode" "$name" status)" \
    "$secs" "$(res "$mode" "$name" errors)" "$(res "$mode" "$name" tests)"
}

# Files whose open-file count is not reliable: they open and close database
# files from several threads at once, and the counter (os_common.h
# OpenCounter, sqlite3_open_file_count += X) is a plain int. Stock runs of
# walthread here ended with -3 and -1 "files were left open".
RACY_OPEN_COUNT="walthread"

# parse_log LOG NAME RC SECS LOADS DEFERRED: prints the .res lines.
#   status: ok | errors | abort (script ended without its summary line) |
#           crash (killed by a signal) | timeout | hook (the hook failed)
#   fails:  failing test names, plus <unfreed-memory> / <files-left-open>
#           (counted by finish_test after the "N errors" line)
parse_log() {
  local log=$1 name=$2 rc=$3 secs=$4 loads=$5 deferred=$6 racy=0
  in_list "$name" $RACY_OPEN_COUNT && racy=1
  awk -v rc="$rc" -v secs="$secs" -v limit="$FILE_TIMEOUT" -v loads="$loads" \
    -v deferred="$deferred" -v racy="$racy" '
    /^[0-9]+ errors out of [0-9]+ tests/ { summary = 1; errors = $1; tests = $5 }
    /^!Failures on these tests:/ { sub(/^!Failures on these tests: */, ""); fails = fails " " $0 }
    /^Unfreed memory:/ { fails = fails " <unfreed-memory>"; extra++ }
    # A negative count is never a leak (more closes than opens): the counter
    # raced. In RACY_OPEN_COUNT files any count is noted, not counted.
    /files were left open$/ {
      if ($1 + 0 < 0 || racy) note = note " open-file-count(" $1 ")-unreliable"
      else { fails = fails " <files-left-open>"; extra++ }
    }
    /^HYBRID-SUITE-HOOK:/ { hook = 1 }
    { last[NR % 6] = $0 }
    END {
      if (rc == 124 || (rc == 137 && secs + 0 >= limit)) status = "timeout"
      else if (hook) status = "hook"
      else if (rc > 128) status = "crash"
      else if (!summary) status = "abort"
      else if (errors + extra > 0) status = "errors"
      else status = "ok"
      gsub(/^ +| +$/, "", fails)
      gsub(/^ +/, "", note)
      printf "status=%s\nrc=%s\nsecs=%s\ntests=%s\nerrors=%s\nloads=%s\ndeferred=%s\nfails=%s\nnote=%s\n",
        status, rc, secs, (summary ? tests : "-"), (summary ? errors + extra : "-"),
        loads, deferred, fails, note
      tail = ""
      for (i = NR - 5; i <= NR; i++) if (i > 0) tail = tail " | " last[i % 6]
      gsub(/\t/, " ", tail)
      printf "tail=%s\n", substr(tail, 4)
    }' "$log"
}

# res MODE FILE KEY: one value from a .res file (empty if that run did not happen).
res() { sed -n "s/^$3=//p" "$RESULTS/$1/$2.res" 2>/dev/null || true; }

# run_all MODE NAME...: at most JOBS files at once.
run_all() {
  local mode=$1 name
  shift
  for name in "$@"; do
    while (($(jobs -rp | wc -l) >= JOBS)); do wait -n || true; done
    run_file "$mode" "$name" &
  done
  wait
}

# accepted FILE TEST: is the difference listed in accepted.txt?
accepted() {
  local file=$1 test=$2 f t rest
  [[ -f $ACCEPTED ]] || return 1
  while read -r f t rest; do
    [[ -z $f || $f == \#* ]] && continue
    # shellcheck disable=SC2053 # the listed name may be a glob
    [[ $f == "$file" && $test == $t ]] && return 0
  done <"$ACCEPTED"
  return 1
}

in_list() { local x=$1 y; shift; for y in "$@"; do [[ $x == "$y" ]] && return 0; done; return 1; }

# ------------------------------------------------------------------- main
ensure_packages
ensure_source
ensure_testfixture
select_files
setup_scratch
RESULTS=$CACHE/results
rm -rf "$RESULTS" && mkdir -p "$RESULTS"

say "SQLite source: Debian sqlite3 $SRC_VERSION ($SRC)"
say "testfixture: $TESTFIXTURE (build: $BUILD_SECONDS)"
[[ -n $SINGLE_MODE ]] || say "extension: $HYBRID_EXT"
say "${#FILES[@]} files as user $SUITE_USER in $SCRATCH, $JOBS at a time, busy timeout ${TIMEOUT_MS} ms, ${FILE_TIMEOUT}s per file"
say "logs: $RESULTS/<mode>/<file>.log"
T0=$EPOCHREALTIME

if [[ -n $SINGLE_MODE ]]; then
  m=$SINGLE_MODE
  run_all "$m" "${ORDER[@]}"
  echo
  printf '%-16s %7s %7s %-8s %8s\n' file tests errors status seconds
  bad=0
  for f in "${FILES[@]}"; do
    st=$(res "$m" "$f" status)
    printf '%-16s %7s %7s %-8s %8s  %s\n' "$f" "$(res "$m" "$f" tests)" "$(res "$m" "$f" errors)" "$st" \
      "$(res "$m" "$f" secs)" "$(res "$m" "$f" note)"
    if [[ $st != ok ]]; then
      bad=$((bad + 1))
      echo "    failures: $(res "$m" "$f" fails)"
      [[ $st == errors ]] || echo "    last lines: $(res "$m" "$f" tail | cut -c1-400)"
    fi
  done
  say "total $(secs_since "$T0")s"
  echo "sqlite-suite ${m/timeout/stock+busy}: $((${#FILES[@]} - bad)) passed, $bad failed"
  ((bad == 0)) || exit 1
  exit 0
fi

say "extension run"
run_all ext "${ORDER[@]}"

# Files that did not pass cleanly with the extension are run stock.
RERUN=()
for f in "${ORDER[@]}"; do [[ $(res ext "$f" status) == ok ]] || RERUN+=("$f"); done
if ((${#RERUN[@]})); then
  say "stock run of the ${#RERUN[@]} files that failed with the extension"
  run_all stock "${RERUN[@]}"
fi

# Test names failing with the extension but not stock: run those files
# stock with a busy handler on every connection.
declare -A NEW=()
BUSY=()
for f in "${RERUN[@]}"; do
  [[ $(res ext "$f" status) == errors ]] || continue
  [[ $(res stock "$f" status) =~ ^(ok|errors)$ ]] || continue
  read -ra stock_fails <<<"$(res stock "$f" fails)"
  new=()
  for t in $(res ext "$f" fails); do in_list "$t" "${stock_fails[@]}" || new+=("$t"); done
  if ((${#new[@]})); then
    NEW[$f]="${new[*]}"
    BUSY+=("$f")
  fi
done
if ((${#BUSY[@]})); then
  say "stock run with a busy handler (db timeout $TIMEOUT_MS) of ${BUSY[*]}"
  run_all timeout "${BUSY[@]}"
fi

echo
printf '%-16s %7s %11s %-40s %8s %8s\n' file tests "errors s/e" verdict "ext s" "stock s"
failed=0
DETAILS=()
for f in "${FILES[@]}"; do
  est=$(res ext "$f" status)
  sst=$(res stock "$f" status)
  verdict=PASS
  case $est in
  ok) ;;
  timeout | crash | abort | hook)
    verdict="FAIL ($est)"
    DETAILS+=("$f: ext $est: $(res ext "$f" tail | cut -c1-400)")
    ;;
  errors)
    if [[ ! $sst =~ ^(ok|errors)$ ]]; then
      verdict="FAIL (stock $sst)"
      DETAILS+=("$f: stock $sst, cannot compare: $(res stock "$f" tail | cut -c1-300)")
    elif [[ -z ${NEW[$f]:-} ]]; then
      verdict="PASS (same failures as stock)"
    else
      read -ra busy_fails <<<"$(res timeout "$f" fails)"
      bst=$(res timeout "$f" status)
      unexplained=0
      for t in ${NEW[$f]}; do
        repro=no
        [[ $bst =~ ^(ok|errors)$ ]] && in_list "$t" "${busy_fails[@]}" && repro=yes
        listed=no
        accepted "$f" "$t" && listed=yes
        [[ $repro == yes && $listed == yes ]] || unexplained=$((unexplained + 1))
        DETAILS+=("$f $t: fails with the extension, passes stock; stock+busy handler fails it too: $repro; in accepted.txt: $listed")
      done
      if ((unexplained)); then verdict="FAIL ($unexplained new failures)"; else verdict="PASS (accepted)"; fi
    fi
    ;;
  esac
  [[ $verdict == PASS* ]] || failed=$((failed + 1))
  serr=-
  [[ -n $sst ]] && serr=$(res stock "$f" errors)
  ssecs=$(res stock "$f" secs)
  printf '%-16s %7s %11s %-40s %8s %8s\n' "$f" "$(res ext "$f" tests)" \
    "$serr/$(res ext "$f" errors)" "$verdict" "$(res ext "$f" secs)" "${ssecs:--}"
done
if ((${#DETAILS[@]})); then
  echo
  printf '  %s\n' "${DETAILS[@]}"
fi
loads=0 deferred=0 notes=""
for f in "${FILES[@]}"; do
  l=$(res ext "$f" loads) d=$(res ext "$f" deferred)
  loads=$((loads + ${l:-0})) deferred=$((deferred + ${d:-0}))
  n=$(res ext "$f" note)
  [[ -z $n ]] || notes+=" $f: $n;"
done
echo
say "hook: the extension was loaded $loads times (processes x shutdowns); $deferred loads put off while a malloc fault was armed"
[[ -z $notes ]] || say "notes:$notes"
echo
say "total $(secs_since "$T0")s; accepted differences: $ACCEPTED"
echo "sqlite-suite: $((${#FILES[@]} - failed)) passed, $failed failed"
((failed == 0)) || exit 1
