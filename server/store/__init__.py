"""Persistence: SQLAlchemy 2 tables and one repository per kind of record. PostgreSQL and
SQLite."""

from server.store.base import Duplicate
from server.store.engine import make_engine, sync_url
from server.store.store import Store, Tx

__all__ = ["Duplicate", "Store", "Tx", "make_engine", "sync_url"]
