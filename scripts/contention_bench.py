#!/usr/bin/env python3
"""Write-contention benchmark: SQLite's default busy handler against the
hybrid extension (futex hand-off, and its backoff fallback), side by side.

Writers (Debian python3, one connection each) share one WAL file and loop:

    BEGIN IMMEDIATE; INSERT one row; [hold the lock H ms]; COMMIT; [think T ms]

Every scenario runs each mode on a fresh file for the same duration, the
modes alternating (default, hybrid, backoff, default, hybrid, ...), for
--rounds rounds, so each ratio compares runs made minutes apart at most on
the same machine under the same load.

Modes:
  default  sqlite3.connect(timeout=30): SQLite's own busy handler.
  hybrid   the extension loaded (its defaults, or --policy), deadline 30 s:
           futex mode.
  backoff  the extension with its side file made unusable (a directory in
           its place): its jittered backoff with aging.
  poll1ms  no busy handler (connect(timeout=0)); the app retries BEGIN
           IMMEDIATE after sleeping 1 ms on every SQLITE_BUSY, to the same
           30 s deadline: the constant 1 ms poll of Rails 8 and several
           drivers, a reference point.

Scenario knobs: --writers N, --hold-ms H, --think-ms T (paced, request-like
writers), --sync NORMAL|FULL, --hog (one CPU-bound process runs beside the
writers), --threads (the writers are threads of one process instead of
processes).

Reported per run: committed tx/s, lock errors, lock-wait p50/p99/max (time
in BEGIN IMMEDIATE), transaction latency p99 (BEGIN to COMMIT returning),
Jain's fairness over per-writer commits (1 = even), and the writers' CPU
per committed transaction (user + system, measured inside the writers from
their first transaction to their last). Ratios are extension / default of
the same round; the summary gives the median and range over rounds.

Suites: --suite issue12 (the scenarios and targets of issue 12) and
--suite issue26 (the 8-writer matrix, NORMAL and FULL x hold 0 and 1 ms x
with and without a CPU hog x processes and threads, then 32 and 64
writers, each with issue 26's targets; the verdict of each scenario is
its worst round). --pick 0,3,5 runs only those scenarios of a suite (to
split a long suite into short runs).

Frontier (--frontier): for 8 and 32 writers (--frontier-writers), hold 0,
NORMAL, the extension with its defaults and under each policy of
--policies (a JSON list of hybrid_busy_config() objects; default: handoff_ms
1, 2 and 5, and max_wait_ms 25, 100, 200 and 400 if the extension has that
key; its default, max_wait_ms 50, is the "hybrid" point) beside the default handler and poll1ms, the throughput ratio against
the longest wait, as a chart (--chart, SVG or PNG by the file name).

Tracing (--trace-dir DIR, used by scripts/contention_stalls.py): every
writer keeps a timeline of its transactions (when its BEGIN IMMEDIATE
started and returned, when its COMMIT returned, its CPU clock at both) and
its hybrid_lock_events rows; a monitor process samples hybrid_lock_holder
and hybrid_lock_waiters every --sample-ms, and runs one thread per CPU at
SCHED_FIFO (when permitted) that sleeps 1 ms in a loop and records every
oversleep over 20 ms: a stall of the machine, not of the queue.

Usage:
  contention_bench.py --ext dist/libhybrid.so [scenario knobs] [--rounds 3]
                      [--duration 4] [--modes default,hybrid,backoff,poll1ms]
                      [--suite issue12|issue26] [--pick 0,1] [--json out.json]
                      [--chart out.svg]
  contention_bench.py --frontier [--frontier-writers 8,32] [--policies JSON]
                      [--rounds 3] [--duration 3] [--json f.json] [--chart f.svg]
  contention_bench.py --report out.json
  contention_bench.py --frontier-chart f8.json [f32.json ...] out.svg
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TIMEOUT_S = 30.0  # both modes: long enough that an error means starvation


# --------------------------------------------------------------- writers
POLL_S = 0.001  # poll1ms: the sleep between two BEGIN IMMEDIATE attempts


def open_connection(db, mode, ext, sync, policy=None):
    import sqlite3
    timeout = 0 if mode == "poll1ms" else TIMEOUT_S
    conn = sqlite3.connect(db, isolation_level=None, timeout=timeout,
                           check_same_thread=False)
    if mode in ("hybrid", "backoff"):
        conn.enable_load_extension(True)
        conn.load_extension(ext)
        conn.enable_load_extension(False)
        # connect(timeout=...) installed SQLite's handler: put ours back.
        conn.execute("SELECT hybrid_busy_timeout(?)", (TIMEOUT_S * 1000,))
        if policy:
            conn.execute("SELECT hybrid_busy_config(?)", (policy,))
    conn.execute(f"PRAGMA synchronous={sync}")
    return conn


def begin_polling(conn):
    """poll1ms: BEGIN IMMEDIATE, retried after a 1 ms sleep on every
    SQLITE_BUSY until the deadline. Returns whether it got the lock."""
    import sqlite3
    deadline = time.perf_counter() + TIMEOUT_S
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError:
            if time.perf_counter() >= deadline:
                return False
            time.sleep(POLL_S)


def write_loop(conn, writer_id, hold_s, think_s, start_at, duration, cpu_clock,
               poll=False, trace=None):
    """One writer's loop; returns its results. With `trace` (an
    array('d')), appends (begin start, begin returned, commit returned,
    CPU clock at begin returned, CPU clock at commit returned) per
    transaction, on the monotonic clock every process shares."""
    import sqlite3
    payload = "x" * 100
    time.sleep(max(0.0, start_at - time.time()))
    end = time.perf_counter() + duration
    cpu0 = cpu_clock()
    commits = errors = 0
    waits, latencies = [], []
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        if poll:
            if not begin_polling(conn):
                errors += 1
                continue
        else:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                errors += 1
                continue
        t1 = time.perf_counter()
        if trace is not None:
            c1 = cpu_clock()
        conn.execute("INSERT INTO t(writer, payload) VALUES (?, ?)", (writer_id, payload))
        if hold_s > 0:
            time.sleep(hold_s)
        conn.execute("COMMIT")
        t2 = time.perf_counter()
        if trace is not None:
            trace.extend((t0, t1, t2, c1, cpu_clock()))
        # Every wait counts, the last one too: a writer starved until the
        # others stopped must show its wait even though its commit came late.
        waits.append((t1 - t0) * 1000)
        if t2 <= end:
            commits += 1
            latencies.append((t2 - t0) * 1000)
        if think_s > 0:
            time.sleep(think_s)
    return {"writer": writer_id, "commits": commits, "errors": errors,
            "cpu_s": cpu_clock() - cpu0, "waits_ms": waits, "latencies_ms": latencies}


def process_cpu():
    # user + system of the process, at the clock's resolution (os.times()
    # counts in 10 ms ticks: too coarse for one transaction in a trace)
    return time.process_time()


def run_writer(args, writer_id, cpu_clock):
    """Opens a connection and runs one writer; with --trace-dir, saves its
    timeline and its hybrid_lock_events next to the run's files."""
    from array import array
    conn = open_connection(args.db, args.mode, args.ext, args.sync, args.policy)
    tracing = bool(args.trace_dir)
    if tracing and args.mode == "hybrid":
        conn.execute("SELECT hybrid_lock_events_capacity(65536)")
    trace = array("d") if tracing else None
    result = write_loop(conn, writer_id, args.hold_ms / 1000, args.think_ms / 1000,
                        args.start_at, args.duration, cpu_clock,
                        poll=args.mode == "poll1ms", trace=trace)
    # The WAL as the run leaves it (the last connection to close deletes
    # it): its size, and the checkpoint sequence of its header, which
    # counts how often a writer restarted it from the beginning.
    try:
        result["wal_bytes"] = os.path.getsize(args.db + "-wal")
        with open(args.db + "-wal", "rb") as f:
            header = f.read(16)
        result["wal_restarts"] = int.from_bytes(header[12:16], "big") if len(header) == 16 else 0
    except OSError:
        result["wal_bytes"], result["wal_restarts"] = 0, 0
    if tracing:
        base = os.path.join(args.trace_dir, f"w{writer_id}")
        with open(base + ".bin", "wb") as f:
            trace.tofile(f)
        events = []
        if args.mode == "hybrid":
            events = conn.execute(
                "SELECT at, outcome, wait_ms, retries FROM hybrid_lock_events "
                "WHERE wait_ms >= 50").fetchall()
        usage = __import__("resource").getrusage(__import__("resource").RUSAGE_SELF)
        with open(base + ".json", "w") as f:
            json.dump({"writer": writer_id, "pid": os.getpid(),
                       "native_tid": threading.get_native_id(),
                       # to place the events' wall-clock `at` on the monotonic clock
                       "wall_minus_mono": time.time() - time.perf_counter(),
                       "slow_events": events, "nivcsw": usage.ru_nivcsw}, f)
    conn.close()
    return result


def worker_main(args):
    """A writer process (or, with --threads, a process of writer threads)."""
    if args.threads_in_process:
        results = [None] * args.writers
        def run(i):
            results[i] = run_writer(args, i, time.thread_time)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(args.writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in results:
            print(json.dumps(r))
        return
    print(json.dumps(run_writer(args, args.writer_id, process_cpu)))


def hog_main(args):
    """A CPU-bound process beside the writers (a busy machine)."""
    end = time.time() + args.duration
    x = 0
    while time.time() < end:
        for i in range(10000):
            x = (x * 31 + i) % 1000003


STALL_MS = 20.0  # a 1 ms sleep that overslept by more than this: a machine stall


def detector_main(cpu, until_wall, out_path, fifo):
    """A stall detector: a process of one thread, pinned to CPU `cpu` and
    at SCHED_FIFO when allowed (so no process of this machine's users can
    delay it, and no lock of its own can either), that sleeps 1 ms in a
    loop and records every oversleep over STALL_MS as (cpu, start, end) on
    the monotonic clock: that CPU ran nothing of the guest's for that long
    (the hypervisor stole it) or ran the kernel with preemption off."""
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass
    if fifo:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        except (OSError, AttributeError):
            fifo = False
    until = time.perf_counter() + (until_wall - time.time())
    gaps = []
    last = time.perf_counter()
    while last < until:
        time.sleep(0.001)
        now = time.perf_counter()
        if (now - last) * 1000 - 1.0 > STALL_MS:
            gaps.append((cpu, last, now))
        last = now
    with open(out_path, "w") as f:
        json.dump({"cpu": cpu, "fifo": fifo, "gaps": gaps}, f)


def monitor_main(args):
    """The tracing monitor of one run: a stall detector process per CPU,
    and (futex mode) samples of who holds the lock and who waits, every
    --sample-ms, from start to end of the writers; saved as monitor.json."""
    until_wall = args.start_at + args.duration + 0.5
    until = time.perf_counter() + (until_wall - time.time())
    me = [sys.executable, os.path.abspath(__file__)]
    detectors = []
    for cpu in sorted(os.sched_getaffinity(0)):
        out = os.path.join(args.trace_dir, f"stalls-cpu{cpu}.json")
        detectors.append((out, subprocess.Popen(
            me + ["--detector", str(cpu), str(until_wall), out]
            + (["--no-fifo"] if args.no_fifo else []))))
    samples, sched = [], {}
    if args.mode == "hybrid":
        conn = open_connection(args.db, "hybrid", args.ext, "NORMAL")
        time.sleep(max(0.0, args.start_at - time.time()))
        interval = args.sample_ms / 1000
        while time.perf_counter() < until:
            t = time.perf_counter()
            holder = conn.execute("SELECT pid, held_ms, tenure_ms, tenure_elapsed_ms, queued "
                                  "FROM hybrid_lock_holder").fetchone()
            waiting = conn.execute("SELECT pid, position, is_head, waited_ms, stale "
                                   "FROM hybrid_lock_waiters").fetchall()
            samples.append((t, list(holder) if holder else None, [list(w) for w in waiting]))
            # Every writer process seen so far: its CPU time and its time
            # runnable but not running (/proc/PID/schedstat, ns), to tell a
            # waiter that slept from one the machine did not run.
            for w in waiting:
                sched.setdefault(w[0], [])
            if holder and holder[0]:
                sched.setdefault(holder[0], [])
            for pid, series in sched.items():
                try:
                    with open(f"/proc/{pid}/schedstat") as f:
                        cpu_ns, runq_ns = f.read().split()[:2]
                    series.append((t, int(cpu_ns), int(runq_ns)))
                except (OSError, ValueError):
                    pass
            time.sleep(max(0.0, interval - (time.perf_counter() - t)))
        conn.close()
    gaps, fifo = [], True
    for out, proc in detectors:
        proc.wait()
        try:
            with open(out) as f:
                found = json.load(f)
            gaps += [tuple(g) for g in found["gaps"]]
            fifo &= found["fifo"]
        except (OSError, ValueError):
            fifo = False
    with open(os.path.join(args.trace_dir, "monitor.json"), "w") as f:
        json.dump({"pid": os.getpid(), "fifo": fifo, "stall_ms": STALL_MS,
                   "gaps": sorted(gaps, key=lambda g: g[1]), "samples": samples,
                   "schedstat": sched}, f)


def steal_jiffies():
    """The machine's steal and total CPU time so far (jiffies, /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return fields[7] if len(fields) > 7 else 0, sum(fields[:8])
    except (OSError, ValueError):
        return 0, 0


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


def handoffs_main(db, ext):
    """The file-wide hand-off count of `db` (printed by a child process)."""
    conn = open_connection(db, "hybrid", ext, "NORMAL")
    row = conn.execute("SELECT handoffs FROM hybrid_lock_metrics WHERE scope = 'file' AND db = ?",
                       (os.path.realpath(db),)).fetchone()
    return row[0] if row else ""


# ------------------------------------------------------------- one run
def quantile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))]


def jain(counts):
    squares = sum(c * c for c in counts)
    return sum(counts) ** 2 / (len(counts) * squares) if squares else 0.0


def run_once(scenario, mode, ext, workdir, tag, policy=None, trace_dir=None, sample_ms=5.0):
    """One run of one mode on a fresh file. With `trace_dir`, the writers'
    timelines and the monitor's samples are left there (see --trace-dir)."""
    import sqlite3
    db = os.path.join(workdir, f"{tag}-{mode}.db")
    init = sqlite3.connect(db, isolation_level=None)
    init.execute("PRAGMA journal_mode=WAL")
    init.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, writer INTEGER, payload TEXT)")
    init.close()
    if mode == "backoff":
        os.mkdir(db + "-hybrid")  # the side file cannot exist: backoff mode
    writers = scenario["writers"]
    start_at = time.time() + 0.5 + 0.03 * writers
    common = ["--db", db, "--mode", mode, "--ext", ext, "--sync", scenario["sync"],
              "--hold-ms", str(scenario["hold_ms"]), "--think-ms", str(scenario["think_ms"]),
              "--duration", str(scenario["duration"]), "--start-at", str(start_at)]
    if policy:
        common += ["--policy", policy]
    if trace_dir:
        os.makedirs(trace_dir, exist_ok=True)
        common += ["--trace-dir", trace_dir]
    me = [sys.executable, os.path.abspath(__file__)]
    monitor = None
    if trace_dir:
        monitor = subprocess.Popen(me + ["--monitor", "--sample-ms", str(sample_ms)] + common)
    if scenario["threads"]:
        procs = [subprocess.Popen(me + ["--worker", "--threads-in-process",
                                        "--writers", str(writers)] + common,
                                  stdout=subprocess.PIPE, text=True)]
    else:
        procs = [subprocess.Popen(me + ["--worker", "--writer-id", str(i)] + common,
                                  stdout=subprocess.PIPE, text=True)
                 for i in range(writers)]
    hog = None
    if scenario["hog"]:
        hog = subprocess.Popen(me + ["--hog", "--duration", str(scenario["duration"] + 1)])
    time.sleep(max(0.0, start_at - time.time()))
    load_before, steal_before = loadavg(), steal_jiffies()
    results = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"writer failed ({mode}): exit {p.returncode}")
        results.extend(json.loads(line) for line in out.strip().splitlines())
    steal_after = steal_jiffies()
    if hog:
        hog.kill()
        hog.wait()
    if monitor:
        monitor.wait()
    duration = scenario["duration"]
    handoffs = None
    if mode == "hybrid":
        # How often the lock changed hands through the queue (every process).
        # In a child: loading the extension here would register this
        # process's later connections too (the auto-extension).
        out = subprocess.run(me + ["--handoffs", db, "--ext", ext], capture_output=True,
                             text=True, check=True).stdout.strip()
        handoffs = int(out) / duration if out else None
    commits = [r["commits"] for r in results]
    waits = [w for r in results for w in r["waits_ms"]]
    latencies = [x for r in results for x in r["latencies_ms"]]
    total = sum(commits)
    steal_total = steal_after[1] - steal_before[1]
    return {
        "mode": mode,
        "tx_s": total / duration,
        "errors": sum(r["errors"] for r in results),
        "wait_p50_ms": quantile(waits, 0.50),
        "wait_p99_ms": quantile(waits, 0.99),
        "wait_max_ms": max(waits) if waits else float("nan"),
        "tx_p99_ms": quantile(latencies, 0.99),
        "jain": jain(commits),
        "min_max": f"{min(commits)}/{max(commits)}",
        "cpu_us_per_tx": sum(r["cpu_s"] for r in results) / max(total, 1) * 1e6,
        "handoffs_s": handoffs,
        "loadavg": load_before,
        # share of the machine's CPU time stolen by the hypervisor during the run
        "steal_share": ((steal_after[0] - steal_before[0]) / steal_total) if steal_total else 0.0,
        "wal_bytes": max((r.get("wal_bytes", 0) for r in results), default=0),
        "wal_restarts": max((r.get("wal_restarts", 0) for r in results), default=0),
        "waits_ms": sorted(waits),
    }


# ------------------------------------------------------------ scenarios
def scenario(name, writers=8, hold_ms=0.0, think_ms=0.0, sync="NORMAL", hog=False,
             threads=False, duration=4.0, targets=None):
    return {"name": name, "writers": writers, "hold_ms": hold_ms, "think_ms": think_ms,
            "sync": sync, "hog": hog, "threads": threads, "duration": duration,
            "targets": targets or {}}


def issue12_suite(duration):
    """Every scenario of issue 12, with its targets (ratios: extension/default)."""
    out = []
    for sync in ("NORMAL", "FULL"):
        for hog in (False, True):
            for hold in (0.0, 1.0):
                name = f"8 writers, hold {hold:g} ms, {sync}" + (", CPU hog" if hog else "")
                out.append(scenario(name, hold_ms=hold, sync=sync, hog=hog, duration=duration,
                                    targets={"tx_ratio": 1.0,
                                             "wait_max_ms": 30.0 if hold == 0 else 50.0,
                                             "jain": 0.99, "errors": 0, "cpu_ratio": 1.1}))
    out.append(scenario("8 threads of one process, hold 0, NORMAL", threads=True,
                        duration=duration,
                        targets={"tx_ratio": 1.0, "wait_max_ms": 30.0, "jain": 0.99,
                                 "errors": 0, "cpu_ratio": 1.1}))
    out.append(scenario("8 threads of one process, hold 1 ms, NORMAL", threads=True,
                        hold_ms=1.0, duration=duration,
                        targets={"tx_ratio": 1.0, "wait_max_ms": 50.0, "jain": 0.99,
                                 "errors": 0, "cpu_ratio": 1.1}))
    for writers, max_wait in ((32, 100.0), (64, 200.0)):
        out.append(scenario(f"{writers} writers, hold 0, NORMAL", writers=writers,
                            duration=duration,
                            targets={"tx_ratio": 0.95, "wait_max_ms": max_wait, "errors": 0,
                                     "cpu_ratio": 1.1}))
    out.append(scenario("8 paced writers (2 ms think, hold 0.2 ms), NORMAL", hold_ms=0.2,
                        think_ms=2.0, duration=duration,
                        targets={"tx_p99_ratio": 1.0, "errors": 0, "cpu_ratio": 1.1}))
    out.append(scenario("1 writer alone, hold 0, NORMAL", writers=1, duration=duration))
    return out


def issue26_suite(duration):
    """Every scenario with a target in issue 26, with its targets (ratios:
    extension/default; the verdict is the worst round): the 8-writer matrix
    (NORMAL and FULL, hold 0 and 1 ms, with and without a CPU-bound process,
    processes and threads): tx/s >= 0.97x, longest wait <= 50 ms at hold 0
    and <= 80 ms at hold 1 ms, CPU/tx <= 1.5x at hold 1 ms; 32 and 64
    writers: tx/s >= 0.95x, longest wait <= 100 / 200 ms. Then two
    scenarios without targets that docs/benchmarks.md quotes (paced
    writers, one writer alone)."""
    out = []
    for threads in (False, True):
        for sync in ("NORMAL", "FULL"):
            for hog in (False, True):
                for hold in (0.0, 1.0):
                    who = "8 threads of one process" if threads else "8 writers"
                    name = f"{who}, hold {hold:g} ms, {sync}" + (", CPU hog" if hog else "")
                    targets = {"tx_ratio": 0.97, "wait_max_ms": 50.0 if hold == 0 else 80.0,
                               "errors": 0}
                    if hold > 0:
                        targets["cpu_ratio"] = 1.5
                    out.append(scenario(name, hold_ms=hold, sync=sync, hog=hog, threads=threads,
                                        duration=duration, targets=targets))
    for writers, max_wait in ((32, 100.0), (64, 200.0)):
        out.append(scenario(f"{writers} writers, hold 0 ms, NORMAL", writers=writers,
                            duration=duration,
                            targets={"tx_ratio": 0.95, "wait_max_ms": max_wait, "errors": 0}))
    out.append(scenario("8 paced writers (2 ms think, hold 0.2 ms), NORMAL", hold_ms=0.2,
                        think_ms=2.0, duration=duration))
    out.append(scenario("1 writer alone, hold 0 ms, NORMAL", writers=1, duration=duration))
    return out


SUITES = {"issue12": issue12_suite, "issue26": issue26_suite}


# --------------------------------------------------------------- report
def ratio(a, b):
    return a / b if b else float("nan")


def summarise(scenario_runs, modes):
    """Per mode: medians and ranges of each figure, and of ratios to default."""
    summary = {}
    for mode in modes:
        runs = [r[mode] for r in scenario_runs]
        entry = {}
        for key in ("tx_s", "errors", "wait_p50_ms", "wait_p99_ms", "wait_max_ms",
                    "tx_p99_ms", "jain", "cpu_us_per_tx"):
            values = [run[key] for run in runs]
            entry[key] = (statistics.median(values), min(values), max(values))
        if mode != "default":
            for key, name in (("tx_s", "tx_ratio"), ("cpu_us_per_tx", "cpu_ratio"),
                              ("tx_p99_ms", "tx_p99_ratio")):
                values = [ratio(r[mode][key], r["default"][key]) for r in scenario_runs]
                entry[name] = (statistics.median(values), min(values), max(values))
        summary[mode] = entry
    return summary


def fmt(triple, digits=2):
    median, low, high = triple
    if low == high:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def verdict(targets, entry):
    failed = []
    checks = [("tx_ratio", ">="), ("tx_p99_ratio", "<="), ("cpu_ratio", "<="),
              ("wait_max_ms", "<="), ("jain", ">="), ("errors", "<=")]
    for key, op in checks:
        if key not in targets or key not in entry:
            continue
        worst = entry[key][1] if op == ">=" else entry[key][2]
        ok = worst >= targets[key] if op == ">=" else worst <= targets[key]
        if not ok:
            failed.append(f"{key} {worst:.3g} (target {op} {targets[key]:g})")
    return "all met" if not failed else "missed: " + "; ".join(failed)


def print_table(results, modes):
    print()
    print("| scenario | mode | tx/s | tx/s ratio | wait p50 ms | wait p99 ms | wait max ms "
          "| tx p99 ms | Jain | CPU µs/tx | CPU ratio | errors | targets (worst round) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for item in results:
        summary = item["summary"]
        for mode in modes:
            e = summary[mode]
            targets = item["scenario"]["targets"] if mode == "hybrid" else {}
            print(f"| {item['scenario']['name']} | {mode} | {fmt(e['tx_s'], 0)} | "
                  f"{fmt(e['tx_ratio']) if 'tx_ratio' in e else ''} | "
                  f"{fmt(e['wait_p50_ms'])} | {fmt(e['wait_p99_ms'], 1)} | "
                  f"{fmt(e['wait_max_ms'], 1)} | {fmt(e['tx_p99_ms'], 1)} | "
                  f"{fmt(e['jain'], 3)} | {fmt(e['cpu_us_per_tx'], 0)} | "
                  f"{fmt(e['cpu_ratio']) if 'cpu_ratio' in e else ''} | "
                  f"{fmt(e['errors'], 0)} | {verdict(targets, e) if targets else ''} |")
    targeted = [r for r in results if r["scenario"]["targets"] and "hybrid" in r["summary"]]
    if targeted:
        print("\nTargets, hybrid mode, worst round:")
        met = 0
        for item in targeted:
            v = verdict(item["scenario"]["targets"], item["summary"]["hybrid"])
            met += v == "all met"
            print(f"  {'met   ' if v == 'all met' else 'MISSED'}  {item['scenario']['name']}"
                  + ("" if v == "all met" else f": {v[len('missed: '):]}"))
        print(f"  {met} of {len(targeted)} scenarios meet every target")
    alone = next((r for r in results if r["scenario"]["writers"] == 1), None)
    eight = next((r for r in results if r["scenario"]["name"].startswith("8 writers, hold 0 ms, NORMAL")
                  and "hog" not in r["scenario"]["name"]), None)
    if alone and eight:
        solo = alone["summary"]["default"]["tx_s"][0]
        for mode in modes:
            together = eight["summary"][mode]["tx_s"][0]
            print(f"\n8 writers together ({mode}) commit {together / solo:.2f}× what one writer "
                  f"alone commits with SQLite's default handler ({together:.0f} vs {solo:.0f} tx/s).")
    sys.stdout.flush()


def tail_curve(waits, points=400):
    """(x, share of waits longer than x) on a log grid: the tail, where the
    modes differ, stays visible (a plain CDF hides it above 99%)."""
    if not waits:
        return [], []
    waits = sorted(waits)
    low, high = max(waits[0], 1e-3), max(waits[-1], 2e-3)
    xs = [low * (high / low) ** (i / (points - 1)) for i in range(points)]
    out_x, out_y, j = [], [], 0
    for x in xs:
        while j < len(waits) and waits[j] <= x:
            j += 1
        share = (len(waits) - j) / len(waits)
        if share > 0:
            out_x.append(x)
            out_y.append(share)
    return out_x, out_y


def draw_chart(results, modes, path):
    """tx/s ratio per scenario, and the wait-time distributions (default vs
    the extension) of the two headline scenarios."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [r["scenario"]["name"] for r in results if "tx_ratio" in r["summary"].get("hybrid", {})]
    picks = [r for r in results if r["scenario"]["name"] in
             ("8 writers, hold 0 ms, NORMAL", "8 writers, hold 1 ms, NORMAL")] or results[:1]
    fig = plt.figure(figsize=(16, 0.42 * len(names) + 2.5))
    grid = fig.add_gridspec(len(picks), 2, width_ratios=[3, 2])
    left = fig.add_subplot(grid[:, 0])
    y = range(len(names))
    others = [m for m in modes if m != "default"]
    for k, mode in enumerate(others):
        meds, lows, highs = [], [], []
        for r in results:
            if r["scenario"]["name"] not in names:
                continue
            med, lo, hi = r["summary"][mode]["tx_ratio"]
            meds.append(med), lows.append(med - lo), highs.append(hi - med)
        left.barh([i + 0.38 * k for i in y], meds, height=0.36, xerr=[lows, highs],
                  label=mode, capsize=2)
    left.axvline(1.0, color="black", linewidth=0.8)
    left.set_yticks([i + 0.19 * (len(others) - 1) for i in y])
    left.set_yticklabels(names, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("tx/s, extension ÷ SQLite's default handler (median, range over rounds)")
    left.legend(loc="lower right")
    for row, pick in enumerate(picks):
        ax = fig.add_subplot(grid[row, 1])
        for mode in modes:
            waits = [w for run in pick["runs"] for w in run[mode]["waits_ms"]]
            xs, ys = tail_curve(waits)
            ax.plot(xs, ys, label=mode)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("lock wait x (ms)")
        ax.set_ylabel("share of waits longer than x")
        ax.set_title(f"Wait-time distribution, all rounds: {pick['scenario']['name']}", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", linewidth=0.3)
    fig.tight_layout()
    fig.savefig(path)
    print(f"chart: {path}")


DEFAULT_POLICIES = ['{"handoff_ms":1}', '{"handoff_ms":2}', '{"handoff_ms":5}']
# Added to the default list when the extension's policy has the key.
MAX_WAIT_POLICIES = ['{"max_wait_ms":25}', '{"max_wait_ms":100}', '{"max_wait_ms":200}',
                     '{"max_wait_ms":400}']


def policy_keys(ext):
    """The keys of the extension's policy (hybrid_busy_config() of a fresh
    connection), read in a child process: loading the extension here would
    register this process's later connections too (the auto-extension)."""
    code = ("import sqlite3, sys; c = sqlite3.connect(':memory:'); "
            "c.enable_load_extension(True); c.load_extension(sys.argv[1]); "
            "print(c.execute('SELECT hybrid_busy_config()').fetchone()[0])")
    out = subprocess.run([sys.executable, "-c", code, ext], capture_output=True, text=True)
    try:
        return set(json.loads(out.stdout))
    except ValueError:
        return set()


def frontier_policies(args, ext):
    if args.policies:
        return [p if isinstance(p, str) else json.dumps(p, separators=(",", ":"))
                for p in json.loads(args.policies)]
    return DEFAULT_POLICIES + (MAX_WAIT_POLICIES if "max_wait_ms" in policy_keys(ext) else [])


def run_frontier(args, ext):
    """For each writer count: the default handler, poll1ms, the extension
    with its defaults and under each policy, hold 0, NORMAL, fresh files,
    all of them in turn in every round. Returns one entry per writer count:
    per setting, the tx/s ratio to the default of the same round and the
    longest wait, each round."""
    policies = frontier_policies(args, ext)
    settings = ([("default", "default", None), ("poll1ms", "poll1ms", None),
                 ("hybrid (defaults)", "hybrid", None)]
                + [(f"hybrid {p}", "hybrid", p) for p in policies])
    out = []
    with tempfile.TemporaryDirectory() as workdir:
        for writers in [int(w) for w in args.frontier_writers.split(",")]:
            sc = scenario(f"{writers} writers, hold 0 ms, NORMAL", writers=writers,
                          duration=args.duration)
            points = {label: [] for label, _, _ in settings}
            for rnd in range(args.rounds):
                base = None
                for k, (label, mode, policy) in enumerate(settings):
                    r = run_once(sc, mode, ext, workdir, f"f{writers}r{rnd}s{k}", policy)
                    if mode == "default":
                        base = r["tx_s"]
                    points[label].append({"tx_s": r["tx_s"], "tx_ratio": ratio(r["tx_s"], base),
                                          "wait_max_ms": r["wait_max_ms"],
                                          "wait_p99_ms": r["wait_p99_ms"],
                                          "cpu_us_per_tx": r["cpu_us_per_tx"],
                                          "errors": r["errors"], "loadavg": r["loadavg"]})
                    print(f"  frontier {writers} writers | round {rnd + 1} | {label:28} "
                          f"{r['tx_s']:8.0f} tx/s  ratio {ratio(r['tx_s'], base):5.2f}  "
                          f"max wait {r['wait_max_ms']:8.1f} ms  errors {r['errors']}",
                          flush=True)
            out.append({"writers": writers, "scenario": sc, "points": points})
    print()
    print("| writers | setting | tx/s ratio | longest wait ms | CPU µs/tx |")
    print("|---|---|---|---|---|")
    for item in out:
        for label, runs in item["points"].items():
            def triple(key):
                v = [r[key] for r in runs]
                return statistics.median(v), min(v), max(v)
            print(f"| {item['writers']} | `{label}` | {fmt(triple('tx_ratio'))} | "
                  f"{fmt(triple('wait_max_ms'), 1)} | {fmt(triple('cpu_us_per_tx'), 0)} |")
    return out


def draw_frontier(frontier, path):
    """Throughput ratio against longest wait, one panel per writer count:
    a point per setting at the medians, bars for the range over rounds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(frontier), figsize=(7 * len(frontier), 5.5), squeeze=False)
    for ax, item in zip(axes[0], frontier):
        for label, runs in item["points"].items():
            xs = [r["wait_max_ms"] for r in runs]
            ys = [r["tx_ratio"] for r in runs]
            x, y = statistics.median(xs), statistics.median(ys)
            style = ({"marker": "s", "color": "black"} if label == "default" else
                     {"marker": "^", "color": "tab:red"} if label == "poll1ms" else
                     {"marker": "o"})
            ax.errorbar([x], [y], xerr=[[x - min(xs)], [max(xs) - x]],
                        yerr=[[y - min(ys)], [max(ys) - y]], capsize=3, linestyle="none",
                        label=label, **style)
            ax.annotate(label.replace("hybrid ", ""), (x, y), textcoords="offset points",
                        xytext=(5, 5), fontsize=7)
        ax.set_xscale("log")
        ax.axhline(1.0, color="black", linewidth=0.6)
        ax.set_xlabel("longest wait for the lock, ms (log; median, range over rounds)")
        ax.set_ylabel("tx/s ÷ SQLite's default handler, same round")
        ax.set_title(f"{item['writers']} writer processes, hold 0, synchronous=NORMAL",
                     fontsize=10)
        ax.grid(True, which="both", linewidth=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    print(f"chart: {path}")


def report(path):
    """The tables of docs/benchmarks.md from a --json file: the headline
    (synchronous=NORMAL) and every other scenario, extension and backoff mode
    against the default handler, median (range) over the rounds, and the
    targets missed."""
    with open(path) as f:
        data = json.load(f)
    results = data["results"]
    print(f"Machine: {data['machine']}.")
    print()

    header = ("| scenario | mode | tx/s ratio | max wait ms (default → mode) | Jain (default → mode) "
              "| CPU/tx ratio | tx p99 ms (default → mode) | errors | targets (worst round) |")
    print(header)
    print("|---|---|---|---|---|---|---|---|---|")
    for item in results:
        summary = item["summary"]
        d = summary["default"]
        for mode in [m for m in summary if m != "default"]:
            e = summary[mode]
            targets = item["scenario"]["targets"] if mode == "hybrid" else {}
            print(f"| {item['scenario']['name']} | {mode} | {fmt(e['tx_ratio'], 2)} | "
                  f"{fmt(d['wait_max_ms'], 0)} → {fmt(e['wait_max_ms'], 1)} | "
                  f"{fmt(d['jain'], 3)} → {fmt(e['jain'], 3)} | {fmt(e['cpu_ratio'], 2)} | "
                  f"{fmt(d['tx_p99_ms'], 1)} → {fmt(e['tx_p99_ms'], 1)} | "
                  f"{fmt(e['errors'], 0)} | {verdict(targets, e) if targets else ''} |")


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import sqlite3
    return (f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
            f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ext", default="dist/libhybrid.so")
    p.add_argument("--modes", default="default,hybrid,backoff")
    p.add_argument("--writers", type=int, default=8)
    p.add_argument("--hold-ms", type=float, default=0.0)
    p.add_argument("--think-ms", type=float, default=0.0)
    p.add_argument("--sync", default="NORMAL", choices=["NORMAL", "FULL", "OFF"])
    p.add_argument("--policy", help="hybrid_busy_config() JSON for the extension's writers")
    p.add_argument("--hog", action="store_true")
    p.add_argument("--threads", action="store_true")
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--suite", choices=sorted(SUITES))
    p.add_argument("--pick", help="run only these scenarios of the suite (indices: 0,3,5)")
    p.add_argument("--only", help="run only scenarios whose name contains this text")
    p.add_argument("--json")
    p.add_argument("--chart")
    p.add_argument("--frontier", action="store_true",
                   help="throughput ratio against longest wait, for several policies")
    p.add_argument("--frontier-writers", default="8,32")
    p.add_argument("--policies", help="JSON list of hybrid_busy_config() objects (--frontier)")
    p.add_argument("--trace-dir", help="keep writer timelines and monitor samples here")
    p.add_argument("--sample-ms", type=float, default=5.0)
    p.add_argument("--no-fifo", action="store_true",
                   help="stall detectors at normal priority (no SCHED_FIFO)")
    # internal
    p.add_argument("--worker", action="store_true")
    p.add_argument("--monitor", action="store_true")
    p.add_argument("--threads-in-process", action="store_true")
    p.add_argument("--writer-id", type=int, default=0)
    p.add_argument("--db")
    p.add_argument("--mode")
    p.add_argument("--start-at", type=float)
    args = p.parse_args()
    if args.worker:
        return worker_main(args)
    if args.monitor:
        return monitor_main(args)
    ext = os.path.abspath(args.ext)
    ext = ext[:-3] if ext.endswith(".so") else ext
    if args.frontier:
        started = time.time()
        print(f"# contention_bench --frontier: {machine()}; {args.rounds} rounds of "
              f"{args.duration:g} s per setting", flush=True)
        frontier = run_frontier(args, ext)
        print(f"\nfrontier run time: {time.time() - started:.0f} s")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": machine(), "frontier": frontier}, f, indent=1)
        if args.chart:
            draw_frontier(frontier, args.chart)
        return None
    modes = args.modes.split(",")
    if modes[0] != "default":
        raise SystemExit("--modes must start with default (ratios are against it)")
    scenarios = (SUITES[args.suite](args.duration) if args.suite else
                 [scenario(f"{args.writers} {'threads' if args.threads else 'writers'}, "
                           f"hold {args.hold_ms:g} ms, think {args.think_ms:g} ms, {args.sync}"
                           + (", CPU hog" if args.hog else ""),
                           writers=args.writers, hold_ms=args.hold_ms, think_ms=args.think_ms,
                           sync=args.sync, hog=args.hog, threads=args.threads,
                           duration=args.duration)])
    if args.pick:
        scenarios = [scenarios[int(i)] for i in args.pick.split(",")]
    if args.only:
        scenarios = [s for s in scenarios if args.only in s["name"]]
    print(f"# contention_bench: {machine()}; {args.rounds} rounds of {args.duration:g} s per mode, "
          f"modes alternating ({', '.join(modes)})", flush=True)
    results = []
    started = time.time()
    with tempfile.TemporaryDirectory() as workdir:
        for n, sc in enumerate(scenarios):
            runs = []
            for rnd in range(args.rounds):
                run = {}
                for mode in modes:
                    trace = (os.path.join(args.trace_dir, f"s{n}r{rnd}-{mode}")
                             if args.trace_dir else None)
                    run[mode] = run_once(sc, mode, ext, workdir, f"s{n}r{rnd}", args.policy,
                                         trace, args.sample_ms)
                    r = run[mode]
                    print(f"  {sc['name']} | round {rnd + 1} | {mode:8} {r['tx_s']:8.0f} tx/s  "
                          f"max wait {r['wait_max_ms']:8.1f} ms  Jain {r['jain']:.3f}  "
                          f"{r['cpu_us_per_tx']:6.0f} µs CPU/tx  errors {r['errors']}"
                          + (f"  hand-offs {r['handoffs_s']:.0f}/s" if r["handoffs_s"] else "")
                          + f"  load {r['loadavg'][0] if r['loadavg'] else '?'}",
                          flush=True)
                runs.append(run)
            results.append({"scenario": sc, "runs": runs, "summary": summarise(runs, modes)})
    print_table(results, modes)
    print(f"\nrun time: {time.time() - started:.0f} s for {len(scenarios)} scenarios")
    if args.json:
        slim = [{"scenario": r["scenario"], "summary": r["summary"],
                 "runs": [{m: {k: v for k, v in run[m].items() if k != "waits_ms"}
                           for m in run} for run in r["runs"]]} for r in results]
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "results": slim}, f, indent=1)
    if args.chart:
        draw_chart(results, modes, args.chart)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--report":
        report(sys.argv[2])
    elif len(sys.argv) > 3 and sys.argv[1] == "--frontier-chart":
        # redraw the frontier from --json files (several: their writer counts side by side)
        frontier = []
        for path in sys.argv[2:-1]:
            with open(path) as f:
                frontier += json.load(f)["frontier"]
        draw_frontier(frontier, sys.argv[-1])
    elif len(sys.argv) > 1 and sys.argv[1] == "--handoffs":
        print(handoffs_main(sys.argv[2], sys.argv[sys.argv.index("--ext") + 1]))
    elif len(sys.argv) > 4 and sys.argv[1] == "--detector":
        detector_main(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4],
                      "--no-fifo" not in sys.argv)
    elif len(sys.argv) > 1 and sys.argv[1] == "--hog":
        args = argparse.Namespace(duration=float(sys.argv[sys.argv.index("--duration") + 1]))
        hog_main(args)
    else:
        main()
