"""Persistence: SQLAlchemy 2 tables and intention-named queries. PostgreSQL and SQLite."""

from server.store.engine import make_engine, sync_url
from server.store.store import Store, Tx

__all__ = ["Store", "Tx", "make_engine", "sync_url"]
