"""``airlock executor``: one executor process against the shared database."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from airlock.cli._framework import EXIT_CONFIG, EXIT_OK, Commands
from airlock.cli._output import err
from airlock.cli._process import install_signal_handlers
from airlock.cli._settings import load_settings

if TYPE_CHECKING:
    from executor.settings import ExecutorSettings


async def run_executor(settings: ExecutorSettings, stop: asyncio.Event) -> None:
    """Telemetry, the sandbox runtime, the store, the schema wait, then the worker (and the
    events relay when ``AIRLOCK_RELAY_EVENTS``) until ``stop``; everything closed in order.

    ``RuntimeUnavailable`` when no sandbox runtime is usable, ``SchemaMissing`` when the
    database has no schema after the wait.
    """
    from executor.process import open_store, wait_for_schema
    from executor.relay import run_relay
    from executor.runtime.registry import resolve_runtime
    from executor.settings import RelaySettings
    from executor.worker import Executor
    from server.telemetry import setup_telemetry

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
            relay_settings = load_settings(RelaySettings, database_url=url)
            relay = asyncio.create_task(run_relay(relay_settings, stop), name="relay")
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


async def cmd_executor(ns: argparse.Namespace) -> int:
    from executor.process import SchemaMissing
    from executor.runtime.base import RuntimeUnavailable
    from executor.settings import ExecutorSettings
    from server.logs import setup_logging

    overrides = {k: v for k, v in (("slots", ns.slots), ("runtime", ns.runtime)) if v is not None}
    settings = load_settings(ExecutorSettings, **overrides)
    setup_logging(settings.log_level, settings.log_format)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    try:
        await run_executor(settings, stop)
    except (RuntimeUnavailable, SchemaMissing) as e:
        err(f"error: {e}")
        return EXIT_CONFIG
    return EXIT_OK


def register(cli: Commands) -> None:
    from executor.runtime.registry import runtime_names  # names only; no runtime is imported

    names = runtime_names()
    p = cli.add(
        "executor", cmd_executor, help="lease queued runs and execute them in sandboxes",
        description=(
            "Run one executor: lease QUEUED runs from the database (FOR UPDATE SKIP LOCKED),\n"
            f"run each in a sandbox (AIRLOCK_RUNTIME={'|'.join(names)}) under hard limits and\n"
            "record the outcome. SIGINT/SIGTERM: stop leasing, let runs finish within\n"
            "AIRLOCK_GRACE_SECONDS, then stop and re-queue them; a second signal exits at once.\n"
            "Refuses to start (exit 3) when no sandbox runtime is usable. Waits up to\n"
            "AIRLOCK_SCHEMA_WAIT_SECONDS for the database schema (a fresh database is migrated\n"
            "by `airlock serve` or `airlock migrate`), then exits 3 saying it is missing.\n"
            "AIRLOCK_RELAY_EVENTS=true also runs the events relay in this process."
        ),
    )
    p.add_argument("--slots", type=int, help="runs at once (default AIRLOCK_SLOTS or 2)")
    p.add_argument("--runtime", choices=names,
                   help="sandbox runtime (default AIRLOCK_RUNTIME or auto)")
