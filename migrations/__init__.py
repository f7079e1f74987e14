"""Alembic migrations for PostgreSQL and SQLite (run with ``airlock migrate``)."""
