"""The store: units of work that open one repository per kind of record.

Services open transactions (``async with store.transaction() as tx``) or read-only units
(``store.read()``) and call the repositories on them: ``tx.runs``, ``tx.events`` (the outbox),
``tx.approvals``, ``tx.registry``, ``tx.keys``, ``tx.fleet``, ``tx.audit``. Nothing above
this package builds SQL, and rows cross as the frozen records of ``server.domain.models``.
Every run state change goes through ``RunRepository`` (``server/store/runs.py``), which
checks the state table and writes the run's event (the outbox) in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.store.approvals import ApprovalRepository
from server.store.audit import AuditRepository
from server.store.base import Unit
from server.store.events import EventRepository
from server.store.fleet import FleetRepository
from server.store.keys import KeyRepository
from server.store.notify import Notifier
from server.store.registry import RegistryRepository
from server.store.runs import RunRepository
from server.telemetry import metrics_api, run_ended


class Tx(Unit):
    """One unit of work (a transaction, or a read) and its repositories.

    Obtain it from ``Store.transaction()`` or ``Store.read()``.
    """

    __slots__ = ("approvals", "audit", "events", "fleet", "keys", "registry", "runs")

    def __init__(self, conn: AsyncConnection, dialect: str) -> None:
        super().__init__(conn, dialect)
        self.events = EventRepository(self)
        self.runs = RunRepository(self, self.events)
        self.approvals = ApprovalRepository(self)
        self.registry = RegistryRepository(self)
        self.keys = KeyRepository(self)
        self.fleet = FleetRepository(self)
        self.audit = AuditRepository(self)


@functools.cache
def _notify_stmt(n: int) -> Any:
    return text("SELECT " + ", ".join(f"pg_notify(:c{i}, :k{i})" for i in range(n)))


def _notifications(unit: Tx) -> list[tuple[str, str | None]]:
    """(channel, key) to publish after ``unit`` commits: a channel notified without a key
    wakes all its waiters, so its keyed notifications are not needed."""
    keyed = sorted((c, k) for c, k in unit.notify_keys if c not in unit.notify)
    return [*((c, None) for c in sorted(unit.notify)), *keyed]


class Store:
    """Owns the engine; hands out transactions and read-only units of work."""

    def __init__(self, engine: AsyncEngine, notifier: Notifier | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.notifier = notifier or Notifier()
        # SQLite has one writer; serialising writers in-process avoids "database is locked"
        # and lost-update races that FOR UPDATE would prevent on PostgreSQL.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self._read_engine = (engine.execution_options(isolation_level="AUTOCOMMIT")
                             if self.dialect == "postgresql" else engine)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """A transaction: committed when the block ends, rolled back if it raises.

        After the commit, waiters on the channels it touched wake up (one NOTIFY round trip
        for all of them on PostgreSQL) and runs it finished are counted and traced.
        """
        lock = self._write_lock or contextlib.nullcontext()
        async with lock:
            async with self.engine.connect() as conn:
                if self.dialect == "sqlite":
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    await conn.begin()
                tx = Tx(conn, self.dialect)
                try:
                    yield tx
                    notes = _notifications(tx)
                    if notes and self.dialect == "postgresql":  # one round trip for them all
                        params: dict[str, str] = {}
                        for i, (ch, key) in enumerate(notes):
                            params[f"c{i}"], params[f"k{i}"] = ch, key or ""
                        await conn.execute(_notify_stmt(len(notes)), params)
                    await conn.commit()
                except BaseException:
                    await conn.rollback()
                    raise
        for ch, key in notes:
            self.notifier.publish(ch, key)
        if tx.finished:
            m = metrics_api()
            for run, state, reason in tx.finished:
                m.run_finished(state)
                run_ended(run_id=run.id, traceparent=run.traceparent, agent=run.agent,
                          capability=run.capability, attempt=run.attempt,
                          created_at=run.created_at, state=state, reason=reason)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        """A read-only unit of work (no writer lock on SQLite).

        On PostgreSQL it runs in autocommit: under READ COMMITTED every statement takes its
        own snapshot anyway, so BEGIN/ROLLBACK only added two round trips per read.
        """
        async with self._read_engine.connect() as conn:
            yield Tx(conn, self.dialect)
            await conn.rollback()

    async def dispose(self) -> None:
        await self.engine.dispose()
