"""The write buffer, chunked imports and the log handler, from the installed wheel.

Run by hosts/run.sh with pytest in the test venv (``python -m pytest
hosts/python/test_buffer.py``); from a source tree: ``PYTHONPATH=python
SQLITE_HYBRID_LIBRARY=dist/libhybrid.so python -m pytest hosts/python/test_buffer.py``.
Every test works on real files in a temporary directory, with real threads,
event loops and processes; none depends on timing (waits are bounded only so
that a hang fails instead of blocking CI). docs/python-buffer.md names the
test behind each guarantee.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import sqlite_hybrid as sh

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAIT_S = 60.0  # upper bound for anything that should finish: a hang fails, never a slow machine


def make_db(tmp_path, schema: str, name: str = "app.db") -> str:
    path = str(tmp_path / name)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(schema)
    conn.close()
    return path


def rows(path: str, sql: str, params=()) -> list:
    conn = sqlite3.connect(path, timeout=WAIT_S)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


class HeldLock:
    """Another connection holding the file's write lock (BEGIN IMMEDIATE) until release()."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.conn is not None:
            self.conn.execute("COMMIT")
            self.conn.close()
            self.conn = None


STOCK = "CREATE TABLE stock(sku TEXT PRIMARY KEY, qty INT, note TEXT, email TEXT UNIQUE);"


# --- validation at the call ------------------------------------------------------------


def test_validation_names_the_argument_and_queues_nothing(tmp_path):
    path = make_db(
        tmp_path,
        STOCK
        + "CREATE TABLE req(id INTEGER PRIMARY KEY, must TEXT NOT NULL);"
        + "CREATE TABLE typed(id INTEGER PRIMARY KEY, n INTEGER) STRICT;"
        + "CREATE TABLE events(id INTEGER PRIMARY KEY, msg TEXT);",
    )
    with sh.WriteBuffer(path) as buffer:
        cases = [
            (lambda: buffer.upsert("nope", {"sku": "a"}, "sku"), "table", "no such table"),
            (lambda: buffer.upsert("stock", {"sku": "a", "bogus": 1}, "sku"), "row", "no such column"),
            (lambda: buffer.upsert("stock", {"sku": "a", "qty": 1}, "qty"), "key", "not the PRIMARY KEY or a UNIQUE"),
            (lambda: buffer.upsert("stock", {"qty": 1}, "sku"), "row", "is missing"),
            (lambda: buffer.upsert("stock", {"sku": None, "qty": 1}, "sku"), "row", "None"),
            (lambda: buffer.upsert("stock", {"sku": "a", "email": float("nan")}, "email"), "row", "NaN"),
            (lambda: buffer.upsert("stock", {"sku": "a", "qty": math.nan}, "sku"), "row", "NaN"),
            (lambda: buffer.update("stock", {"sku": "a"}, {"sku": "b"}), "changes", "cannot change key column"),
            (lambda: buffer.update("stock", {"qty": 1}, {"note": "x"}), "key", "not the PRIMARY KEY"),
            (lambda: buffer.delete("stock", {"sku": float("nan")}), "key", "NaN"),
            (lambda: buffer.upsert("req", {"id": 1}, "id"), "row", "NOT NULL"),
            (lambda: buffer.insert("req", {"id": 1, "must": None}), "row", "NOT NULL"),
            (lambda: buffer.upsert("typed", {"id": 1, "n": "seven"}, "id"), "row", "STRICT"),
            (lambda: buffer.upsert("typed", {"id": "1x", "n": 1}, "id"), "row", "integer"),
            (lambda: buffer.insert("events", {"msg": object()}), "row", "cannot be stored"),
        ]
        for call, argument, words in cases:
            with pytest.raises(sh.InvalidRow) as caught:
                call()
            assert caught.value.argument == argument, (argument, str(caught.value))
            assert words in str(caught.value), (words, str(caught.value))
            assert isinstance(caught.value, ValueError)
        # A table is keyed or append-only, never both.
        buffer.insert("events", {"msg": "x"})
        with pytest.raises(sh.InvalidRow, match="append-only"):
            buffer.upsert("events", {"id": 1, "msg": "x"}, "id")
        stats = buffer.stats()
        assert (stats.enqueued, stats.pending) == (1, 1), stats
    assert rows(path, "SELECT count(*) FROM stock") == [(0,)]
    assert rows(path, "SELECT msg FROM events") == [("x",)]


# --- coalescing: the same effect as running every operation in order ---------------------


def test_coalescing_has_exactly_the_effect_of_running_in_order(tmp_path):
    schema = "CREATE TABLE kv(k INTEGER PRIMARY KEY, a INT, b INT, c INT);"
    buffered = make_db(tmp_path, schema, "buffered.db")
    direct = make_db(tmp_path, schema, "direct.db")
    start = "INSERT INTO kv VALUES (1, 0, 0, 0), (3, 1, 1, 1), (5, 2, 2, 2)"
    for p in (buffered, direct):
        conn = sqlite3.connect(p)
        conn.execute(start)
        conn.commit()
        conn.close()
    rng = random.Random(24)
    ops = []
    for _ in range(3000):
        key = rng.randrange(8)
        kind = rng.choice(["upsert", "upsert", "update", "delete"])
        columns = {c: rng.randrange(100) for c in rng.sample("abc", rng.randrange(1, 4))}
        ops.append((kind, key, columns))
    conn = sqlite3.connect(direct, isolation_level=None)
    conn.execute("BEGIN")
    for kind, key, columns in ops:
        names = list(columns)
        if kind == "upsert":
            conn.execute(
                f"INSERT INTO kv(k, {', '.join(names)}) VALUES (?, {', '.join('?' for _ in names)}) "
                f"ON CONFLICT(k) DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in names)}",
                [key, *columns.values()],
            )
        elif kind == "update":
            conn.execute(f"UPDATE kv SET {', '.join(f'{n} = ?' for n in names)} WHERE k = ?", [*columns.values(), key])
        else:
            conn.execute("DELETE FROM kv WHERE k = ?", (key,))
    conn.execute("COMMIT")
    conn.close()
    # Flush every 1..40 operations, so every short sequence shape is met.
    with sh.WriteBuffer(buffered, flush_interval=3600) as buffer:
        for n, (kind, key, columns) in enumerate(ops):
            if kind == "upsert":
                buffer.upsert("kv", {"k": key, **columns}, "k")
            elif kind == "update":
                buffer.update("kv", {"k": key}, columns)
            else:
                buffer.delete("kv", {"k": key})
            if rng.randrange(40) == 0:
                buffer.flush()
        buffer.flush()
        stats = buffer.stats()
    assert stats.coalesced > 1000, stats
    assert rows(buffered, "SELECT * FROM kv ORDER BY k") == rows(direct, "SELECT * FROM kv ORDER BY k")


def test_keys_are_normalised_by_affinity(tmp_path):
    path = make_db(tmp_path, "CREATE TABLE n(id INT PRIMARY KEY, v TEXT); CREATE TABLE t(name TEXT PRIMARY KEY, v INT);")
    with sh.WriteBuffer(path, flush_interval=3600) as buffer:
        first = buffer.upsert("n", {"id": 1, "v": "a"}, "id")
        second = buffer.upsert("n", {"id": 1.0, "v": "b"}, "id")  # the same key
        assert first is second
        buffer.upsert("t", {"name": 7, "v": 1}, "name")
        buffer.upsert("t", {"name": "7", "v": 2}, "name")  # '7' in a TEXT column
        assert buffer.stats().pending == 2
    assert rows(path, "SELECT id, v FROM n") == [(1, "b")]
    assert rows(path, "SELECT name, v FROM t") == [("7", 2)]


# --- threads and asyncio -------------------------------------------------------------------


def test_many_threads_every_acknowledged_row_is_in_the_file(tmp_path):
    path = make_db(tmp_path, "CREATE TABLE t(id INTEGER PRIMARY KEY, worker INT, n INT); CREATE TABLE log(msg TEXT);")
    errors = []
    with sh.WriteBuffer(path, batch_size=200) as buffer:

        def work(worker: int) -> None:
            try:
                tickets = []
                for n in range(2000):
                    tickets.append(buffer.upsert("t", {"id": worker * 10_000 + n % 500, "worker": worker, "n": n}, "id"))
                    if n % 10 == 0:
                        tickets.append(buffer.insert("log", {"msg": f"{worker}:{n}"}))
                for ticket in tickets:
                    ticket.wait(WAIT_S)
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_S)
        assert not errors, errors
    assert rows(path, "SELECT count(*), sum(n) FROM t") == [(2000, 4 * sum(range(1500, 2000)))]
    assert rows(path, "SELECT count(*) FROM log") == [(800,)]


def test_asyncio_await_cancel_and_aclose(tmp_path):
    path = make_db(tmp_path, STOCK)

    async def main() -> None:
        async with sh.WriteBuffer(path, flush_interval=3600) as buffer:
            ticket = buffer.upsert("stock", {"sku": "a", "qty": 1}, "sku")
            await ticket
            assert ticket.status == "committed"
            # Holding the lock keeps the next one pending; cancelling its waiter
            # only stops the waiting: the operation is still written.
            held = HeldLock(path)
            pending = buffer.upsert("stock", {"sku": "b", "qty": 2}, "sku")
            waiter = asyncio.ensure_future(_await(pending))
            await asyncio.sleep(0.05)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert pending.status == "pending"
            held.release()
            await asyncio.wait_for(_await(pending), WAIT_S)
            many = [buffer.upsert("stock", {"sku": f"s{i}", "qty": i}, "sku") for i in range(500)]
            await asyncio.wait_for(asyncio.gather(*(_await(t) for t in many)), WAIT_S)
            await buffer.aflush()
        assert buffer.stats().flushed_entries == 502

    asyncio.run(main())
    assert rows(path, "SELECT count(*) FROM stock") == [(502,)]


async def _await(ticket: sh.Ticket) -> None:
    await ticket


# --- failures ------------------------------------------------------------------------------


def test_a_bad_row_fails_alone_and_the_rest_commit(tmp_path):
    path = make_db(tmp_path, STOCK + "CREATE TABLE checked(id INTEGER PRIMARY KEY, n INT CHECK (n >= 0));")
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO stock VALUES ('taken', 1, 'keep me', 'x@y')")
    conn.commit()
    conn.close()
    with sh.WriteBuffer(path, flush_interval=3600) as buffer:
        tickets = [buffer.upsert("stock", {"sku": f"s{i}", "qty": i}, "sku") for i in range(50)]
        bad = buffer.upsert("stock", {"sku": "dup", "email": "x@y"}, "sku")  # UNIQUE(email)
        tickets += [buffer.upsert("stock", {"sku": f"t{i}", "qty": i}, "sku") for i in range(50)]
        # A two-statement entry (delete, then insert) that fails rolls back whole.
        buffer.delete("stock", {"sku": "taken"})
        replaced = buffer.upsert("stock", {"sku": "taken", "email": "x@y", "qty": 2}, "sku")
        buffer.delete("stock", {"sku": "s0"})  # merges into s0's entry
        negative = buffer.upsert("checked", {"id": 1, "n": -1}, "id")
        good = buffer.upsert("checked", {"id": 2, "n": 1}, "id")
        with pytest.raises(sh.FlushFailed) as caught:
            buffer.flush()
        assert caught.value.failed >= 1
        with pytest.raises(sh.FlushFailed, match="UNIQUE"):
            bad.wait(WAIT_S)
        with pytest.raises(sh.FlushFailed, match="CHECK"):
            negative.wait(WAIT_S)
        good.wait(WAIT_S)
        for ticket in tickets:
            ticket.wait(WAIT_S)
        assert replaced.status == "committed"  # the delete of 'taken' ran first, so no conflict
        failed = buffer.take_failed()
        assert sorted(f.table for f in failed) == ["checked", "stock"]
        stock = next(f for f in failed if f.table == "stock")
        assert stock.key == {"sku": "dup"} and stock.ops == [("upsert", {"sku": "dup", "email": "x@y"})]
    assert rows(path, "SELECT count(*) FROM stock WHERE sku GLOB 's[0-9]*' OR sku GLOB 't[0-9]*'") == [(99,)]
    assert rows(path, "SELECT qty FROM stock WHERE sku = 'taken'") == [(2,)]
    assert rows(path, "SELECT id FROM checked") == [(2,)]


def test_a_failing_two_statement_entry_is_rolled_back_whole(tmp_path):
    path = make_db(tmp_path, STOCK + "CREATE TABLE other(email TEXT UNIQUE);")
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO stock VALUES ('a', 1, 'old', 'a@x'), ('b', 1, 'old', 'b@x')")
    conn.commit()
    conn.close()
    with sh.WriteBuffer(path, flush_interval=3600) as buffer:
        buffer.delete("stock", {"sku": "a"})
        ticket = buffer.upsert("stock", {"sku": "a", "email": "b@x"}, "sku")  # delete ok, insert conflicts
        with pytest.raises(sh.FlushFailed):
            ticket.wait(WAIT_S)
        buffer.take_failed()
    assert rows(path, "SELECT sku, note FROM stock ORDER BY sku") == [("a", "old"), ("b", "old")]


def test_on_conflict_rollback_restarts_the_batch_without_the_row(tmp_path):
    path = make_db(tmp_path, "CREATE TABLE r(id INTEGER PRIMARY KEY, code TEXT UNIQUE ON CONFLICT ROLLBACK);")
    with sh.WriteBuffer(path, flush_interval=3600) as buffer:
        tickets = [buffer.upsert("r", {"id": i, "code": f"c{i}"}, "id") for i in range(20)]
        bad = buffer.upsert("r", {"id": 100, "code": "c3"}, "id")
        tickets += [buffer.upsert("r", {"id": i, "code": f"c{i}"}, "id") for i in range(20, 40)]
        with pytest.raises(sh.FlushFailed):
            buffer.flush()
        with pytest.raises(sh.FlushFailed, match="UNIQUE"):
            bad.wait(WAIT_S)
        for ticket in tickets:
            ticket.wait(WAIT_S)
        buffer.take_failed()
    assert rows(path, "SELECT count(*) FROM r") == [(40,)]


def test_a_deferred_constraint_failing_at_commit_fails_only_its_entry(tmp_path):
    schema = (
        "CREATE TABLE parent(id INTEGER PRIMARY KEY);"
        "CREATE TABLE child(id INTEGER PRIMARY KEY, parent INT REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
    )
    path = make_db(tmp_path, schema)

    def connect():
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    with sh.WriteBuffer(connect=connect, flush_interval=3600) as buffer:
        for i in range(10):
            buffer.upsert("parent", {"id": i}, "id")
        ok = [buffer.upsert("child", {"id": i, "parent": i}, "id") for i in range(10)]
        orphan = buffer.upsert("child", {"id": 99, "parent": 12345}, "id")
        with pytest.raises(sh.FlushFailed):
            buffer.flush()
        with pytest.raises(sh.FlushFailed, match="at commit"):
            orphan.wait(WAIT_S)
        for ticket in ok:
            ticket.wait(WAIT_S)
        buffer.take_failed()
    assert rows(path, "SELECT count(*) FROM parent") == [(10,)]
    assert rows(path, "SELECT count(*) FROM child") == [(10,)]


def test_table_priorities_write_parents_first(tmp_path):
    schema = "CREATE TABLE parent(id INTEGER PRIMARY KEY); CREATE TABLE child(id INTEGER PRIMARY KEY, parent INT REFERENCES parent(id));"
    path = make_db(tmp_path, schema)

    def connect():
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    with sh.WriteBuffer(connect=connect, flush_interval=3600, table_priorities={"parent": 10}) as buffer:
        children = [buffer.upsert("child", {"id": i, "parent": i}, "id") for i in range(100)]
        for i in range(100):
            buffer.upsert("parent", {"id": i}, "id")
        buffer.flush()
        assert all(t.status == "committed" for t in children)
    assert rows(path, "SELECT count(*) FROM child") == [(100,)]


def test_lock_errors_are_retried_until_the_lock_is_free(tmp_path):
    path = make_db(tmp_path, STOCK)
    held = HeldLock(path)
    # A 100 ms busy timeout: BEGIN IMMEDIATE fails with SQLITE_BUSY several times
    # while the lock is held, and is retried with backoff (lock_timeout 30 s).
    with sh.WriteBuffer(path, timeout_ms=100, flush_interval=3600) as buffer:
        ticket = buffer.upsert("stock", {"sku": "a", "qty": 1}, "sku")
        buffer._wait_for([ticket], 0.1)  # asks for the flush
        deadline = time.monotonic() + WAIT_S
        while buffer.stats().lock_retries == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the lock stays held until the flusher has met it and retried
        assert ticket.status == "pending"
        held.release()
        ticket.wait(WAIT_S)
        assert buffer.stats().lock_retries >= 1
    assert rows(path, "SELECT qty FROM stock") == [(1,)]


def test_transactions_are_bounded_by_entries_and_by_time_in_the_lock(tmp_path):
    path = make_db(tmp_path, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);")
    with sh.WriteBuffer(path, batch_size=100, flush_interval=3600) as buffer:
        for i in range(1000):
            buffer.upsert("t", {"id": i, "v": "x"}, "id")
        buffer.flush()
        assert buffer.stats().flushed_batches >= 10
    # 20,000 rows cannot be written in 1 ms: the time bound splits them.
    with sh.WriteBuffer(path, batch_size=1_000_000, max_lock_ms=1.0, flush_interval=3600) as buffer:
        for i in range(20_000):
            buffer.upsert("t", {"id": i, "v": "y"}, "id")
        buffer.flush()
        stats = buffer.stats()
        assert stats.flushed_batches > 1 and stats.max_lock_ms > 0, stats
    assert rows(path, "SELECT count(*), min(v), max(v) FROM t") == [(20_000, "y", "y")]


def test_the_lock_budget_reserves_commit_and_shrinks_groups_when_commits_are_slow():
    # Driven by a fake clock and fake measurements: no wall time involved.
    from sqlite_hybrid._tx import GROUP_ROWS, LockBudget

    now = [0.0]
    budget = LockBudget(20.0, clock=lambda: now[0])
    assert budget.group_rows == GROUP_ROWS == 64
    # Nothing measured yet: COMMIT is reserved as long as the writing.
    assert budget.window_s() == pytest.approx(0.010)
    budget.wrote(64, 0.000_64)  # 10 µs a row: a group of 64 is 0.64 ms
    assert budget.group_rows == 64
    # The next group (counted twice) and the COMMIT must fit in the window.
    now[0] = 0.008
    assert budget.fits(0.0, 64)
    now[0] = 0.009
    assert not budget.fits(0.0, 64)

    # Fast commits give the writing almost the whole budget.
    for _ in range(8):
        budget.committed(0.010, 0.000_5)
    assert budget.commit_share() == pytest.approx(0.05)
    assert budget.window_s() == pytest.approx(0.020 / 1.05)
    assert budget.group_rows == 64
    # Slow commits: the largest recent share counts at once; the window shrinks
    # and the groups with it.
    budget.committed(0.010, 0.040)
    assert budget.commit_share() == pytest.approx(4.0)
    assert budget.window_s() == pytest.approx(0.004)
    after_slow_commit = budget.group_rows
    assert after_slow_commit < 64
    budget.committed(0.004, 0.036)
    assert budget.window_s() == pytest.approx(0.002)
    assert budget.group_rows < after_slow_commit
    # Slow rows too: a group that takes a large part of the window.
    before = budget.group_rows
    budget.wrote(10, 0.001)
    assert 1 <= budget.group_rows < before
    budget.wrote(1, 1.0)
    assert budget.group_rows == 1  # never below one row
    # A transaction that wrote for a small part of the window teaches nothing.
    budget.committed(0.000_01, 0.001)
    assert budget.commit_share() == pytest.approx(9.0)
    # Eight fast transactions later the slow ones are forgotten.
    for _ in range(8):
        budget.committed(0.010, 0.000_5)
    assert budget.commit_share() == pytest.approx(0.05)


def test_the_checkpoint_runs_after_commit_and_keeps_the_wal_bounded(tmp_path):
    from sqlite_hybrid._tx import Checkpointer

    path = make_db(tmp_path, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);")
    conn = sqlite3.connect(path, isolation_level=None)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    checkpointer = Checkpointer(conn)
    assert checkpointer.limit == 1000
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)  # SQLite's own is off
    for n in range(300):  # about 10 pages a transaction: 3,000 pages in all
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO t(v) VALUES (?)", [(os.urandom(3000),) for _ in range(10)])
        conn.execute("COMMIT")
        checkpointer.committed(conn)
    # Checkpointed as SQLite would (at about 1,000 pages), so the WAL started over:
    # it never grew to the 3,000 pages written.
    frame = page_size + 24
    assert os.path.getsize(path + "-wal") < 1500 * frame, os.path.getsize(path + "-wal") // frame
    checkpointer.restore(conn)
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
    conn.close()
    assert rows(path, "SELECT count(*) FROM t") == [(3000,)]

    # Not in WAL mode: nothing to checkpoint, SQLite's setting is put back at once.
    journal = str(tmp_path / "journal.db")
    conn = sqlite3.connect(journal, isolation_level=None)
    conn.execute("CREATE TABLE t(x)")
    checkpointer = Checkpointer(conn)
    conn.execute("INSERT INTO t VALUES (1)")
    checkpointer.committed(conn)
    assert checkpointer.limit == 0
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
    conn.close()


# --- backpressure ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["reject", "block"])
def test_a_full_buffer_rejects_or_blocks_and_never_drops(tmp_path, mode):
    path = make_db(tmp_path, STOCK)
    held = HeldLock(path)  # the flusher cannot write: the buffer fills up
    buffer = sh.WriteBuffer(path, max_pending=10, backpressure=mode, block_timeout=0.3, flush_interval=3600)
    try:
        tickets = [buffer.upsert("stock", {"sku": f"s{i}", "qty": i}, "sku") for i in range(10)]
        with pytest.raises(sh.BufferFull) as caught:
            buffer.upsert("stock", {"sku": "s10", "qty": 10}, "sku")
        assert caught.value.capacity == 10
        if mode == "block":
            assert caught.value.waited_s > 0
        assert buffer.stats().rejected == 1
        if mode == "block":
            # Room appears while a call waits for it: the call succeeds.
            buffer.block_timeout = WAIT_S
            late = []
            thread = threading.Thread(target=lambda: late.append(buffer.upsert("stock", {"sku": "late", "qty": 1}, "sku")))
            thread.start()
            time.sleep(0.1)
            held.release()
            thread.join(WAIT_S)
            late[0].wait(WAIT_S)
        else:
            held.release()
        for ticket in tickets:
            ticket.wait(WAIT_S)
    finally:
        held.release()
        buffer.close()
    expected = 11 if mode == "block" else 10
    assert rows(path, "SELECT count(*) FROM stock") == [(expected,)]


# --- close and interpreter exit --------------------------------------------------------------


def test_close_flushes_reports_and_refuses_later_calls(tmp_path):
    path = make_db(tmp_path, STOCK)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO stock VALUES ('x', 1, '', 'x@y')")
    conn.commit()
    conn.close()
    buffer = sh.WriteBuffer(path, flush_interval=3600)
    for i in range(100):
        buffer.upsert("stock", {"sku": f"s{i}", "qty": i}, "sku")
    buffer.upsert("stock", {"sku": "dup", "email": "x@y"}, "sku")
    with pytest.raises(sh.FlushFailed) as caught:
        buffer.close()
    assert [e.key for e in caught.value.entries] == [{"sku": "dup"}]
    with pytest.raises(sh.BufferClosed):
        buffer.upsert("stock", {"sku": "late"}, "sku")
    assert len(buffer.take_failed()) == 1
    assert isinstance(buffer.close(), sh.BufferStats)  # again: nothing left to report
    assert rows(path, "SELECT count(*) FROM stock") == [(101,)]


def run_child(code: str, timeout: float = WAIT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout)


def test_interpreter_exit_flushes_pending_entries(tmp_path):
    path = make_db(tmp_path, STOCK)
    done = run_child(f"""
        import sqlite_hybrid
        buffer = sqlite_hybrid.WriteBuffer({path!r}, flush_interval=3600)
        for i in range(5000):
            buffer.upsert("stock", {{"sku": f"s{{i}}", "qty": i}}, "sku")
        print(buffer.stats().pending > 0)
        # no close(): the interpreter exits with entries pending
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    assert rows(path, "SELECT count(*) FROM stock") == [(5000,)]


def test_interpreter_exit_reports_what_cannot_be_written(tmp_path):
    path = make_db(tmp_path, STOCK)
    held = HeldLock(path)  # held for the child's whole life
    try:
        done = run_child(f"""
            import sqlite_hybrid
            buffer = sqlite_hybrid.WriteBuffer({path!r}, timeout_ms=50, lock_timeout=0.2, flush_interval=3600)
            for i in range(3):
                buffer.upsert("stock", {{"sku": f"s{{i}}", "qty": i}}, "sku")
        """)
    finally:
        held.release()
    assert done.returncode == 0, done.stderr
    assert "sqlite_hybrid.WriteBuffer at exit" in done.stderr, done.stderr
    for i in range(3):
        assert f"{{'sku': 's{i}'}}" in done.stderr, done.stderr
    assert rows(path, "SELECT count(*) FROM stock") == [(0,)]


KILL_CHILD = """
import sys, threading, sqlite_hybrid
buffer = sqlite_hybrid.WriteBuffer(sys.argv[1], batch_size=300, flush_interval=0.01)
out = sys.stdout
n = 0
while True:
    tickets = []
    for _ in range(300):
        tickets.append((n, buffer.upsert("t", {"id": n, "v": "x" * 50}, "id")))
        n += 1
    for i, ticket in tickets:
        ticket.wait(60)
    out.write(f"{tickets[-1][0]}\\n")  # every id up to this one is acknowledged
    out.flush()
"""


def test_sigkill_mid_flush_loses_no_acknowledged_entry(tmp_path):
    path = make_db(tmp_path, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);")
    rng = random.Random(7)
    for round_ in range(3):
        child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, path], stdout=subprocess.PIPE, text=True)
        acknowledged = -1
        try:
            target = rng.randrange(3, 12)
            for _ in range(target):
                line = child.stdout.readline()
                assert line, "the child stopped writing"
                acknowledged = int(line)
        finally:
            child.send_signal(signal.SIGKILL)  # mid-flush: it writes continuously
            child.wait(WAIT_S)
        # Acknowledged lines still in the pipe count too.
        for line in child.stdout.read().split():
            acknowledged = int(line)
        child.stdout.close()
        missing = rows(path, "SELECT ? + 1 - count(*) FROM t WHERE id <= ?", (acknowledged, acknowledged))
        assert missing == [(0,)], (round_, acknowledged, missing)
        assert rows(path, "PRAGMA integrity_check") == [("ok",)]
        conn = sqlite3.connect(path)
        conn.execute("DELETE FROM t")
        conn.commit()
        conn.close()


# --- one SQLite library per process ------------------------------------------------------------


def test_one_sqlite_library_in_the_process(tmp_path):
    path = make_db(tmp_path, STOCK)
    with sh.WriteBuffer(path) as buffer:  # the extension loaded into the host's sqlite3
        buffer.upsert("stock", {"sku": "a"}, "sku").wait(WAIT_S)
    handler = sh.LogHandler(str(tmp_path / "logs.db"))
    handler.close()
    sh.insert_many(sqlite3.connect(path), "stock", [{"sku": "b"}])
    with open("/proc/self/maps") as maps:
        libraries = {line.split()[-1] for line in maps if "sqlite" in line.lower() and "/" in line}
    sqlite_copies = {os.path.basename(p) for p in libraries if ".so" in p and "libhybrid" not in p}
    # The standard module (_sqlite3) and the system libsqlite3: nothing else.
    assert all(re.match(r"(_sqlite3\..*so|libsqlite3\.so.*)$", name) for name in sqlite_copies), libraries
    assert sum(1 for name in sqlite_copies if name.startswith("libsqlite3")) <= 1, libraries


# --- chunked imports ---------------------------------------------------------------------------


def test_insert_many_commits_in_chunks(tmp_path):
    path = make_db(tmp_path, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);")
    conn = sqlite3.connect(path)
    report = sh.insert_many(conn, "t", ({"id": i, "v": str(i)} for i in range(5000)), chunk_rows=1000)
    assert report.rows == 5000 and report.chunks >= 5 and report.max_lock_ms > 0
    assert conn.isolation_level == ""  # the caller's setting is restored
    report = sh.insert_many(conn, "t", ({"id": 10_000 + i, "v": "x"} for i in range(20_000)), max_lock_ms=1.0)
    assert report.rows == 20_000 and report.chunks > 1
    # SQLite's automatic checkpoint, run by the import after each COMMIT, is back on.
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
    assert rows(path, "SELECT count(*) FROM t") == [(25_000,)]


def test_a_failing_import_says_what_was_committed(tmp_path):
    path = make_db(tmp_path, STOCK)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO stock VALUES ('x', 1, '', 'x@y')")
    conn.commit()

    def source(bad_at: int, bad: dict):
        for i in range(5000):
            yield bad if i == bad_at else {"sku": f"s{i}", "qty": i}

    with pytest.raises(sh.ImportFailed) as caught:
        sh.upsert_many(conn, "stock", source(2500, {"sku": "dup", "email": "x@y"}), "sku", chunk_rows=1000)
    committed = caught.value.committed_rows
    assert 0 < committed <= 2500 and isinstance(caught.value.error, sqlite3.IntegrityError)
    assert f"the first {committed} rows were committed" in str(caught.value)
    assert rows(path, "SELECT count(*) FROM stock WHERE sku != 'x'") == [(committed,)]
    with pytest.raises(sh.ImportFailed) as caught:
        sh.upsert_many(conn, "stock", source(3500, {"sku": None}), "sku", chunk_rows=1000)
    assert isinstance(caught.value.error, sh.InvalidRow) and caught.value.error.argument == "rows"
    assert caught.value.committed_rows <= 3500
    conn.execute("BEGIN")
    with pytest.raises(sh.ImportFailed, match="inside a transaction"):
        sh.insert_many(conn, "stock", [{"sku": "y"}])
    conn.rollback()


# --- the log handler -------------------------------------------------------------------------


def rust_log_schema() -> str:
    source = open(os.path.join(ROOT, "client", "src", "logdb", "schema.rs")).read()
    return re.search(r'execute_batch\(\s*"(.*?)",\s*\)', source, re.S).group(1)


def table_shape(path: str) -> dict:
    shape = {}
    for (table,) in rows(path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
        shape[table] = rows(path, f"SELECT name, type, \"notnull\", pk FROM pragma_table_info('{table}')")
    shape["indexes"] = rows(path, "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' ORDER BY name")
    return shape


def test_log_handler_writes_the_rust_log_databases_table_shape(tmp_path):
    rust = str(tmp_path / "rust-logs.db")
    conn = sqlite3.connect(rust)
    conn.executescript(rust_log_schema())
    conn.close()
    path = str(tmp_path / "app-logs.db")
    handler = sh.LogHandler(path)
    logger = logging.getLogger("tests.shape")
    logger.addHandler(handler)
    logger.setLevel(1)
    try:
        logger.info("user %s logged in", "ann", extra={"user_id": 7, "path": "/login", "obj": object()})
        logger.warning("disk at 91%")
        logger.critical("down")
        logger.log(5, "very verbose")
        try:
            1 / 0
        except ZeroDivisionError:
            logger.exception("failed")
        handler.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert table_shape(path) == table_shape(rust)
    entries = sh.query_logs(path, target="tests")
    assert [(e["level"], e["message"]) for e in entries] == [
        ("INFO", "user ann logged in"),
        ("WARN", "disk at 91%"),
        ("ERROR", "down"),
        ("TRACE", "very verbose"),
        ("ERROR", "failed"),
    ]
    fields = entries[0]["fields"]
    assert fields["user_id"] == 7 and fields["path"] == "/login" and fields["obj"].startswith("<object")
    assert entries[2]["fields"] == {"levelname": "CRITICAL"}
    assert "ZeroDivisionError" in entries[4]["fields"]["exc_info"]
    assert entries[0]["file"].endswith("test_buffer.py") and entries[0]["line"] > 0
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", entries[0]["ts"])
    # The same query works on both files (the Rust README's example).
    query = "SELECT count(*) FROM entries WHERE json_extract(fields, '$.user_id') = 7"
    assert rows(path, query) == [(1,)] and rows(rust, query) == [(0,)]
    assert [e["message"] for e in sh.query_logs(path, level="WARNING")] == ["disk at 91%", "down", "failed"]
    assert [e["message"] for e in sh.query_logs(path, contains="91%")] == ["disk at 91%"]
    assert rows(path, "SELECT written, batches >= 1, dropped, failed FROM writer_stats") == [(5, 1, 0, 0)]


def test_log_retention_deletes_by_age(tmp_path):
    path = str(tmp_path / "logs.db")
    handler = sh.LogHandler(path, retention=3 * 86_400, retention_chunk=7)
    now = time.time()
    for i in range(40):
        record = logging.LogRecord("old" if i < 25 else "new", logging.INFO, __file__, 1, f"m{i}", (), None)
        record.created = now - (10 * 86_400 if i < 25 else 60)
        handler.handle(record)
    handler.flush()
    assert handler.run_retention() == 25
    handler.close()
    assert [e["target"] for e in sh.query_logs(path)] == ["new"] * 15
    assert rows(path, "SELECT deleted FROM writer_stats") in ([(0,)], [(25,)])  # written with the next batch
    assert handler.stats().deleted == 25


def test_log_handler_never_blocks_a_full_queue_drops_and_counts(tmp_path):
    path = str(tmp_path / "logs.db")
    handler = sh.LogHandler(path, capacity=100)
    held = HeldLock(path)  # the writer cannot commit
    logger = logging.getLogger("tests.full")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        emitted = 5000
        done = threading.Event()

        def emit_all():
            for i in range(emitted):
                logger.error("line %d", i)
            done.set()

        thread = threading.Thread(target=emit_all)
        thread.start()
        assert done.wait(WAIT_S), "emit blocked while the log file was locked"
        held.release()
        handler.flush()
        stats = handler.stats()
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert stats.dropped > 0
    written = rows(path, "SELECT count(*) FROM entries")[0][0]
    assert written + stats.dropped + stats.failed == emitted, (written, stats)
    assert written == stats.written


def test_log_handler_under_a_10000_records_per_second_burst(tmp_path):
    path = str(tmp_path / "logs.db")
    handler = sh.LogHandler(path)
    logger = logging.getLogger("tests.burst")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    emitted = 0
    try:
        started = time.monotonic()
        for second in range(2):  # 10,000 records/s, paced in 10 ms slices
            for slice_ in range(100):
                for _ in range(100):
                    logger.info("request %d done", emitted, extra={"ms": 1.5})
                    emitted += 1
                pause = started + second + (slice_ + 1) / 100 - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
        handler.flush(WAIT_S)
        stats = handler.stats()
    finally:
        logger.removeHandler(handler)
        handler.close()
    written = rows(path, "SELECT count(*) FROM entries")[0][0]
    assert emitted == 20_000
    assert written + stats.dropped + stats.failed == emitted, (written, stats)
    assert rows(path, "SELECT written, dropped FROM writer_stats") == [(written, stats.dropped)]
    print(f"burst: {written} written, {stats.dropped} dropped, {stats.batches} batches")


# --- the FastAPI lifespan example (docs/python-buffer.md) ---------------------------------------


def test_fastapi_lifespan_example(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    path = make_db(tmp_path, "CREATE TABLE progress(job TEXT PRIMARY KEY, pct INT);")
    os.environ["APP_DB"] = path
    example = os.path.join(ROOT, "docs", "examples", "fastapi_buffer.py")
    namespace: dict = {"__name__": "fastapi_buffer"}
    exec(compile(open(example).read(), example, "exec"), namespace)
    app = namespace["app"]
    with TestClient(app) as client:
        for pct in (10, 50, 100):
            assert client.put("/jobs/a/progress", json={"pct": pct}).status_code == 202
        response = client.post("/jobs/b/done")
        assert response.status_code == 200, response.text
    # Leaving the lifespan closed the buffer: everything is in the file.
    assert rows(path, "SELECT job, pct FROM progress ORDER BY job") == [("a", 100), ("b", 100)]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="autocommit= is new in Python 3.12")
def test_python_312_autocommit_connections(tmp_path):
    path = make_db(tmp_path, STOCK)
    factory = lambda: sqlite3.connect(path, autocommit=False)  # noqa: E731
    with sh.WriteBuffer(connect=factory) as buffer:
        buffer.upsert("stock", {"sku": "a", "qty": 1}, "sku").wait(WAIT_S)
    conn = sqlite3.connect(path, autocommit=False)
    with pytest.raises(sh.ImportFailed, match="autocommit=False"):
        sh.insert_many(conn, "stock", [{"sku": "b"}])
    conn.autocommit = True
    assert sh.insert_many(conn, "stock", [{"sku": "b"}]).rows == 1
    assert conn.autocommit is True
    assert rows(path, "SELECT sku FROM stock ORDER BY sku") == [("a",), ("b",)]
