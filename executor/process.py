"""What an executor-side process needs before its work starts: a store that hears other
processes' commits, and the wait for the database schema.

Used by ``airlock executor`` and ``airlock relay`` (``airlock.cli``), by the relay inside an
executor, and by tests that run executors or relays in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agents.errors import Unavailable
from agents.states import RunState
from server.store import Store, make_engine
from server.store.engine import sync_url
from server.store.notify import Notifier, PgListener

log = logging.getLogger(__name__)

__all__ = ["SchemaMissing", "open_store", "wait_for_schema"]


class SchemaMissing(Unavailable):
    """Raised when the database has no Airlock schema after ``schema_wait_seconds``."""


async def open_store(url: str, pool_size: int = 4) -> tuple[Store, PgListener | None]:
    """A store whose notifier hears other processes' commits (LISTEN on PostgreSQL).

    The caller stops the listener (if any) and disposes of the store when it is done.
    """
    notifier = Notifier()
    store = Store(make_engine(url=url, pool_size=pool_size), notifier)
    listener = None
    if store.dialect == "postgresql":
        listener = PgListener(sync_url(url), notifier)
        listener.start()
    return store, listener


async def _schema_problem(store: Store) -> str | None:
    """None when the tables an executor uses exist, else why not (the database's own words)."""
    try:
        async with store.read() as tx:
            await tx.fleet.all()
            await tx.runs.count(RunState.QUEUED)
        return None
    except Exception as e:  # missing table, unreachable database, ...
        text = str(getattr(e, "orig", None) or e).strip().splitlines()
        return f"{type(e).__name__}: {text[0] if text else ''}"


async def wait_for_schema(store: Store, wait_seconds: float, stop: asyncio.Event) -> bool:
    """Wait until the schema exists (an executor may start before ``airlock serve`` has
    migrated a fresh database). False if ``stop`` was set first; ``SchemaMissing`` after
    ``wait_seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    next_log = 0.0
    delay = 0.2
    while True:
        problem = await _schema_problem(store)
        if problem is None:
            if next_log:
                log.info("database schema found; starting")
            return True
        now = loop.time()
        if now >= deadline:
            raise SchemaMissing(
                f"the database has no usable Airlock schema after waiting {wait_seconds:g}s "
                f"({problem}); run `airlock migrate` against AIRLOCK_DATABASE_URL, or start "
                f"`airlock serve` (it migrates at start-up), then start the executor again")
        if now >= next_log:  # at once, then every 10 s: clear, but not a flood
            log.warning("waiting for the database schema (%s): run `airlock migrate` or start "
                        "`airlock serve`; giving up in %.0fs (AIRLOCK_SCHEMA_WAIT_SECONDS)",
                        problem, deadline - now)
            next_log = now + 10
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(delay, max(deadline - now, 0.01))):
                await stop.wait()
        if stop.is_set():
            return False
        delay = min(delay * 2, 2.0)
