"""Runs the FastAPI scenario of webapp.py once and measures it (used by test_hosts.py and
scripts/fastapi_bench.py).

uvicorn with N worker processes serves webapp:app; W background writer
processes and one scan process write the same file; client threads drive the
API over real HTTP at a paced rate (one write for every two reads). Returns
the counts, latencies and what the file holds afterwards.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, "webapp.py")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: List[float], p: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


def summary(values: List[float]) -> Dict[str, Optional[float]]:
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values) if values else None}


def client_waits(db: str) -> Dict[str, Any]:
    """plain5000-chunked's lock waits: every BEGIN IMMEDIATE timed by the process that ran
    it (webapp.record_wait). wait_avg_ms / wait_max_ms are over the waits, counted as the
    BEGINs that took >= 1 ms (hybrid_lock_metrics averages over the busy waits only);
    begin_avg_ms is over every BEGIN IMMEDIATE."""
    directory, base = os.path.split(db)
    values: List[float] = []
    for name in os.listdir(directory):
        if name.startswith(base + ".waits."):
            with open(os.path.join(directory, name)) as f:
                values.extend(float(line) for line in f if line.strip())
    waited = [v for v in values if v >= 1.0]
    return {"source": "client-side BEGIN IMMEDIATE", "begins": len(values),
            "begin_avg_ms": sum(values) / len(values) if values else None,
            "busy_events": len(waited), "wait_avg_ms": sum(waited) / len(waited) if waited else None,
            "wait_max_ms": max(values) if values else None, "wait_p99_ms": percentile(waited, 99)}


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def run(mode: str, directory: str, *, python: str = sys.executable, workers: int = 3, writers: int = 2,
        scan_rows: int = 300, scan_period: float = 2.0, rate: float = 60.0, seconds: float = 15.0,
        clients: int = 6, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    db = os.path.join(directory, f"web-{mode}.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    for name in os.listdir(directory):
        if name.startswith(os.path.basename(db) + ".waits."):
            os.remove(os.path.join(directory, name))
    env = dict(env or os.environ)
    env.update({"WEBAPP_DB": db, "WEBAPP_MODE": mode})
    logs = {name: open(os.path.join(directory, f"web-{mode}-{name}.log"), "w") for name in ("uvicorn", "bg")}
    subprocess.run([python, APP, "init"], env=env, check=True, timeout=60, cwd=directory)
    port = free_port()
    server = subprocess.Popen(
        [python, "-m", "uvicorn", "webapp:app", "--app-dir", HERE, "--workers", str(workers),
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env, stdout=logs["uvicorn"], stderr=subprocess.STDOUT, cwd=directory, start_new_session=True)
    background: List[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/tracks?limit=1")
                if c.getresponse().status == 200:
                    c.close()
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                logs["uvicorn"].flush()
                raise AssertionError("uvicorn did not start: " + open(logs["uvicorn"].name).read()[-2000:])
            time.sleep(0.3)
        # Every worker process has its own engine: warm them (first requests pay the connect).
        for _ in range(workers * 4):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/tracks?limit=1")
            c.getresponse().read()
            c.close()

        for w in range(writers):
            background.append(subprocess.Popen([python, APP, "writer", str(w + 1), str(seconds)], env=env,
                                               stdout=subprocess.PIPE, stderr=logs["bg"], text=True,
                                               cwd=directory, start_new_session=True))
        background.append(subprocess.Popen([python, APP, "scan", str(scan_rows), str(scan_period), str(seconds)],
                                           env=env, stdout=subprocess.PIPE, stderr=logs["bg"], text=True,
                                           cwd=directory, start_new_session=True))

        lock = threading.Lock()
        writes: List[float] = []
        reads: List[float] = []
        acked: List[int] = []
        errors: Dict[str, int] = {}
        stop_at = time.monotonic() + seconds
        interval = clients / rate

        def client(index: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            rng = random.Random(index)
            next_at = time.monotonic() + rng.uniform(0, interval)
            n = index
            while True:
                now = time.monotonic()
                if now >= stop_at:
                    break
                if next_at > now:
                    time.sleep(next_at - now)
                next_at += interval
                n += 1
                is_write = n % 3 == 0
                path = f"/tracks/{rng.randint(1, 200)}/play" if is_write else "/tracks?limit=20"
                started = time.monotonic()
                try:
                    conn.request("POST" if is_write else "GET", path)
                    response = conn.getresponse()
                    body = response.read()
                    status = response.status
                except (OSError, http.client.HTTPException) as error:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    status, body = f"{type(error).__name__}", b""
                elapsed = (time.monotonic() - started) * 1000
                with lock:
                    if status == 200:
                        (writes if is_write else reads).append(elapsed)
                        if is_write:
                            acked.append(json.loads(body)["play"])
                    else:
                        key = f"{'write' if is_write else 'read'} {status}"
                        errors[key] = errors.get(key, 0) + 1
            conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        results = []
        for proc in background:
            out, _ = proc.communicate(timeout=seconds + 120)
            line = [l for l in out.splitlines() if l.startswith("result ")]
            if proc.returncode != 0 or not line:
                logs["bg"].flush()
                raise AssertionError(f"a background process failed ({proc.returncode}): "
                                     + open(logs["bg"].name).read()[-2000:])
            results.append(json.loads(line[-1][len("result "):]))
        metrics = {}
        if mode in ("hybrid", "hybrid-buffered"):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/metrics")
            metrics = json.loads(c.getresponse().read())
            c.close()
    finally:
        _stop(server)
        for proc in background:
            _stop(proc)
        for log in logs.values():
            log.close()

    if mode == "plain5000-chunked":
        metrics = client_waits(db)
    conn = sqlite3.connect(db)
    plays_in_file = {r[0] for r in conn.execute("SELECT id FROM plays")}
    bg_counts = dict(conn.execute("SELECT worker, count(*) FROM bg_log GROUP BY worker").fetchall())
    tracks = conn.execute("SELECT count(*) FROM tracks").fetchone()[0]
    plays_sum = conn.execute("SELECT coalesce(sum(plays), 0) FROM tracks").fetchone()[0]
    conn.close()
    writers_out = [r for r in results if "worker" in r]
    scan_out = [r for r in results if "scans" in r][0]
    bg_ms = [ms for r in writers_out for ms in r.pop("ms")]
    return {
        "mode": mode,
        "api": {"writes": summary(writes), "reads": summary(reads), "errors": errors,
                "write_errors": sum(v for k, v in errors.items() if k.startswith("write")),
                "read_errors": sum(v for k, v in errors.items() if k.startswith("read"))},
        "acked_plays": len(acked),
        "acked_plays_missing": len(set(acked) - plays_in_file),
        "plays_in_file": len(plays_in_file),
        "plays_counter": plays_sum,
        "background": {"acked": sum(r["acked"] for r in writers_out), "errors": sum(r["errors"] for r in writers_out),
                       "missing": sum(max(0, r["acked"] - bg_counts.get(r["worker"], 0)) for r in writers_out),
                       "in_file": sum(bg_counts.values()), "ms": summary(bg_ms)},
        "scan": dict(scan_out, tracks_in_file=tracks,
                     tracks_expected=200 + scan_out.get("rows_committed", scan_out["acked"] * scan_out["rows"])),
        "metrics": metrics,
    }


if __name__ == "__main__":
    import tempfile

    mode = sys.argv[1] if len(sys.argv) > 1 else "hybrid"
    print(json.dumps(run(mode, tempfile.mkdtemp(), seconds=float(sys.argv[2]) if len(sys.argv) > 2 else 10.0),
                     indent=1))
