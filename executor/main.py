"""``airlock executor``: one executor process against the shared database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from executor.runtime.registry import resolve_runtime
from executor.settings import ExecutorSettings
from executor.worker import Executor
from server.store import Store, make_engine
from server.store.engine import sync_url
from server.store.notify import Notifier, PgListener
from server.telemetry import setup_telemetry

log = logging.getLogger(__name__)


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


def main() -> int:
    """Entry for ``python -m executor.main`` (the CLI's ``airlock executor`` calls the same)."""
    from server.logs import setup_logging

    settings = ExecutorSettings()
    setup_logging(settings.log_level, settings.log_format)

    async def go() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_executor(settings, stop)

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
