"""Fixtures the server tests share beyond tests/conftest.py."""

from tests.helpers.private_pg import private_pg  # noqa: F401  (a fixture: a private PostgreSQL)
