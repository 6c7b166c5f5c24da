"""A small real Django project using sqlite_hybrid.django (hosts/python/test_hosts.py runs its tests)."""

import os

import django

DATA = os.environ.get("DJANGO_DATA_DIR") or os.path.join(os.path.dirname(__file__), "..", "data")
os.makedirs(DATA, exist_ok=True)

SECRET_KEY = "hosts-test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "hybridsite.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "sqlite_hybrid.django", "tracks"]
MIDDLEWARE: list = []

# "default": the documented set-up (Django 5.1+: OPTIONS["transaction_mode"]).
# "legacy": no transaction_mode in OPTIONS, as Django < 5.1 must be configured:
# SQLITE_HYBRID["TRANSACTION_MODE"] gives it BEGIN IMMEDIATE all the same.
_default_options = {"timeout": 3}
if django.VERSION >= (5, 1):
    _default_options["transaction_mode"] = "IMMEDIATE"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(DATA, "default.db"),
        "OPTIONS": _default_options,
        "TEST": {"NAME": os.path.join(DATA, "test_default.db")},
    },
    "legacy": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(DATA, "legacy.db"),
        "OPTIONS": {"timeout": 2},
        "TEST": {"NAME": os.path.join(DATA, "test_legacy.db")},
    },
}
SQLITE_HYBRID = {"POLICY": {"jitter": "full"}, "TRANSACTION_MODE": "IMMEDIATE"}
