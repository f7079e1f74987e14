"""What every repository shares: the transaction's connection and what it owes after commit.

A ``Unit`` is one open connection (a transaction, or an autocommit read) plus the
wake-ups (NOTIFY channels) and finished runs it collects; the ``Store`` acts on those after
the commit. Repositories hold the unit they were opened from and nothing else.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.models import Run


class Duplicate(Exception):
    """A unique constraint refused the row (the caller decides what that means)."""


class Unit:
    """One connection's unit of work: its dialect, and what to do once it commits."""

    __slots__ = ("conn", "dialect", "finished", "notify", "notify_keys", "pg")

    def __init__(self, conn: AsyncConnection, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect
        self.pg = dialect == "postgresql"  # FOR UPDATE, advisory locks, NOTIFY
        self.notify: set[str] = set()  # channels whose every waiter wakes
        self.notify_keys: set[tuple[str, str]] = set()  # (channel, key): only that key's waiters
        # Runs that entered a terminal state (as they are now, with their usage), with that
        # state and reason (metrics and the run span, after the commit).
        self.finished: list[tuple[Run, str, str]] = []


class Repository:
    """Base of the repositories: typed methods over one kind of record, in one unit."""

    __slots__ = ("_conn", "_unit")

    def __init__(self, unit: Unit) -> None:
        self._unit = unit
        self._conn = unit.conn
