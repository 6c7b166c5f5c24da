"""Django: sqlite-hybrid in every SQLite connection Django opens.

Add the app to ``INSTALLED_APPS``::

    INSTALLED_APPS = [..., "sqlite_hybrid.django"]

    DATABASES = {"default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
        "OPTIONS": {
            "timeout": 5,                        # the deadline: kept (unless POLICY sets timeout_ms)
            "transaction_mode": "IMMEDIATE",     # Django 5.1+: atomic() starts BEGIN IMMEDIATE
        },
    }}

    SQLITE_HYBRID = {                            # optional
        "POLICY": {"jitter": "full"},            # keys of sqlite_hybrid.POLICY_KEYS
        "TRANSACTION_MODE": "IMMEDIATE",         # the same for Django < 5.1 (or databases
    }                                            # without OPTIONS["transaction_mode"])

On Django's ``connection_created`` signal, for every database whose vendor is
``sqlite``: the extension is loaded (:func:`sqlite_hybrid.load`) with the
policy, the deadline being the one SQLite's handler had (``OPTIONS["timeout"]``,
5 s by default, or an ``init_command`` ``PRAGMA busy_timeout``) unless the
policy gives ``timeout_ms``; the transaction mode is applied. At every
``request_started`` the hybrid handler is re-installed on the thread's open
SQLite connections (one ``SELECT``), in case code in between ran
``PRAGMA busy_timeout``.

Why ``IMMEDIATE``: Django runs reads outside transactions (autocommit) and
starts a transaction only for ``atomic()`` blocks; with ``BEGIN IMMEDIATE``
such a block takes the write lock first, waiting in the hybrid handler, so
reading and then writing in it cannot fail with ``SQLITE_BUSY``; reads
outside ``atomic()`` never wait for a writer (WAL).
"""

default_app_config = "sqlite_hybrid.django.apps.SqliteHybridConfig"  # Django < 3.2
