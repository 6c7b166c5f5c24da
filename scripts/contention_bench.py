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
  hybrid   the extension loaded (its defaults), deadline 30 s: futex mode.
  backoff  the extension with its side file made unusable (a directory in
           its place): its jittered backoff with aging.

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

Usage:
  contention_bench.py --ext dist/libhybrid.so [scenario knobs] [--rounds 3]
                      [--duration 4] [--modes default,hybrid,backoff]
                      [--suite issue12] [--json out.json] [--chart out.svg]
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
def open_connection(db, mode, ext, sync, policy=None):
    import sqlite3
    conn = sqlite3.connect(db, isolation_level=None, timeout=TIMEOUT_S,
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


def write_loop(conn, writer_id, hold_s, think_s, start_at, duration, cpu_clock):
    """One writer's loop; returns its results."""
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
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            errors += 1
            continue
        t1 = time.perf_counter()
        conn.execute("INSERT INTO t(writer, payload) VALUES (?, ?)", (writer_id, payload))
        if hold_s > 0:
            time.sleep(hold_s)
        conn.execute("COMMIT")
        t2 = time.perf_counter()
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
    t = os.times()
    return t.user + t.system


def worker_main(args):
    """A writer process (or, with --threads, a process of writer threads)."""
    if args.threads_in_process:
        results = [None] * args.writers
        def run(i):
            conn = open_connection(args.db, args.mode, args.ext, args.sync, args.policy)
            results[i] = write_loop(conn, i, args.hold_ms / 1000, args.think_ms / 1000,
                                    args.start_at, args.duration, time.thread_time)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(args.writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in results:
            print(json.dumps(r))
        return
    conn = open_connection(args.db, args.mode, args.ext, args.sync, args.policy)
    print(json.dumps(write_loop(conn, args.writer_id, args.hold_ms / 1000, args.think_ms / 1000,
                                args.start_at, args.duration, process_cpu)))


def hog_main(args):
    """A CPU-bound process beside the writers (a busy machine)."""
    end = time.time() + args.duration
    x = 0
    while time.time() < end:
        for i in range(10000):
            x = (x * 31 + i) % 1000003


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


def run_once(scenario, mode, ext, workdir, tag, policy=None):
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
    me = [sys.executable, os.path.abspath(__file__)]
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
    results = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"writer failed ({mode}): exit {p.returncode}")
        results.extend(json.loads(line) for line in out.strip().splitlines())
    if hog:
        hog.kill()
        hog.wait()
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
    p.add_argument("--suite", choices=["issue12"])
    p.add_argument("--only", help="run only scenarios whose name contains this text")
    p.add_argument("--json")
    p.add_argument("--chart")
    # internal
    p.add_argument("--worker", action="store_true")
    p.add_argument("--threads-in-process", action="store_true")
    p.add_argument("--writer-id", type=int, default=0)
    p.add_argument("--db")
    p.add_argument("--mode")
    p.add_argument("--start-at", type=float)
    args = p.parse_args()
    if args.worker:
        return worker_main(args)
    ext = os.path.abspath(args.ext)
    ext = ext[:-3] if ext.endswith(".so") else ext
    modes = args.modes.split(",")
    if modes[0] != "default":
        raise SystemExit("--modes must start with default (ratios are against it)")
    scenarios = (issue12_suite(args.duration) if args.suite else
                 [scenario(f"{args.writers} {'threads' if args.threads else 'writers'}, "
                           f"hold {args.hold_ms:g} ms, think {args.think_ms:g} ms, {args.sync}"
                           + (", CPU hog" if args.hog else ""),
                           writers=args.writers, hold_ms=args.hold_ms, think_ms=args.think_ms,
                           sync=args.sync, hog=args.hog, threads=args.threads,
                           duration=args.duration)])
    if args.only:
        scenarios = [s for s in scenarios if args.only in s["name"]]
    print(f"# contention_bench: {machine()}; {args.rounds} rounds of {args.duration:g} s per mode, "
          f"modes alternating ({', '.join(modes)})", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for n, sc in enumerate(scenarios):
            runs = []
            for rnd in range(args.rounds):
                run = {}
                for mode in modes:
                    run[mode] = run_once(sc, mode, ext, workdir, f"s{n}r{rnd}", args.policy)
                    r = run[mode]
                    print(f"  {sc['name']} | round {rnd + 1} | {mode:8} {r['tx_s']:8.0f} tx/s  "
                          f"max wait {r['wait_max_ms']:8.1f} ms  Jain {r['jain']:.3f}  "
                          f"{r['cpu_us_per_tx']:6.0f} µs CPU/tx  errors {r['errors']}"
                          + (f"  hand-offs {r['handoffs_s']:.0f}/s" if r["handoffs_s"] else ""),
                          flush=True)
                runs.append(run)
            results.append({"scenario": sc, "runs": runs, "summary": summarise(runs, modes)})
    print_table(results, modes)
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
    elif len(sys.argv) > 1 and sys.argv[1] == "--handoffs":
        print(handoffs_main(sys.argv[2], sys.argv[sys.argv.index("--ext") + 1]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--hog":
        args = argparse.Namespace(duration=float(sys.argv[sys.argv.index("--duration") + 1]))
        hog_main(args)
    else:
        main()
