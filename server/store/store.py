"""The store: units of work that open one repository per kind of record.

Services open transactions (``async with store.transaction() as tx``) or read-only units
(``store.read()``) and call the repositories on them: ``tx.runs``, ``tx.events`` (the outbox),
``tx.approvals``, ``tx.registry``, ``tx.keys``, ``tx.fleet``, ``tx.audit``, ``tx.usage``,
``tx.analytics``. Nothing above this package builds SQL, and rows cross as the frozen
records of ``server.domain.models``. Every run state change goes through ``RunRepository``
(``server/store/runs.py``), which checks the state table and writes the run's event (the
outbox) in the same transaction.

The units of work are the one place where a database that cannot be reached (connection
refused or timed out, connection dropped) becomes the domain's ``DatabaseUnavailable``:
UNAVAILABLE on every transport, with no driver text. Each such failure also sets
``Store.unavailable_seen``, so the control plane's health check probes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.domain.errors import DatabaseUnavailable
from server.domain.models import Agent, AgentVersion
from server.store.analytics import AnalyticsRepository
from server.store.approvals import ApprovalRepository
from server.store.audit import AuditRepository
from server.store.base import Unit
from server.store.events import EventRepository
from server.store.fleet import FleetRepository
from server.store.keys import KeyRepository
from server.store.notify import Notifier
from server.store.registry import RegistryRepository
from server.store.registry_cache import RegistryCache
from server.store.runs import RunRepository
from server.store.usage import UsageRepository
from server.store.workflows import WorkflowRepository
from server.telemetry import RunUsage, metrics_api, run_ended

log = logging.getLogger(__name__)

PING_TIMEOUT_SECONDS = 5.0  # a health probe that takes longer counts as a failure


def connection_failure(e: BaseException, *, os_errors: bool) -> bool:
    """True if ``e`` says the database cannot be reached, rather than that a statement failed.

    ``os_errors``: also count bare ``OSError``s (``ConnectionRefusedError``, ``TimeoutError``),
    which only the store's own connect/commit/rollback may blame on the database; raised
    inside a unit's body they may have other causes.
    """
    if isinstance(e, sa_exc.DBAPIError):
        return (e.connection_invalidated
                or isinstance(e, sa_exc.OperationalError | sa_exc.InterfaceError))
    if isinstance(e, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    if isinstance(e, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    return os_errors and isinstance(e, OSError)


class Tx(Unit):
    """One unit of work (a transaction, or a read) and its repositories.

    Obtain it from ``Store.transaction()`` or ``Store.read()``.
    """

    __slots__ = ("analytics", "approvals", "audit", "events", "fleet", "keys", "registry", "runs",
                 "usage", "workflows")

    def __init__(self, conn: AsyncConnection, dialect: str) -> None:
        super().__init__(conn, dialect)
        self.events = EventRepository(self)
        self.runs = RunRepository(self, self.events)
        self.approvals = ApprovalRepository(self)
        self.registry = RegistryRepository(self)
        self.keys = KeyRepository(self)
        self.fleet = FleetRepository(self)
        self.audit = AuditRepository(self)
        self.workflows = WorkflowRepository(self, self.runs)
        self.runs.step_ended = self.workflows.step_ended  # advances workflows, same transaction
        self.usage = UsageRepository(self)
        self.analytics = AnalyticsRepository(self)

    async def flush_chains(self) -> None:
        """Write the heads of the chains this unit moved past their stored head."""
        for chain in sorted(self.dirty_heads):
            seq, head = self.chain_heads[chain]
            if chain.startswith("run:"):
                await self.runs.store_chain_head(chain.removeprefix("run:"), seq, head)
            else:
                await self.audit.store_head(chain, seq, head)
        self.dirty_heads.clear()


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
        # Set on every DatabaseUnavailable raised; the control plane's health check waits on it.
        self.unavailable_seen = asyncio.Event()
        # Off until the control plane enables it (on PostgreSQL: while its LISTEN is up).
        self.registry_cache = RegistryCache(self.notifier)

    async def agent_and_versions(self, name: str) -> tuple[Agent, list[AgentVersion]] | None:
        """The agent and its versions, oldest first; from the registry cache when it has them."""
        cache = self.registry_cache
        hit = cache.get(name)
        if hit is not None:
            return hit[0], list(hit[1])
        generation = cache.generation
        async with self.read() as tx:
            found = await tx.registry.get_agent_and_versions(name)
        if found is not None:
            cache.put(name, (found[0], tuple(found[1])), generation)
        return found

    def _unavailable(self, e: BaseException) -> DatabaseUnavailable:
        self.unavailable_seen.set()
        log.warning("database unavailable: %s: %s", type(e).__name__, str(e).strip())
        return DatabaseUnavailable()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """A transaction: committed when the block ends, rolled back if it raises.

        After the commit, waiters on the channels it touched wake up (one NOTIFY round trip
        for all of them on PostgreSQL) and runs it finished are counted and traced.
        """
        lock = self._write_lock or contextlib.nullcontext()
        in_body = False
        async with lock:
            try:
                async with self.engine.connect() as conn:
                    if self.dialect == "sqlite":
                        await conn.exec_driver_sql("BEGIN IMMEDIATE")
                    else:
                        await conn.begin()
                    tx = Tx(conn, self.dialect)
                    try:
                        in_body = True
                        yield tx
                        in_body = False
                        await tx.flush_chains()
                        notes = _notifications(tx)
                        if notes and self.dialect == "postgresql":  # one round trip for them all
                            params: dict[str, str] = {}
                            for i, (ch, key) in enumerate(notes):
                                params[f"c{i}"], params[f"k{i}"] = ch, key or ""
                            await conn.execute(_notify_stmt(len(notes)), params)
                        await conn.commit()
                    except BaseException as e:
                        await self._rollback(conn, e)
                        raise
            except Exception as e:
                if connection_failure(e, os_errors=not in_body):
                    raise self._unavailable(e) from e
                raise
        for ch, key in notes:
            self.notifier.publish(ch, key)
        if tx.finished:
            m = metrics_api()
            for run, state, reason in tx.finished:
                m.run_finished(state)
                if run.duration_seconds is not None or run.cpu_seconds is not None:
                    m.run_usage(RunUsage(
                        agent=run.agent, capability=run.capability, owner=run.submitter,
                        outcome=state, wall_seconds=run.duration_seconds,
                        cpu_seconds=run.cpu_seconds, peak_memory_bytes=run.peak_memory_bytes,
                        output_bytes=run.output_bytes, log_bytes=run.log_bytes))
                run_ended(run_id=run.id, traceparent=run.traceparent, agent=run.agent,
                          capability=run.capability, attempt=run.attempt,
                          created_at=run.created_at, state=state, reason=reason)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        """A read-only unit of work (no writer lock on SQLite).

        On PostgreSQL it runs in autocommit: under READ COMMITTED every statement takes its
        own snapshot anyway, so BEGIN/ROLLBACK only added two round trips per read.
        """
        in_body = False
        try:
            async with self._read_engine.connect() as conn:
                in_body = True
                yield Tx(conn, self.dialect)
                in_body = False
                await conn.rollback()
        except Exception as e:
            if connection_failure(e, os_errors=not in_body):
                raise self._unavailable(e) from e
            raise

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Tx]:
        """A read-only unit that sees one consistent state of the database (a REPEATABLE
        READ transaction on PostgreSQL, one read transaction on SQLite): what the verifier
        needs so a run and its records are read as of the same instant."""
        in_body = False
        try:
            async with self.engine.connect() as conn:
                if self.dialect == "sqlite":
                    await conn.exec_driver_sql("BEGIN")
                else:
                    await conn.execution_options(isolation_level="REPEATABLE READ")
                    await conn.begin()
                    await conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                in_body = True
                yield Tx(conn, self.dialect)
                in_body = False
                await conn.rollback()
        except Exception as e:
            if connection_failure(e, os_errors=not in_body):
                raise self._unavailable(e) from e
            raise

    @staticmethod
    async def _rollback(conn: AsyncConnection, cause: BaseException) -> None:
        """Roll back after ``cause``; on a lost connection the server already dropped the
        transaction, so a rollback failing for that reason does not hide ``cause``."""
        try:
            await conn.rollback()
        except Exception as e:
            if not connection_failure(e, os_errors=True):
                raise

    async def ping(self) -> bool:
        """True if the database answers ``SELECT 1`` within ``PING_TIMEOUT_SECONDS``
        (the health check; a failure here does not set ``unavailable_seen``)."""
        try:
            async with asyncio.timeout(PING_TIMEOUT_SECONDS):
                async with self._read_engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                    await conn.rollback()
        except Exception as e:
            if isinstance(e, TimeoutError) or connection_failure(e, os_errors=True):
                log.debug("database ping failed", exc_info=True)
                return False
            raise
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()
