"""``airlock executor``: one executor process against the shared database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from executor.runtime.registry import resolve_runtime
from executor.settings import ExecutorSettings
from executor.worker import Executor
from server.domain.states import RunState
from server.store import Store, make_engine
from server.store.engine import sync_url
from server.store.notify import Notifier, PgListener
from server.telemetry import setup_telemetry

log = logging.getLogger(__name__)


class SchemaMissing(RuntimeError):
    """The database has no Airlock schema (after waiting ``schema_wait_seconds`` for it)."""


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


async def open_store(url: str, pool_size: int = 4) -> tuple[Store, PgListener | None]:
    """A store whose notifier hears other processes' commits (LISTEN on PostgreSQL)."""
    notifier = Notifier()
    store = Store(make_engine(url=url, pool_size=pool_size), notifier)
    listener = None
    if store.dialect == "postgresql":
        listener = PgListener(sync_url(url), notifier)
        listener.start()
    return store, listener


async def run_executor(settings: ExecutorSettings, stop: asyncio.Event) -> None:
    url = settings.database_url.get_secret_value()
    telemetry = setup_telemetry("airlock-executor", settings.otlp_endpoint)  # OTLP if set
    runtime = await resolve_runtime(settings.runtime, **settings.model_dump())
    store, listener = await open_store(url, settings.db_pool_size)
    ex = Executor(settings, store, runtime)
    relay: asyncio.Task[None] | None = None
    try:
        if not await wait_for_schema(store, settings.schema_wait_seconds, stop):
            return
        await ex.start()
        if settings.relay_events:
            from executor.relay import RelaySettings, run_relay

            relay = asyncio.create_task(run_relay(RelaySettings(database_url=url), stop),  # type: ignore[arg-type]
                                        name="relay")
        await stop.wait()
    finally:
        if relay is not None:
            await relay  # it stops on the same event, after the batch in flight
        await ex.stop()
        if listener:
            await listener.stop()
        await store.dispose()
        for h in telemetry:
            h.shutdown()


def install_signal_handlers(stop: asyncio.Event) -> None:
    """First SIGINT/SIGTERM asks for a graceful stop; a second one exits at once."""
    loop = asyncio.get_running_loop()

    def handler() -> None:
        if stop.is_set():
            raise SystemExit(130)
        log.info("stopping (again to force)")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, handler)


EXIT_CONFIG = 3  # as ``airlock executor``: the host or the database cannot serve


def main() -> int:
    """Entry for ``python -m executor.main`` (the CLI's ``airlock executor`` does the same)."""
    from executor.runtime.base import RuntimeUnavailable
    from server.logs import setup_logging

    settings = ExecutorSettings()
    setup_logging(settings.log_level, settings.log_format)

    async def go() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_executor(settings, stop)

    try:
        asyncio.run(go())
    except (RuntimeUnavailable, SchemaMissing) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
