#!/usr/bin/env python3
"""Micro-benchmarks of the Python write buffer and log handler (``make bench``; not a test).

    PYTHONPATH=python python3 scripts/python_buffer_bench.py [--rounds 3] [--json out.json]

Three measurements, side by side in one run, each repeated ``--rounds`` times
(median and range printed), on files in a temporary directory, WAL and
``synchronous=NORMAL`` everywhere:

1. **enqueue**: ``WriteBuffer.upsert`` on one thread, 200,000 calls, keys
   drawn from 1,000 (coalescing) or all distinct; the flusher is idle
   (``flush_interval`` 1 h). Operations per second of wall time and per
   second of this process's CPU time (on a shared machine the wall figure
   says more about the machine than the code). Target: >= 200,000/s on
   CPython 3.11 with coalescing on.
2. **flush**: 100,000 queued distinct upserts written by ``flush()`` (default
   settings: transactions of <= 1,000 entries and <= 20 ms in the lock),
   against a plain ``executemany`` of the same upserts in one transaction.
   Target: buffer >= 0.5x plain. Also the longest and p99 time one buffer
   transaction held the write lock.
3. **log handler**: a paced app (1,000 write transactions/s to its own
   database, each logging 10 records: 10,000 records/s) for ``--seconds``, in
   three modes: logging off (level above the records), a handler that drops
   records (what ``logging`` itself costs), and ``LogHandler`` at defaults. The
   app's per-transaction latency p50/p99 (logging calls included) and the
   handler's written/dropped counts. Target: p99 <= 1.1x off, 0 dropped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

import sqlite_hybrid  # noqa: E402


def connect_factory(path: str):
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    return connect


def new_db(directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty INT, note TEXT)")
    conn.close()
    return path


def bench_enqueue(directory: str, n: int, coalescing: bool) -> dict:
    path = new_db(directory, f"enqueue-{coalescing}-{time.monotonic_ns()}.db")
    buffer = sqlite_hybrid.WriteBuffer(
        connect=connect_factory(path), flush_interval=3600, batch_size=10_000_000, max_pending=10_000_000
    )
    try:
        keys = 1000 if coalescing else n
        upsert = buffer.upsert
        key = ("id",)
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            upsert("items", {"id": i % keys, "name": "item", "qty": i}, key)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stats = buffer.stats()
    finally:
        buffer.close()
    return {"ops_per_s_wall": n / wall, "ops_per_s_cpu": n / cpu, "coalesced": stats.coalesced}


def bench_flush(directory: str, n: int) -> dict:
    rows = [(i, f"item {i}", i, "x" * 20) for i in range(n)]
    sql = (
        "INSERT INTO items(id, name, qty, note) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
        "name = excluded.name, qty = excluded.qty, note = excluded.note"
    )
    plain_path = new_db(directory, f"plain-{time.monotonic_ns()}.db")
    conn = connect_factory(plain_path)()
    wall, cpu = time.perf_counter(), time.process_time()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(sql, rows)
    conn.execute("COMMIT")
    plain_wall, plain_cpu = time.perf_counter() - wall, time.process_time() - cpu
    conn.close()

    # (a) The flush of n queued rows: nothing starts a flush while they are
    # enqueued (batch_size above n), so transactions end on the 20 ms bound.
    path = new_db(directory, f"buffer-{time.monotonic_ns()}.db")
    buffer = sqlite_hybrid.WriteBuffer(connect=connect_factory(path), flush_interval=3600, batch_size=n + 1, max_pending=n + 1)
    try:
        for i, name, qty, note in rows:
            buffer.upsert("items", {"id": i, "name": name, "qty": qty, "note": note}, ("id",))
        wall, cpu = time.perf_counter(), time.process_time()
        buffer.flush(timeout=600)
        flush_wall, flush_cpu = time.perf_counter() - wall, time.process_time() - cpu
        stats = buffer.stats()
    finally:
        buffer.close()
    check = sqlite3.connect(path).execute("SELECT count(*) FROM items").fetchone()[0]
    assert check == n, check
    # (b) End to end with every default (1,000 entries or 20 ms per transaction,
    # 10,000 pending at most, blocking when full): enqueue all, then flush.
    path = new_db(directory, f"buffer-e2e-{time.monotonic_ns()}.db")
    buffer = sqlite_hybrid.WriteBuffer(connect=connect_factory(path))
    try:
        wall = time.perf_counter()
        for i, name, qty, note in rows:
            buffer.upsert("items", {"id": i, "name": name, "qty": qty, "note": note}, ("id",))
        buffer.flush(timeout=600)
        e2e_wall = time.perf_counter() - wall
        e2e = buffer.stats()
    finally:
        buffer.close()
    return {
        "plain_rows_per_s": n / plain_wall,
        "buffer_rows_per_s": n / flush_wall,
        "ratio_wall": plain_wall / flush_wall,
        "ratio_cpu": plain_cpu / flush_cpu if flush_cpu else float("nan"),
        "transactions": stats.flushed_batches,
        "max_lock_ms": stats.max_lock_ms,
        "p99_lock_ms": stats.p99_lock_ms,
        "e2e_rows_per_s": n / e2e_wall,
        "e2e_ratio": plain_wall / e2e_wall,
        "e2e_max_lock_ms": e2e.max_lock_ms,
        "e2e_p99_lock_ms": e2e.p99_lock_ms,
    }


class _DropHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        record.getMessage()


def bench_log(directory: str, mode: str, seconds: float, tx_per_s: int = 1000, lines_per_tx: int = 10) -> dict:
    app_path = new_db(directory, f"app-{mode}-{time.monotonic_ns()}.db")
    logger = logging.getLogger(f"bench.{mode}")
    logger.propagate = False
    handler = None
    if mode == "off":
        logger.setLevel(logging.WARNING)  # the records below are INFO: not emitted
    else:
        logger.setLevel(logging.INFO)
        handler = _DropHandler() if mode == "null" else sqlite_hybrid.LogHandler(os.path.join(directory, f"logs-{time.monotonic_ns()}.db"))
        logger.addHandler(handler)
    conn = connect_factory(app_path)()
    latencies = []
    interval = 1.0 / tx_per_s
    started = time.perf_counter()
    n = 0
    try:
        while True:
            due = started + n * interval
            now = time.perf_counter()
            if now - started >= seconds:
                break
            if due > now:
                time.sleep(due - now)
            began = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO items(name, qty) VALUES (?, ?)", ("order", n))
            conn.execute("COMMIT")
            for k in range(lines_per_tx):
                logger.info("order %d line %d stored", n, k, extra={"order": n, "ms": 0.4})
            latencies.append((time.perf_counter() - began) * 1000.0)
            n += 1
    finally:
        conn.close()
        stats = None
        if handler is not None:
            logger.removeHandler(handler)
            if isinstance(handler, sqlite_hybrid.LogHandler):
                handler.flush(60)
                stats = handler.stats()
            handler.close()
    latencies.sort()
    out = {
        "transactions": n,
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[int(len(latencies) * 0.99)],
        "emitted": n * lines_per_tx if mode != "off" else 0,
    }
    if stats is not None:
        out.update(written=stats.written, dropped=stats.dropped, failed=stats.failed)
    return out


def summary(values: list, fmt: str = "{:,.0f}") -> str:
    values = sorted(values)
    return f"{fmt.format(statistics.median(values))} ({fmt.format(values[0])}–{fmt.format(values[-1])})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--enqueue-ops", type=int, default=200_000)
    parser.add_argument("--flush-rows", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each log-handler run")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--parts", default="buffer,log", help="what to run: buffer, log or both (default)")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
    results: dict = {"enqueue_coalescing": [], "enqueue_distinct": [], "flush": [], "log": {"off": [], "null": [], "handler": []}}
    with tempfile.TemporaryDirectory(prefix="pybuffer-bench-") as directory:
        for round_ in range(args.rounds):
            if "buffer" in args.parts:
                results["enqueue_coalescing"].append(bench_enqueue(directory, args.enqueue_ops, True))
                results["enqueue_distinct"].append(bench_enqueue(directory, args.enqueue_ops, False))
                results["flush"].append(bench_flush(directory, args.flush_rows))
            if "log" in args.parts:
                for mode in ("off", "null", "handler"):  # interleaved, so load changes hit every mode
                    results["log"][mode].append(bench_log(directory, mode, args.seconds))
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)

    if "buffer" in args.parts:
        print_buffer(results, args)
    if "log" in args.parts:
        print_log(results)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as out:
            json.dump({"load_average": load, "python": sys.version, "results": results}, out, indent=1)


def col(rows: list, key: str) -> list:
    return [r[key] for r in rows]


def print_buffer(results: dict, args: argparse.Namespace) -> None:
    print("\n| measure | median (range) | target |\n|---|---|---|")
    for name, key in (("coalescing keys (1,000)", "enqueue_coalescing"), ("distinct keys", "enqueue_distinct")):
        r = results[key]
        print(f"| enqueue, {name}, ops/s of wall time | {summary(col(r, 'ops_per_s_wall'))} | ≥ 200,000 (coalescing) |")
        print(f"| enqueue, {name}, ops/s of CPU time | {summary(col(r, 'ops_per_s_cpu'))} | |")
    f = results["flush"]
    print(f"| plain executemany, one transaction, rows/s | {summary(col(f, 'plain_rows_per_s'))} | |")
    print(f"| buffer flush (default settings), rows/s | {summary(col(f, 'buffer_rows_per_s'))} | |")
    print(f"| buffer / plain (wall) | {summary(col(f, 'ratio_wall'), '{:.2f}')} | ≥ 0.5 |")
    print(f"| buffer / plain (CPU) | {summary(col(f, 'ratio_cpu'), '{:.2f}')} | |")
    print(f"| buffer transactions for {args.flush_rows:,} queued rows | {summary(col(f, 'transactions'))} | |")
    print(f"| longest lock hold of a buffer transaction, ms | {summary(col(f, 'max_lock_ms'), '{:.1f}')} | ≤ 20 (default) |")
    print(f"| p99 lock hold of a buffer transaction, ms | {summary(col(f, 'p99_lock_ms'), '{:.1f}')} | |")
    print(f"| buffer end to end, defaults (enqueue + flush), rows/s | {summary(col(f, 'e2e_rows_per_s'))} | |")
    print(f"| buffer end to end / plain | {summary(col(f, 'e2e_ratio'), '{:.2f}')} | |")
    print(f"| end to end: longest / p99 lock hold, ms | {summary(col(f, 'e2e_max_lock_ms'), '{:.1f}')} / "
          f"{summary(col(f, 'e2e_p99_lock_ms'), '{:.1f}')} | ≤ 20 |")


def print_log(results: dict) -> None:
    log = results["log"]
    off_p99 = col(log["off"], "p99_ms")
    print("\n| logging (1,000 tx/s, 10 records per tx) | app p50 ms | app p99 ms | p99 vs off | written/emitted | dropped (failed) |\n|---|---|---|---|---|---|")
    for mode, label in (("off", "off"), ("null", "handler that drops records"), ("handler", "LogHandler (defaults)")):
        r = log[mode]
        ratios = [a["p99_ms"] / b for a, b in zip(r, off_p99)]
        written = ", ".join(f"{x.get('written', '')}/{x['emitted']}" for x in r) if mode == "handler" else ""
        dropped = ", ".join(f"{x.get('dropped', '')} (failed {x.get('failed', '')})" for x in r) if mode == "handler" else ""
        print(f"| {label} | {summary(col(r, 'p50_ms'), '{:.3f}')} | {summary(col(r, 'p99_ms'), '{:.3f}')} | "
              f"{summary(ratios, '{:.2f}')} | {written} | {dropped} |")


if __name__ == "__main__":
    main()
