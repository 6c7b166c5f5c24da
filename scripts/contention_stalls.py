#!/usr/bin/env python3
"""The stall hunt of issue 26: many short runs of 8 writer processes on one
WAL file with the extension (futex mode), every wait over a threshold
explained from a trace.

Each run is contention_bench.py's run with --trace-dir: every writer's
timeline (when each BEGIN IMMEDIATE started and returned, when its COMMIT
returned, its CPU clock at both, on the monotonic clock all processes
share), a monitor's samples of hybrid_lock_holder and hybrid_lock_waiters
every --sample-ms, one stall detector per CPU (a SCHED_FIFO thread pinned
to it that sleeps 1 ms in a loop and records every oversleep over 20 ms:
that CPU ran nothing of this machine's for that long), the load average and
the hypervisor's steal time.

For every wait over --threshold-ms (default 200) the analysis gives:
* who held the lock during it: every other writer's transactions that
  overlap it (count, total and longest hold, and the CPU the longest
  holder used while holding: a hold with little CPU was a holder that did
  not run), and the time nobody held it (idle);
* who was head and where the waiter stood, from the monitor's samples
  (runs of the same state), and whether the waiter was stale;
* the stall detectors' gaps that overlap it.
and a class:
* `machine stall`: stall detectors show the machine stopped for most of
  the wait (without the gap the wait would be under the threshold);
* `holder off CPU`: one transaction held the lock for most of the wait
  while using little CPU, and no detector gap: the holder was runnable
  but not running (preempted on a loaded machine) or blocked in I/O;
* `waiter off CPU`: the lock went round while the waiter was stale (not
  running), so the queue skipped it, as designed;
* `queue: passed over`: others took several turns each while the waiter
  was live and queued: a bug in the queue;
* `queue: lock idle`: the lock was free for most of the wait while the
  waiter waited and the machine ran: a missed wake-up, a bug;
* `unexplained`: none of these (shown with its full evidence).

Usage (each invocation appends to DIR/runs.jsonl, so a long hunt can be
split into short runs):
  contention_stalls.py run --ext dist/libhybrid.so --out DIR --hold-ms 0 --runs 10
  contention_stalls.py report DIR
  contention_stalls.py timeline TRACE_DIR   (commits per 500 ms over one run)
"""
import argparse
import glob
import json
import os
import shutil
import sys
import time
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contention_bench as cb  # noqa: E402


# ------------------------------------------------------------ the trace
def load_trace(trace_dir):
    writers = []
    for meta_path in sorted(glob.glob(os.path.join(trace_dir, "w*.json"))):
        with open(meta_path) as f:
            meta = json.load(f)
        tl = array("d")
        with open(meta_path[:-5] + ".bin", "rb") as f:
            tl.frombytes(f.read())
        meta["tx"] = [tuple(tl[i:i + 5]) for i in range(0, len(tl), 5)]
        writers.append(meta)
    writers.sort(key=lambda x: x["writer"])  # list index = writer id
    monitor = {}
    path = os.path.join(trace_dir, "monitor.json")
    if os.path.exists(path):
        with open(path) as f:
            monitor = json.load(f)
    return writers, monitor


def union_length(intervals, lo, hi):
    """Length of the union of `intervals` clipped to [lo, hi], and the
    longest uncovered stretch (start, end)."""
    clipped = sorted((max(a, lo), min(b, hi)) for a, b in intervals if b > lo and a < hi)
    covered, cursor, gap = 0.0, lo, (lo, lo)
    for a, b in clipped:
        if a > cursor and a - cursor > gap[1] - gap[0]:
            gap = (cursor, a)
        if b > cursor:
            covered += b - max(a, cursor)
            cursor = b
    if hi - cursor > gap[1] - gap[0]:
        gap = (cursor, hi)
    return covered, gap


def explain(writers, monitor, w, i, threshold_ms):
    """The evidence and class of writer `w`'s transaction `i` wait."""
    me = writers[w]
    t0, t1 = me["tx"][i][0], me["tx"][i][1]
    wait_ms = (t1 - t0) * 1000
    pid_of = {x["pid"]: x["writer"] for x in writers}
    holds = []  # (start, end, writer, cpu during the hold)
    for other in writers:
        if other is me:
            continue
        for (a0, a1, a2, c1, c2) in other["tx"]:
            if a2 > t0 and a1 < t1:
                holds.append((a1, a2, other["writer"], c2 - c1))
    holds.sort()
    covered, gap = union_length([(a, b) for a, b, _, _ in holds], t0, t1)
    per_writer = {}
    for a, b, k, _ in holds:
        per_writer[k] = per_writer.get(k, 0) + 1
    longest = max(holds, key=lambda h: h[1] - h[0]) if holds else None
    # holder changes: turns taken while we waited
    turns, last = 0, None
    for _, _, k, _ in holds:
        if k != last:
            turns += 1
            last = k
    gaps = [(cpu, a, b) for cpu, a, b in monitor.get("gaps", []) if b > t0 and a < t1]
    stalled = union_length([(a, b) for _, a, b in gaps], t0, t1)[0] * 1000
    # the monitor's samples during the wait, as runs of one state
    my_pid = me["pid"]
    states, stale_seen = [], False
    for t, holder, waiting in monitor.get("samples", []):
        if t < t0 or t > t1:
            continue
        if holder and holder[0] is None:
            holder = None  # free, or held by a connection without the extension
        head = next((x for x in waiting if x[2]), None)
        mine = next((x for x in waiting if x[0] == my_pid), None)
        stale_seen |= bool(mine and mine[4])
        state = (pid_of.get(holder[0], holder[0]) if holder else None,
                 pid_of.get(head[0], head[0]) if head else None,
                 mine[1] if mine else None, bool(mine and mine[4]), len(waiting))
        held = holder[1] if holder and holder[1] is not None else 0
        at = round((t - t0) * 1000, 1)
        if states and tuple(states[-1][1:6]) == state:
            states[-1][0][1] = at
            states[-1][6] = max(states[-1][6], held)
        else:
            states.append([[at, at], *state, held])
    barged_ms, barge_heads = barge_stretches(writers, monitor, holds, t0, t1)
    longest_sched = {}
    if longest:
        k = longest[2]
        series = monitor.get("schedstat", {}).get(str(writers[k]["pid"]), [])
        inside = [x for x in series
                  if longest[0] - 0.003 <= x[0] <= longest[1] + SCHED_TAIL_S]
        if len(inside) >= 2:
            longest_sched = {
                "sampled_ms": round((inside[-1][0] - inside[0][0]) * 1000, 1),
                "ran_ms": round((inside[-1][1] - inside[0][1]) / 1e6, 2),
                "runnable_not_running_ms": round((inside[-1][2] - inside[0][2]) / 1e6, 1)}
    wait_cpu_ms = None
    if i > 0:
        wait_cpu_ms = (me["tx"][i][3] - me["tx"][i - 1][4]) * 1000
    # time the writers that held the lock during the wait spent runnable
    # but not running over it (scheduler delay, summed over them)
    held_by = {k for _, _, k, _ in holds}
    holders_runnable_ms = 0.0
    for k in held_by:
        series = monitor.get("schedstat", {}).get(str(writers[k]["pid"]), [])
        inside = [x for x in series if t0 <= x[0] <= t1 + SCHED_TAIL_S]
        if len(inside) >= 2:
            holders_runnable_ms += (inside[-1][2] - inside[0][2]) / 1e6
    # the monitor (a process at normal priority) not sampling for long: the
    # machine ran none of its processes then
    all_times = [t for t, _, _ in monitor.get("samples", [])]
    before = [t for t in all_times if t <= t0]
    after = [t for t in all_times if t >= t1]
    times = (before[-1:] + [t for t in all_times if t0 < t < t1] + after[:1])
    # clipped to the wait: a gap that covers the wait counts as the wait
    monitor_gap_ms = max((min(b, t1) - max(a, t0) for a, b in zip(times, times[1:])),
                         default=0.0) * 1000 if all_times else 0.0
    evidence = {
        "writer": w, "pid": my_pid, "wait_ms": round(wait_ms, 1),
        "at_s": round(t0 - min(x["tx"][0][0] for x in writers if x["tx"]), 3),
        "waiter_cpu_ms": None if wait_cpu_ms is None else round(wait_cpu_ms, 2),
        "holds": len(holds), "held_ms": round(covered * 1000, 1),
        "idle_ms": round(wait_ms - covered * 1000, 1),
        "longest_idle_ms": round((gap[1] - gap[0]) * 1000, 1),
        "longest_idle_at_ms": round((gap[0] - t0) * 1000, 1),
        "turns": turns, "tx_per_writer": per_writer,
        "longest_hold": None if not longest else {
            "writer": longest[2], "ms": round((longest[1] - longest[0]) * 1000, 1),
            "cpu_ms": round(longest[3] * 1000, 2),
            "at_ms": round((longest[0] - t0) * 1000, 1), **longest_sched},
        "stall_ms": round(stalled, 1),
        "holders_runnable_ms": round(holders_runnable_ms, 1),
        "monitor_gap_ms": round(monitor_gap_ms, 1),
        "stall_gaps": [(cpu, round((a - t0) * 1000, 1), round((b - a) * 1000, 1))
                       for cpu, a, b in gaps],
        "waiter_stale": stale_seen,
        # time the lock went round as single transactions of a writer that
        # had yielded in vain (YIELD_MAX) to a head that did not take it
        "barged_ms": round(barged_ms, 1),
        # the heads of those stretches: writer, its wait, its CPU in that
        # wait, and the extension's CPU budget for a wait that long
        "barge_heads": barge_heads,
        # [from_ms, to_ms] into the wait, holder writer, head writer, the
        # waiter's position, waiter stale, queue length, longest held_ms seen
        "samples": states[:40],
    }
    evidence["class"] = classify(evidence, threshold_ms, len(writers))
    return evidence


# /proc/PID/schedstat adds a task's time runnable but not running when it
# next gets a CPU: a window over a wait reaches this far past its end.
SCHED_TAIL_S = 0.015
BURST_MS, RATE = 2.0, 0.01  # the extension's CPU budget of one wait (ext/src/budget.rs)
YIELD_MS = (1.9, 3.5)  # a yield in vain lasts YIELD_MAX (2 ms) plus scheduling


def barge_stretches(writers, monitor, holds, t0, t1):
    """Stretches of the wait in which the lock was free for a head that did
    not take it: one writer's single transactions, each after a wait of
    about YIELD_MAX (it yielded to the head in vain, then took the lock for
    one transaction). Returns their total length (ms) and the heads of
    those stretches (from the monitor) with their CPU against the budget."""
    by_writer = {x["writer"]: x for x in writers}
    singles = []
    for a, b, k, _ in holds:
        tx = next((t for t in by_writer[k]["tx"] if t[1] == a), None)
        if tx and YIELD_MS[0] <= (tx[1] - tx[0]) * 1000 <= YIELD_MS[1]:
            singles.append((tx[0], tx[2], k))
    total, spans = 0.0, []
    for start, end, k in singles:
        if spans and spans[-1][2] == k and start - spans[-1][1] < 0.001:
            spans[-1][1] = end
        else:
            spans.append([start, end, k])
    pid_of = {x["pid"]: x["writer"] for x in writers}
    heads = {}
    for start, end, _ in spans:
        if end - start < 0.010:
            continue  # one or two yields: scheduling noise
        total += min(end, t1) - max(start, t0)
        for t, _, waiting in monitor.get("samples", []):
            if start <= t <= end:
                head = next((x for x in waiting if x[2]), None)
                if head and head[0] in pid_of:
                    heads.setdefault(pid_of[head[0]], (start, end))
    out = []
    for k, (start, end) in heads.items():
        tx = by_writer[k]["tx"]
        for j in range(1, len(tx)):
            if tx[j][0] <= start and tx[j][1] >= start:
                wait = (tx[j][1] - tx[j][0]) * 1000
                cpu = (tx[j][3] - tx[j - 1][4]) * 1000
                head = {"writer": k, "wait_ms": round(wait, 1), "cpu_ms": round(cpu, 2),
                        "budget_ms": round(BURST_MS + RATE * wait, 2)}
                # over its wait: time on a CPU and time runnable but not run
                series = monitor.get("schedstat", {}).get(str(by_writer[k]["pid"]), [])
                # run_delay is added when the task next gets a CPU: take
                # the samples up to a little after the wait ended
                inside = [x for x in series if tx[j][0] <= x[0] <= tx[j][1] + SCHED_TAIL_S]
                if len(inside) >= 2:
                    head["sampled_ms"] = round((inside[-1][0] - inside[0][0]) * 1000, 1)
                    head["ran_ms"] = round((inside[-1][1] - inside[0][1]) / 1e6, 2)
                    head["runnable_not_running_ms"] = round((inside[-1][2] - inside[0][2]) / 1e6, 1)
                out.append(head)
                break
    return total * 1000, out


def classify(e, threshold_ms, writers):
    wait = e["wait_ms"]
    if e["stall_ms"] > 0 and wait - e["stall_ms"] < threshold_ms:
        return "machine stall"
    starved = (e.get("monitor_gap_ms", 0) > wait / 3
               or e.get("holders_runnable_ms", 0) > wait / 2)
    hold = e["longest_hold"]
    if hold and hold["ms"] > wait / 3 and hold.get("runnable_not_running_ms", 0) > hold["ms"] / 2:
        return "holder runnable but not run (machine)"
    if e.get("barged_ms", 0) > wait / 3:
        heads = e["barge_heads"]
        if any(h.get("runnable_not_running_ms", 0) > 0.5 * h["wait_ms"] for h in heads):
            return "head runnable but not run (machine), lock free meanwhile"
        if any(h["cpu_ms"] > h["budget_ms"] for h in heads):
            return "queue: head paused by its CPU budget, lock free"
        if not heads and starved:
            return "processes runnable but not run (machine; the monitor too)"
        return "queue: head did not take the free lock"
    hold = e["longest_hold"]
    if hold and wait - hold["ms"] < threshold_ms:
        if hold.get("runnable_not_running_ms", 0) > 0.5 * hold["ms"]:
            return "holder runnable but not run (machine)"
        if hold["cpu_ms"] < 0.5 * hold["ms"]:
            return "holder off CPU"
        return "holder slow on CPU"
    if starved:
        return "processes runnable but not run (machine; the monitor too)"
    if e["turns"] > 2 * writers:
        return "waiter off CPU" if e["waiter_stale"] else "queue: passed over"
    if e["longest_idle_ms"] > wait / 2:
        return "queue: lock idle"
    return "unexplained"


def wait_index(writer, wait_ms):
    """The index of `writer`'s transaction whose wait was `wait_ms` (rounded)."""
    for i, tx in enumerate(writer["tx"]):
        if abs((tx[1] - tx[0]) * 1000 - wait_ms) < 0.06:
            return i
    return None


# ------------------------------------------------------------- commands
def run(args):
    os.makedirs(args.out, exist_ok=True)
    ext = os.path.abspath(args.ext)
    ext = ext[:-3] if ext.endswith(".so") else ext
    sc = cb.scenario(f"8 writers, hold {args.hold_ms:g} ms, NORMAL", writers=args.writers,
                     hold_ms=args.hold_ms, duration=args.duration)
    import tempfile
    with tempfile.TemporaryDirectory() as workdir:
        for n in range(args.runs):
            tag = f"h{args.hold_ms:g}-{time.strftime('%H%M%S')}-{n}"
            trace_dir = os.path.join(args.out, tag)
            r = cb.run_once(sc, "hybrid", ext, workdir, tag, None, trace_dir, args.sample_ms)
            writers, monitor = load_trace(trace_dir)
            long_waits = []
            for w, meta in enumerate(writers):
                for i, tx in enumerate(meta["tx"]):
                    if (tx[1] - tx[0]) * 1000 > args.threshold_ms:
                        long_waits.append(explain(writers, monitor, w, i, args.threshold_ms))
            gaps = monitor.get("gaps", [])
            record = {
                "tag": tag, "hold_ms": args.hold_ms, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                         time.gmtime()),
                "tx_s": round(r["tx_s"]), "wait_max_ms": round(r["wait_max_ms"], 1),
                "wait_p99_ms": round(r["wait_p99_ms"], 2), "errors": r["errors"],
                "loadavg": r["loadavg"], "steal_share": round(r["steal_share"], 4),
                "handoffs_s": r["handoffs_s"], "jain": round(r["jain"], 4),
                "stall_gaps": len(gaps), "detectors_fifo": monitor.get("fifo"),
                "longest_stall_ms": round(max(((b - a) * 1000 for _, a, b in gaps), default=0), 1),
                "slow_events": [e for x in writers for e in x["slow_events"]],
                "nivcsw": [x["nivcsw"] for x in writers],
                "long_waits": long_waits,
            }
            with open(os.path.join(args.out, "runs.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"{tag}: {record['tx_s']} tx/s, max wait {record['wait_max_ms']} ms, "
                  f"load {r['loadavg'][0] if r['loadavg'] else '?'}, steal "
                  f"{record['steal_share']:.1%}, stall gaps {len(gaps)} (longest "
                  f"{record['longest_stall_ms']} ms), waits > {args.threshold_ms:g} ms: "
                  + (", ".join(f"{e['wait_ms']} ms [{e['class']}]" for e in long_waits)
                     or "none"), flush=True)
            if not long_waits and not args.keep:
                shutil.rmtree(trace_dir)  # the timelines are large; keep the explained ones


def report(args):
    with open(os.path.join(args.dir, "runs.jsonl")) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    for r in runs:
        trace_dir = os.path.join(args.dir, r["tag"])
        if r["long_waits"] and os.path.isdir(trace_dir):
            writers, monitor = load_trace(trace_dir)
            r["long_waits"] = [explain(writers, monitor, e["writer"], i, args.threshold_ms)
                               for e in r["long_waits"]
                               for i in [wait_index(writers[e["writer"]], e["wait_ms"])]
                               if i is not None]
    for hold in sorted({r["hold_ms"] for r in runs}):
        rs = [r for r in runs if r["hold_ms"] == hold]
        waits = [e for r in rs for e in r["long_waits"]]
        classes = {}
        for e in waits:
            classes[e["class"]] = classes.get(e["class"], 0) + 1
        maxima = sorted(r["wait_max_ms"] for r in rs)
        tx = sorted(r["tx_s"] for r in rs)
        loads = sorted(r["loadavg"][0] for r in rs if r["loadavg"])
        print(f"hold {hold:g} ms: {len(rs)} runs; tx/s {tx[0]}–{tx[-1]} (median "
              f"{tx[len(tx) // 2]}); longest wait per run {maxima[0]}–{maxima[-1]} ms (median "
              f"{maxima[len(maxima) // 2]}); load average {loads[0]}–{loads[-1]}; runs with a "
              f"detector gap: {sum(1 for r in rs if r['stall_gaps'])} (longest "
              f"{max(r['longest_stall_ms'] for r in rs)} ms); runs with a wait over the "
              f"threshold: {sum(1 for r in rs if r['long_waits'])}; waits over it: {len(waits)}")
        for cls, n in sorted(classes.items(), key=lambda kv: -kv[1]):
            over = sum(1 for e in waits if e["class"] == cls and e["wait_ms"] > args.over_ms)
            print(f"  {n:4}  {cls}  ({over} of them over {args.over_ms:g} ms)")
        for e in sorted(waits, key=lambda e: -e["wait_ms"])[:args.examples]:
            run_tag = next(r["tag"] for r in rs if e in r["long_waits"])
            print(f"  example {run_tag}: {json.dumps(e)}")


def timeline(args):
    """Commits per window over one traced run (a --trace-dir of a run):
    how throughput moves within a run (a fresh file's WAL growing, the
    first checkpoints), and the slowest COMMITs (a checkpoint runs inside
    the COMMIT that crosses wal_autocheckpoint)."""
    writers, _ = load_trace(args.trace_dir)
    txs = sorted(t for x in writers for t in x["tx"])
    if not txs:
        return
    start, window = txs[0][0], args.window_ms / 1000
    counts = {}
    for t in txs:
        counts[int((t[2] - start) / window)] = counts.get(int((t[2] - start) / window), 0) + 1
    print(" ".join(f"{counts.get(k, 0) / window:.0f}" for k in range(max(counts) + 1)))
    slow = sorted(((t[2] - t[1]) * 1000, (t[1] - start)) for t in txs)[-args.slowest:]
    print("slowest transactions (ms held, at s): "
          + ", ".join(f"{ms:.1f}@{at:.2f}" for ms, at in reversed(slow)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--ext", default="dist/libhybrid.so")
    r.add_argument("--out", required=True)
    r.add_argument("--hold-ms", type=float, default=0.0)
    r.add_argument("--writers", type=int, default=8)
    r.add_argument("--runs", type=int, default=10)
    r.add_argument("--duration", type=float, default=3.0)
    r.add_argument("--threshold-ms", type=float, default=200.0)
    r.add_argument("--sample-ms", type=float, default=5.0)
    r.add_argument("--keep", action="store_true", help="keep every run's timelines")
    q = sub.add_parser("report")
    q.add_argument("dir")
    q.add_argument("--examples", type=int, default=5)
    q.add_argument("--threshold-ms", type=float, default=100.0)
    q.add_argument("--over-ms", type=float, default=200.0,
                   help="also count the waits of each class over this")
    t = sub.add_parser("timeline")
    t.add_argument("trace_dir")
    t.add_argument("--window-ms", type=float, default=500.0)
    t.add_argument("--slowest", type=int, default=5)
    args = p.parse_args()
    return {"run": run, "report": report, "timeline": timeline}[args.command](args)


if __name__ == "__main__":
    main()
