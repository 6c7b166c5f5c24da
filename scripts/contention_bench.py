#!/usr/bin/env python3
"""Multi-process write-contention benchmark: SQLite's default busy handler
vs the hybrid extension, side by side in one run.

N writer processes (Debian python3, each its own connection) share one WAL
file and loop on short transactions:

    BEGIN IMMEDIATE; INSERT one row; [hold the lock H ms]; COMMIT

For each scenario (writers x hold) each mode runs on a fresh file, one after
the other, with the same duration:

  default  sqlite3.connect(timeout=T): SQLite's sqliteDefaultBusyCallback
           (sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms ...).
  hybrid   the extension loaded, policy from --policy (default: the
           extension's own defaults), deadline T. On Linux this is futex
           mode: a queue in the shared side file, wake on release.
  backoff  the same, but with the side file made unusable (a directory in
           its place), so the extension falls back to its jittered backoff.

Reported per mode: committed tx/s, lock errors (SQLITE_BUSY reaching the
caller), lock-wait p50/p99/max (time spent in BEGIN IMMEDIATE), transaction
latency p99, and Jain's fairness index over per-writer commit counts
(1.0 = perfectly even, 1/N = one writer got everything), and the CPU the
writer processes used (user + system seconds / duration; includes Python's
own work and start-up). The last columns are hybrid/default ratios.

Scenarios beyond writers x hold:
  --priorities mixed   odd-numbered writers run as 'background' in the hybrid
                       mode; waits are also reported per class.
  --kill-one           writer 0 is killed (SIGKILL) half-way through, in both
                       modes; the others must see no errors and no stall.
  --suite issue6       every scenario of issue #6: 2/8/32 writers x hold
                       0/0.1/1 ms, plus mixed priorities and kill-one at 8
                       writers and hold 1 ms.

Usage:
  contention_bench.py --ext dist/libhybrid.so [--writers 8] [--hold-ms 0,1]
                      [--duration 5] [--policy JSON] [--json out.json]
                      [--priorities mixed] [--kill-one] [--suite issue6]
"""
import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

TIMEOUT_S = 30.0  # deadline for both modes: long enough that errors mean starvation


def worker(args):
    """One writer process; prints its results as one JSON line."""
    conn = sqlite3.connect(args.db, isolation_level=None, timeout=TIMEOUT_S,
                           check_same_thread=False)
    if args.mode in ("hybrid", "backoff"):
        conn.enable_load_extension(True)
        conn.load_extension(args.ext)
        policy = json.loads(args.policy) if args.policy else {}
        policy["timeout_ms"] = TIMEOUT_S * 1000
        conn.execute("SELECT hybrid_busy_config(?)", (json.dumps(policy),))
        if args.priority:
            conn.execute("SELECT hybrid_priority(?)", (args.priority,))
    hold_s = args.hold_ms / 1000.0
    payload = "x" * 100
    # Start together: sleep until the shared wall-clock start time.
    time.sleep(max(0.0, args.start_at - time.time()))
    end = time.perf_counter() + args.duration
    commits, errors = 0, 0
    waits_ms, latencies_ms = [], []
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            errors += 1
            continue
        t1 = time.perf_counter()
        conn.execute("INSERT INTO t(writer, payload) VALUES (?, ?)", (args.writer_id, payload))
        if hold_s > 0:
            time.sleep(hold_s)
        conn.execute("COMMIT")
        t2 = time.perf_counter()
        if t2 <= end:
            commits += 1
        waits_ms.append(round((t1 - t0) * 1000, 3))
        latencies_ms.append(round((t2 - t0) * 1000, 3))
    cpu = os.times()
    print(json.dumps({"writer": args.writer_id, "commits": commits, "errors": errors,
                      "cpu_s": cpu.user + cpu.system,
                      "waits_ms": waits_ms, "latencies_ms": latencies_ms}))


def quantile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[index]


def jain(counts):
    total = sum(counts)
    squares = sum(c * c for c in counts)
    return (total * total) / (len(counts) * squares) if squares else 0.0


def run_mode(mode, writers, hold_ms, duration, ext, policy, workdir, mixed=False, kill_one=False):
    tag = ("-mixed" if mixed else "") + ("-kill" if kill_one else "")
    db = os.path.join(workdir, f"{mode}-{writers}w-{hold_ms}ms{tag}.db")
    init = sqlite3.connect(db, isolation_level=None)
    init.execute("PRAGMA journal_mode=WAL")
    init.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, writer INTEGER, payload TEXT)")
    init.close()
    if mode == "backoff":
        os.mkdir(db + "-hybrid")  # no side file: the extension falls back to backoff
    start_at = time.time() + 0.5 + 0.05 * writers
    priority = lambda i: "background" if mixed and mode != "default" and i % 2 == 1 else ""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", "--db", db, "--mode", mode,
             "--writer-id", str(i), "--hold-ms", str(hold_ms), "--duration", str(duration),
             "--start-at", str(start_at), "--ext", ext or "", "--policy", policy or "",
             "--priority", priority(i)],
            stdout=subprocess.PIPE, text=True)
        for i in range(writers)
    ]
    if kill_one:
        time.sleep(max(0.0, start_at + duration / 2 - time.time()))
        procs[0].kill()
    results = []
    for i, p in enumerate(procs):
        out, _ = p.communicate()
        if kill_one and i == 0:
            continue  # killed mid-run: no report
        if p.returncode != 0:
            raise SystemExit(f"worker failed ({mode}): exit {p.returncode}")
        result = json.loads(out.strip().splitlines()[-1])
        result["class"] = "background" if priority(i) else "interactive"
        results.append(result)
    rows = sqlite3.connect(db).execute("SELECT count(*) FROM t WHERE writer != 0 OR ?", (not kill_one,)).fetchone()[0]
    waits = sorted(w for r in results for w in r["waits_ms"])
    latencies = sorted(x for r in results for x in r["latencies_ms"])
    counts = [r["commits"] for r in results]
    committed_rows = sum(len(r["waits_ms"]) for r in results)
    if rows != committed_rows:
        raise SystemExit(f"{mode}: {rows} rows in the file but {committed_rows} commits reported")
    by_class = {}
    for cls in ("interactive", "background"):
        w = sorted(x for r in results if r["class"] == cls for x in r["waits_ms"])
        if w:
            by_class[cls] = {"p99": quantile(w, 0.99), "max": w[-1]}
    return {
        "mode": mode, "writers": writers, "hold_ms": hold_ms, "duration_s": duration,
        "scenario": ("mixed priorities" if mixed else "") + ("kill one" if kill_one else ""),
        "tx_per_s": sum(counts) / duration,
        "errors": sum(r["errors"] for r in results),
        "wait_p50_ms": quantile(waits, 0.50), "wait_p99_ms": quantile(waits, 0.99),
        "wait_max_ms": waits[-1] if waits else float("nan"),
        "latency_p99_ms": quantile(latencies, 0.99),
        "jain": jain(counts), "min_commits": min(counts), "max_commits": max(counts),
        "cpu_cores": sum(r["cpu_s"] for r in results) / duration,
        "by_class": by_class,
    }


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
            f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--writer-id", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--ext", default=os.environ.get("HYBRID_EXT", "dist/libhybrid.so"),
                    help="path of the loadable extension")
    ap.add_argument("--writers", default="8", help="comma-separated writer counts (default 8)")
    ap.add_argument("--hold-ms", default="1,0", help="comma-separated lock hold times in ms (default 1,0)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per mode and scenario (default 5)")
    ap.add_argument("--policy", default="", help="JSON policy for the hybrid mode (default: extension defaults)")
    ap.add_argument("--modes", default="default,hybrid", help="modes to run (default: default,hybrid)")
    ap.add_argument("--json", help="also write all results to this file")
    ap.add_argument("--priority", default="", help=argparse.SUPPRESS)
    ap.add_argument("--priorities", default="", help="'mixed': odd writers run as background")
    ap.add_argument("--kill-one", action="store_true", help="kill writer 0 half-way through")
    ap.add_argument("--suite", default="", help="'issue6': every scenario of issue #6")
    args = ap.parse_args()

    if args.worker:
        args.hold_ms = float(args.hold_ms)
        return worker(args)

    ext = os.path.abspath(args.ext)
    if args.modes != "default" and not os.path.exists(ext):
        raise SystemExit(f"{ext} not found: run `make ext` first")
    ext_arg = ext[:-3] if ext.endswith(".so") else ext
    modes = args.modes.split(",")
    workdir = tempfile.mkdtemp(prefix="hybrid-bench-")
    print(f"# contention benchmark, {time.strftime('%Y-%m-%d %H:%M')}; machine: {machine()}")
    print(f"# policy: {args.policy or 'extension defaults'}; {args.duration:g} s per mode\n")
    header = ("| writers | hold ms | mode | tx/s | errors | wait p50 ms | wait p99 ms | wait max ms "
              "| tx p99 ms | Jain | min/max commits | CPU cores | tx/s ratio | max-wait ratio |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    all_results = []
    scenarios = [(int(w), float(h), args.priorities == "mixed", args.kill_one)
                 for w in args.writers.split(",") for h in args.hold_ms.split(",")]
    if args.suite == "issue6":
        scenarios = [(w, h, False, False) for w in (2, 8, 32) for h in (0.0, 0.1, 1.0)]
        scenarios += [(8, 1.0, True, False), (8, 1.0, False, True)]
    try:
        for writers, hold_ms, mixed, kill_one in scenarios:
            base = None
            for mode in modes:
                r = run_mode(mode, writers, hold_ms, args.duration, ext_arg, args.policy, workdir, mixed, kill_one)
                all_results.append(r)
                if mode == "default":
                    base = r
                ratio = (f"{r['tx_per_s'] / base['tx_per_s']:.2f}" if base and mode != "default" else "")
                max_ratio = (f"{r['wait_max_ms'] / base['wait_max_ms']:.3f}"
                             if base and mode != "default" and base["wait_max_ms"] else "")
                label = f"{writers}" + (" mixed" if mixed else "") + (" kill-1" if kill_one else "")
                print(f"| {label} | {hold_ms:g} | {mode} | {r['tx_per_s']:.0f} | {r['errors']} "
                      f"| {r['wait_p50_ms']:.2f} | {r['wait_p99_ms']:.1f} | {r['wait_max_ms']:.1f} "
                      f"| {r['latency_p99_ms']:.1f} | {r['jain']:.3f} "
                      f"| {r['min_commits']}/{r['max_commits']} | {r['cpu_cores']:.2f} | {ratio} | {max_ratio} |",
                      flush=True)
                if mixed and mode != "default":
                    c = r["by_class"]
                    print(f"|  | | (interactive p99/max {c['interactive']['p99']:.1f}/{c['interactive']['max']:.1f} ms, "
                          f"background {c['background']['p99']:.1f}/{c['background']['max']:.1f} ms) | | | | | | | | | | | |",
                          flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "policy": args.policy, "results": all_results}, f, indent=1)


if __name__ == "__main__":
    main()
