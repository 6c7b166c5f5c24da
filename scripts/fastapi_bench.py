#!/usr/bin/env python3
"""The FastAPI scenario of the issue "zero database is locked", side by side (make bench).

FastAPI on SQLAlchemy async + aiosqlite under uvicorn (4 worker processes),
4 background writer processes updating progress rows, a library scan every
2 s inserting hundreds of rows in one transaction (each row's "tag reading"
inside it, so it holds the lock about 0.6 s), and about 120 requests/s over
HTTP (one write for every two reads; every write reads and then writes).
Setups, in one run, rounds alternating:

  plain500    plain SQLAlchemy, the app's PRAGMA busy_timeout=500
  plain5000   plain SQLAlchemy, busy_timeout=5000 (what most users try next)
  seedretry   busy_timeout=500 and a seed-style retry decorator (3 tries, 0.5-5 s)
  hybrid      sqlite-hybrid as python/README.md says (attach, writer(), sqlite_hybrid.retry)
  hybrid-buffered    hybrid's API; background writers through sqlite_hybrid.WriteBuffer;
                     the scan's tags read per chunk outside the lock, chunks by insert_many
  plain5000-chunked  the same app and chunking on plain SQLite, busy_timeout=5000, every
                     write BEGIN IMMEDIATE; background batches written by hand every 1 s

The app is hosts/python/webapp.py, the driver hosts/python/webload.py (the
same code as the `make hosts` check). A benchmark, not a test: nothing is
asserted. The figures depend on the machine and its load: report them with
the conditions.

    scripts/fastapi_bench.py [--seconds 30] [--rounds 1] [--modes plain500,...] [--json out.json]

Needs fastapi, uvicorn, sqlalchemy[asyncio] and aiosqlite: without them it
creates target/bench/web-venv (Debian's python3) and installs them there.
The library is dist/libhybrid.so (make ext) unless SQLITE_HYBRID_LIBRARY is set.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "target", "bench", "web-venv")
PACKAGES = ["fastapi>=0.100", "uvicorn>=0.22", "sqlalchemy[asyncio]>=1.4.24", "aiosqlite"]
MODES = ["plain500", "plain5000", "seedretry", "hybrid", "hybrid-buffered", "plain5000-chunked"]


def ensure_env() -> None:
    """Re-runs this script in a venv that has the web stack, with python/ and the library."""
    if os.environ.get("FASTAPI_BENCH_CHILD") == "1":
        return
    python = sys.executable
    probe = "import fastapi, uvicorn, sqlalchemy, aiosqlite"
    if subprocess.run([python, "-c", probe], capture_output=True).returncode != 0:
        python = os.path.join(VENV, "bin", "python")
        if not os.path.exists(python):
            print(f"fastapi_bench: creating {VENV}", file=sys.stderr)
            subprocess.run(["/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable,
                            "-m", "venv", VENV], check=True)
        if subprocess.run([python, "-c", probe], capture_output=True).returncode != 0:
            print(f"fastapi_bench: pip install {' '.join(PACKAGES)}", file=sys.stderr)
            done = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check"] + PACKAGES)
            if done.returncode != 0:
                raise SystemExit("fastapi_bench: pip could not install the web stack; see above")
    env = dict(os.environ, FASTAPI_BENCH_CHILD="1")
    env["PYTHONPATH"] = os.path.join(ROOT, "python") + os.pathsep + env.get("PYTHONPATH", "")
    if not env.get("SQLITE_HYBRID_LIBRARY"):
        library = os.path.join(ROOT, "dist", "libhybrid.so")
        if not os.path.exists(library):
            raise SystemExit("fastapi_bench: dist/libhybrid.so is missing: run `make ext` first")
        env["SQLITE_HYBRID_LIBRARY"] = library
    os.execve(python, [python, os.path.abspath(__file__)] + sys.argv[1:], env)


def fmt(value: object, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def span(values: list, digits: int = 0) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return fmt(float(lo), digits) if lo == hi else f"{fmt(float(lo), digits)}-{fmt(float(hi), digits)}"


def summarize(runs: list) -> None:
    """Per setup over its rounds: the original plan's three targets and write p99 (ranges)."""
    by_mode: dict = {}
    for r in runs:
        by_mode.setdefault(r["mode"], []).append(r)
    print("\n| setup | rounds | lock errors (API + background + scans) | avg lock wait ms (< 50) | "
          "longest wait ms (< 5,000) | API write p99 ms |")
    print("|---|---|---|---|---|---|")
    for mode, rs in by_mode.items():
        errors = [r["api"]["write_errors"] + r["api"]["read_errors"] + r["background"]["errors"]
                  + r["scan"]["errors"] for r in rs]
        print(f"| {mode} | {len(rs)} | {span(errors)} | {span([(r['metrics'] or {}).get('wait_avg_ms') for r in rs], 1)} | "
              f"{span([(r['metrics'] or {}).get('wait_max_ms') for r in rs])} | "
              f"{span([r['api']['writes']['p99'] for r in rs])} |")
    buffered, plain = by_mode.get("hybrid-buffered", []), by_mode.get("plain5000-chunked", [])
    if buffered and plain:
        ratios = [b["api"]["writes"]["p99"] / p["api"]["writes"]["p99"] for b, p in zip(buffered, plain)
                  if b["api"]["writes"]["p99"] and p["api"]["writes"]["p99"]]
        print(f"\nwrite p99, hybrid-buffered / plain5000-chunked, per round: "
              f"{', '.join(f'{x:.2f}' for x in ratios)} (goal <= 0.25)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each run (default 30)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every mode, alternating (default 1)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=120.0, help="API requests per second")
    parser.add_argument("--scan-rows", type=int, default=400)
    parser.add_argument("--scan-row-ms", type=float, default=1.5, help="time per scanned row inside the transaction")
    parser.add_argument("--json", help="write every run's figures here")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
    ensure_env()
    sys.path.insert(0, os.path.join(ROOT, "hosts", "python"))
    import webload

    directory = tempfile.mkdtemp(prefix="fastapi-bench-")
    env = dict(os.environ, WEBAPP_SCAN_ROW_MS=str(args.scan_row_ms))
    runs = []
    for round_ in range(args.rounds):
        for mode in modes:
            print(f"fastapi_bench: round {round_ + 1}, {mode}, {args.seconds:.0f} s ...", file=sys.stderr, flush=True)
            out = webload.run(mode, directory, workers=args.workers, writers=args.writers, scan_rows=args.scan_rows,
                              scan_period=2.0, rate=args.rate, seconds=args.seconds, clients=12, env=env)
            out["round"] = round_ + 1
            runs.append(out)

    load = os.getloadavg()
    print(f"\nFastAPI scenario: uvicorn x{args.workers}, {args.writers} background writers, a scan of "
          f"{args.scan_rows} rows every 2 s ({args.scan_row_ms} ms per row inside its transaction), "
          f"{args.rate:.0f} requests/s, {args.seconds:.0f} s per run; load average at the end "
          f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} on {os.cpu_count()} CPUs\n")
    header = ("| setup | round | API writes (errors) | API error rate | write p50 / p99 / max ms | "
              "read p50 / p99 / max ms | background writes (errors) | scans ok / tried | "
              "lost acked writes | avg / max lock wait ms (metrics) |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in runs:
        api = r["api"]
        total = api["writes"]["n"] + api["reads"]["n"] + api["write_errors"] + api["read_errors"]
        rate = 100.0 * (api["write_errors"] + api["read_errors"]) / total if total else 0.0
        w, rd = api["writes"], api["reads"]
        m = r["metrics"] or {}
        lost = r["acked_plays_missing"] + r["background"]["missing"]
        print(f"| {r['mode']} | {r['round']} | {w['n']} ({api['write_errors']}) | {rate:.1f}% | "
              f"{fmt(w['p50'])} / {fmt(w['p99'])} / {fmt(w['max'])} | "
              f"{fmt(rd['p50'])} / {fmt(rd['p99'])} / {fmt(rd['max'])} | "
              f"{r['background']['acked']} ({r['background']['errors']}) | "
              f"{r['scan']['acked']} / {r['scan']['scans']} | {lost} | "
              f"{fmt(m.get('wait_avg_ms'), 1)} / {fmt(m.get('wait_max_ms'), 1)} |")
    print("\nErrors are lock errors only (HTTP 503 from the API, counted by the writers and the scan)."
          "\nLock waits: hybrid modes from hybrid_lock_metrics (file-wide, average over the waits);"
          "\nplain5000-chunked from every BEGIN IMMEDIATE timed client-side (average over those >= 1 ms)."
          "\nThe others have none.")
    summarize(runs)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "loadavg": load, "runs": runs}, f, indent=1)
        print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
