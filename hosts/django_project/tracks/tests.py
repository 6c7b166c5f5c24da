"""sqlite_hybrid.django in a real project, run by Django's own test runner (manage.py test)."""

import json
import os
import sqlite3
import subprocess
import sys
import threading

from django.db import connections, transaction
from django.test import Client, TransactionTestCase

from sqlite_hybrid import is_lock_error

from .models import Track

PROCESS_ROW = "SELECT connections, handler_active FROM hybrid_lock_metrics WHERE scope = 'process' AND db = %s"
HOLDER = """
import sys, time, sqlite_hybrid
conn = sqlite_hybrid.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE tracks_track SET title = 'held' WHERE id = 1")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def path_of(alias):
    return os.path.realpath(connections[alias].settings_dict["NAME"])


def one(alias, sql, params=()):
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


class HybridInDjango(TransactionTestCase):
    databases = {"default", "legacy"}
    reset_sequences = True  # the track of setUp() is id 1 in every test

    def setUp(self):
        for alias in ("default", "legacy"):
            Track.objects.using(alias).create(title="one")

    def test_loaded_with_handler_on_every_connection(self):
        for alias in ("default", "legacy"):
            self.assertTrue(one(alias, "SELECT hybrid_version()")[0])
            connections_, active = one(alias, PROCESS_ROW, [path_of(alias)])
            self.assertGreaterEqual(connections_, 1)
            self.assertEqual(active, connections_, alias)

    def test_app_timeout_is_the_deadline_and_policy_applied(self):
        for alias, expected in (("default", 3000.0), ("legacy", 2000.0)):
            config = json.loads(one(alias, "SELECT hybrid_busy_config()")[0])
            self.assertEqual(config["timeout_ms"], expected, alias)
            self.assertEqual(config["jitter"], "full", alias)

    def test_atomic_starts_with_begin_immediate(self):
        # Django 5.1+: "default" through OPTIONS["transaction_mode"], "legacy" through
        # SQLITE_HYBRID["TRANSACTION_MODE"] (how Django < 5.1 gets it).
        for alias in ("default", "legacy"):
            other = sqlite3.connect(path_of(alias), timeout=0, isolation_level=None)
            with transaction.atomic(using=alias):
                Track.objects.using(alias).count()  # only a read so far
                with self.assertRaises(sqlite3.OperationalError) as caught:
                    other.execute("BEGIN IMMEDIATE")  # the write lock is already ours
                self.assertTrue(is_lock_error(caught.exception))
            other.execute("BEGIN IMMEDIATE")  # released at commit
            other.execute("ROLLBACK")
            other.close()

    def test_read_then_write_waits_for_a_holder_in_another_process(self):
        for alias in ("default", "legacy"):
            holder = subprocess.Popen([sys.executable, "-c", HOLDER, path_of(alias), "0.5"],
                                      stdout=subprocess.PIPE, text=True)
            try:
                self.assertEqual(holder.stdout.readline().strip(), "locked")
                with transaction.atomic(using=alias):
                    track = Track.objects.using(alias).get(pk=1)
                    track.plays += 1
                    track.save(using=alias, update_fields=["plays"])
            finally:
                self.assertEqual(holder.wait(timeout=30), 0)
            self.assertEqual(Track.objects.using(alias).get(pk=1).plays, 1)
            self.assertEqual(Track.objects.using(alias).get(pk=1).title, "held")

    def test_concurrent_read_then_write_no_lock_error(self):
        errors = []

        def worker():
            try:
                for _ in range(20):
                    with transaction.atomic():
                        track = Track.objects.get(pk=1)
                        track.plays += 1
                        track.save(update_fields=["plays"])
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(repr(error))
            finally:
                connections.close_all()

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(Track.objects.get(pk=1).plays, 80)

    def test_handler_reasserted_at_each_request(self):
        one("default", "PRAGMA busy_timeout = 250")  # some code replaces the handler
        connections_, active = one("default", PROCESS_ROW, [path_of("default")])
        self.assertEqual(active, connections_ - 1)
        response = Client().get("/ping")
        self.assertEqual(response.status_code, 200)
        connections_, active = one("default", PROCESS_ROW, [path_of("default")])
        self.assertEqual(active, connections_)
        config = json.loads(one("default", "SELECT hybrid_busy_config()")[0])
        self.assertEqual(config["timeout_ms"], 250.0)  # its deadline kept

    def test_view_read_then_write(self):
        response = Client().post("/tracks/1/play")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"plays": 1})
