#!/usr/bin/env python3
"""The Django project of `make hosts`: `python manage.py test` with sqlite_hybrid.django installed."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hybridsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
