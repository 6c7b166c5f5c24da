# sqlite-hybrid — build, test, demo and benchmark entry points.
#
#   make demo    build the extension and watch it in the sqlite3 shell
#   make test    every test: unit, doc, end-to-end (sqlite3 shell, python3, processes),
#                and the crates' tests again with the portable path forced (test-portable)
#   make bench   benchmarks: contention (SQLite's default handler vs the extension,
#                with a chart), the FastAPI app, write buffer, log database,
#                PostgreSQL standbys (reads, read-your-writes, failover gap)
#   make ext     the loadable extension only -> dist/libhybrid.so
#   make lint    cargo fmt --check and clippy with warnings as errors (both builds)
#   make package cargo package of both crates (publishable, built from the package)
#   make sqlite-suite  SQLite's own TCL tests (WAL, locks, pager, journal,
#                shared cache, snapshots) with the extension in every
#                connection, compared with stock SQLite (scripts/sqlite-suite/)
#   make wheel   the pip wheel (manylinux2014) -> dist/*.whl
#   make dist    the release archive -> dist/sqlite-hybrid-<version>-linux-x86_64.tar.gz
#   make hosts   the wheel in a fresh venv, in every host (Python drivers, Datasette,
#                sqlite-utils, SQLAlchemy, Node, Go)
#   make soak    the long reliability run: 10 min soak, 200 kill runs, 20000 property cases
#
# Why dist/ and loadable/: the loadable library is built from ext/src by its
# own package (loadable/Cargo.toml, own lockfile) with rusqlite 0.39, whose
# bindings load into SQLite 3.34.1 and later; the workspace (ext as the
# client links it) uses the newest rusqlite. The result is copied to dist/,
# which no other cargo command writes.

SHELL   := /bin/bash
CARGO   ?= cargo
PYTHON  ?= /usr/bin/python3
EXT     := dist/libhybrid.so
export PYTHON
export HYBRID_EXT := $(abspath $(EXT))

.PHONY: all ext test test-portable unit e2e demo bench lint soak sqlite-suite check-tools clean wheel dist hosts package

all: ext

check-tools:
	@scripts/check-tools.sh valgrind

ext:
	$(CARGO) build --manifest-path loadable/Cargo.toml --release --locked --target-dir target/loadable
	@mkdir -p dist
	@# dist/ gets the library without its debug info (about 1 MB instead of 9):
	@# the symbol table stays for backtraces and valgrind, and the full build
	@# stays in target/loadable/release/ for a debugger.
	@strip --strip-debug -o $(EXT).tmp target/loadable/release/libhybrid.so && mv $(EXT).tmp $(EXT)
	@echo "built $(EXT)  (load it with: .load ./dist/libhybrid)"

# Every crate with the client's optional features on (tokio, postgres),
# against a throw-away PostgreSQL primary and a streaming standby
# (scripts/postgres/with-replicas.sh: initdb and pg_basebackup into a
# temporary directory as an unprivileged user, Unix sockets only, stopped and
# removed afterwards; installs Debian's postgresql as root if it is missing).
# The engine-parameterised suites run on both engines (on the primary);
# client/tests/replicas.rs reads on the standby. client/tests/failover.rs
# kills its primary, so it gets servers of its own, with synchronous
# replication (it is skipped in the first run).
CLIENT_FEATURES := sqlite-hybrid/tokio,sqlite-hybrid/postgres
test: check-tools ext
	scripts/postgres/with-replicas.sh $(CARGO) test --workspace --features $(CLIENT_FEATURES)
	scripts/postgres/with-replicas.sh --sync $(CARGO) test --workspace --features $(CLIENT_FEATURES) --test failover
	$(MAKE) test-portable

# The portable path (docs/hosts.md, "Platforms"): the ext and client crates
# built as every target but Linux builds them (no futex queue, no side file:
# backoff mode), forced on Linux with --cfg hybrid_portable (ext/build.rs),
# and their unit, integration and doc tests run that way. Its own target dir,
# so the normal build is not rebuilt. The end-to-end crate (tests/) loads
# dist/libhybrid.so, the Linux build, and is not run here.
PORTABLE_RUSTFLAGS := $(strip $(RUSTFLAGS) --cfg hybrid_portable)
test-portable:
	RUSTFLAGS="$(PORTABLE_RUSTFLAGS)" $(CARGO) test -p sqlite-hybrid-ext -p sqlite-hybrid \
	  --features sqlite-hybrid/tokio --target-dir target/portable

# The demo needs cargo, the sqlite3 shell and python3 (not valgrind).
demo: ext
	@scripts/check-tools.sh
	@scripts/demo.sh

# The contention suite (issue 26's scenarios and targets): every scenario
# against SQLite's default handler in the same run (3 rounds, modes
# alternating; about 15 minutes on 2 cores). Writes the table and the
# targets met or missed to stdout, the figures to target/bench/contention.json
# and the chart docs/benchmarks.md shows to docs/bench/contention.png.
# Then the frontier (about 5-7 minutes): throughput ratio against longest wait
# for 8 and 32 writers under the policies of BENCH_FRONTIER_POLICIES (empty:
# the script's default list), with the default handler and the 1 ms poll as
# reference points, to docs/bench/frontier.svg.
BENCH_ROUNDS   ?= 3
BENCH_DURATION ?= 3
FASTAPI_BENCH_SECONDS ?= 30
BENCH_FAILOVER_RUNS ?= 5
BENCH_FRONTIER_POLICIES ?=
REPLICA_BENCH := $(CARGO) run --release -q -p sqlite-hybrid --features postgres --example replica_bench --
bench: check-tools ext
	@scripts/check-tools.sh py:matplotlib=python3-matplotlib
	@mkdir -p target/bench docs/bench
	$(PYTHON) scripts/contention_bench.py --ext $(HYBRID_EXT) --suite issue26 \
	  --rounds $(BENCH_ROUNDS) --duration $(BENCH_DURATION) --modes default,hybrid,backoff \
	  --json target/bench/contention.json --chart docs/bench/contention.png
	$(PYTHON) scripts/contention_bench.py --ext $(HYBRID_EXT) --frontier \
	  --rounds $(BENCH_ROUNDS) --duration $(BENCH_DURATION) \
	  $(if $(BENCH_FRONTIER_POLICIES),--policies '$(BENCH_FRONTIER_POLICIES)') \
	  --json target/bench/frontier.json --chart docs/bench/frontier.svg
	@# The FastAPI scenario (uvicorn x4, 4 writers, a scan, 120 requests/s): plain
	@# busy_timeout=500 / 5000, a seed-style retry decorator and sqlite-hybrid side
	@# by side (installs the web stack into target/bench/web-venv on first use).
	$(PYTHON) scripts/fastapi_bench.py --seconds $(FASTAPI_BENCH_SECONDS) --json target/bench/fastapi.json
	$(CARGO) run --release -q -p sqlite-hybrid --features tokio --example async_bench
	$(CARGO) run --release -q -p sqlite-hybrid --example buffer_bench
	scripts/postgres/with-postgres.sh $(CARGO) run --release -q -p sqlite-hybrid --features postgres --example buffer_bench -- --engine postgres
	$(CARGO) run --release -q -p sqlite-hybrid --example contention_rmw
	scripts/postgres/with-postgres.sh $(CARGO) run --release -q -p sqlite-hybrid --features postgres --example contention_rmw -- --engine postgres
	@# PostgreSQL standbys (client/examples/replica_bench.rs): the read-heavy mix on 0, 1
	@# and 2 standbys, the first read after a write (standby vs primary), and the
	@# failover gap (kill -KILL of the primary, pg_ctl promote at once; one kill per
	@# set of servers, so BENCH_FAILOVER_RUNS sets of servers).
	$(CARGO) build --release -q -p sqlite-hybrid --features postgres --example replica_bench
	scripts/postgres/with-replicas.sh --standbys 2 $(REPLICA_BENCH) --mode reads \
	  --rounds $(BENCH_ROUNDS) --window-ms $(BENCH_DURATION)000
	scripts/postgres/with-replicas.sh $(REPLICA_BENCH) --mode ryw --rounds $(BENCH_ROUNDS)
	@rm -f target/bench/failover.txt
	@for i in $$(seq 1 $(BENCH_FAILOVER_RUNS)); do \
	  scripts/postgres/with-replicas.sh --sync $(REPLICA_BENCH) --mode failover \
	    --record target/bench/failover.txt || exit 1; \
	done
	$(CARGO) run --release -q -p sqlite-hybrid --example log_bench
	$(CARGO) run --release -q -p sqlite-hybrid --example log_bench -- --writer-rate 0
	$(CARGO) run --release -q -p sqlite-hybrid --example log_bench -- --overload
	scripts/postgres/with-postgres.sh $(CARGO) run --release -q -p sqlite-hybrid --features postgres --example log_bench -- --engine postgres
	PYTHONPATH=python SQLITE_HYBRID_LIBRARY=$(HYBRID_EXT) $(PYTHON) scripts/python_buffer_bench.py --json target/bench/python_buffer.json

# Environment overrides: SOAK_SECONDS, CRASH_RUNS, PROPTEST_CASES.
soak: check-tools ext
	SOAK_SECONDS=$${SOAK_SECONDS:-600} CRASH_RUNS=$${CRASH_RUNS:-200} \
	  $(CARGO) test --release -p sqlite-hybrid-tests --test soak --test crash -- --nocapture
	PROPTEST_CASES=$${PROPTEST_CASES:-20000} $(CARGO) test --release -p sqlite-hybrid-ext --test bad_input

# Installs what it needs as root (Debian's sqlite3 source, tcl-dev, a
# build toolchain, an unprivileged test user) and says what is missing
# otherwise; about 8 minutes on 2 cores, most of it SQLite's own tests (185 files).
sqlite-suite: ext
	scripts/sqlite-suite/run.sh

# The packages (README "Install", docs/hosts.md "Building the packages"):
# the library built once for both with cargo zigbuild for glibc 2.17 (its
# own target dir; dist/libhybrid.so and target/release are untouched),
# stripped and checked.
wheel:
	scripts/packaging/wheel.sh
dist:
	scripts/packaging/dist.sh
# Installs the wheel into a fresh venv and runs every host against it:
# stdlib sqlite3, apsw, pysqlite3, sqlean, Datasette, sqlite-utils,
# SQLAlchemy (sync and aiosqlite), FastAPI on uvicorn, Django, better-sqlite3
# and mattn/go-sqlite3.
hosts: wheel
	hosts/run.sh

# The two crates as crates.io would take them: packaged together (the
# client's ext dependency resolves to the packaged ext) and each built from
# its package alone.
package:
	$(CARGO) package -p sqlite-hybrid-ext -p sqlite-hybrid --allow-dirty

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets --features $(CLIENT_FEATURES) -- -D warnings
	$(CARGO) clippy --manifest-path loadable/Cargo.toml --release --locked --target-dir target/loadable -- -D warnings
	RUSTFLAGS="$(PORTABLE_RUSTFLAGS)" $(CARGO) clippy --workspace --all-targets --features $(CLIENT_FEATURES) --target-dir target/portable -- -D warnings
	RUSTFLAGS="$(PORTABLE_RUSTFLAGS)" $(CARGO) clippy --manifest-path loadable/Cargo.toml --release --locked --target-dir target/loadable-portable -- -D warnings

clean:
	$(CARGO) clean
	rm -rf dist
