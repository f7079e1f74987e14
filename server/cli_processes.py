"""Long-running process commands besides ``serve``: ``airlock executor`` and ``airlock dev``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.cli import Commands


async def cmd_executor(ns: argparse.Namespace) -> int:
    from executor.main import SchemaMissing, install_signal_handlers, run_executor
    from executor.runtime.base import RuntimeUnavailable
    from executor.settings import ExecutorSettings
    from server.cli import EXIT_CONFIG, load_settings

    overrides = {k: v for k, v in (("slots", ns.slots), ("runtime", ns.runtime)) if v is not None}
    settings = load_settings(ExecutorSettings, **overrides)
    from server.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    try:
        await run_executor(settings, stop)
    except (RuntimeUnavailable, SchemaMissing) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def register_executor(cli: Commands) -> None:
    p = cli.add(
        "executor", cmd_executor, help="lease queued runs and execute them in sandboxes",
        description=(
            "Run one executor: lease QUEUED runs from the database (FOR UPDATE SKIP LOCKED),\n"
            "run each in a sandbox (AIRLOCK_RUNTIME=auto|podman|dagger) under hard limits and\n"
            "record the outcome. SIGINT/SIGTERM: stop leasing, let runs finish within\n"
            "AIRLOCK_GRACE_SECONDS, then stop and re-queue them; a second signal exits at once.\n"
            "Refuses to start (exit 3) when no sandbox runtime is usable. Waits up to\n"
            "AIRLOCK_SCHEMA_WAIT_SECONDS for the database schema (a fresh database is migrated\n"
            "by `airlock serve` or `airlock migrate`), then exits 3 saying it is missing."
        ),
    )
    p.add_argument("--slots", type=int, help="runs at once (default AIRLOCK_SLOTS or 2)")
    from executor.runtime.registry import runtime_names

    p.add_argument("--runtime", choices=runtime_names(),
                   help="sandbox runtime (default AIRLOCK_RUNTIME or auto)")


async def cmd_sandbox_check(ns: argparse.Namespace) -> int:
    from executor.runtime.base import RuntimeUnavailable
    from executor.runtime.registry import resolve_runtime
    from executor.settings import ExecutorSettings
    from server.cli import EXIT_CONFIG, load_settings, print_json

    overrides = {"runtime": ns.runtime} if ns.runtime else {}
    settings = load_settings(ExecutorSettings, **overrides)
    try:  # the same runtime, from the same settings, as `airlock executor`
        runtime = await resolve_runtime(settings.runtime, **settings.model_dump())
    except RuntimeUnavailable as e:
        if ns.json:
            print_json({"ok": False, "runtime": settings.runtime, "error": str(e)})
        print(f"error: cannot run sandboxes here: {e}", file=sys.stderr)
        return EXIT_CONFIG
    image = getattr(runtime, "probe_image", None)
    if ns.json:
        print_json({"ok": True, "runtime": runtime.name, "probe_image": image})
    else:
        tried = f"a trial sandbox ran from {image}" if image else "its start-up check passed"
        print(f"sandbox runtime {runtime.name}: ok ({tried})")
    return 0


def register_sandbox_check(cli: Commands) -> None:
    p = cli.add(
        "sandbox-check", cmd_sandbox_check,
        help="check that this host can run sandboxes, as `airlock executor` would",
        description=(
            "Resolve the sandbox runtime exactly as `airlock executor` does (AIRLOCK_RUNTIME,\n"
            "AIRLOCK_PODMAN_WORK_ROOT, AIRLOCK_PODMAN_PROBE_IMAGE, ...) and run its start-up\n"
            "check. For podman that starts one real trivial sandbox with every option a run\n"
            "uses (each limit, --init, the work-dir tmpfs and binds) from the probe image\n"
            "(default localhost/airlock/base:bookworm, made by `airlock base-image`).\n"
            "Exit 0 if it works; else exit 3 with a message naming what is missing\n"
            "(catatonit for --init, runc, the probe image, ...). scripts/setup.sh ends with it."
        ),
    )
    p.add_argument("--runtime", metavar="NAME",
                   help="sandbox runtime: auto, podman, dagger (default AIRLOCK_RUNTIME or auto)")


async def cmd_dev(ns: argparse.Namespace) -> int:
    from executor.main import install_signal_handlers
    from executor.runtime.base import RuntimeUnavailable
    from server.cli import EXIT_CONFIG, ConfigError
    from server.dev import dev_settings, run_dev
    from server.logs import setup_logging

    setup_logging("WARNING", "text")  # a person is reading this terminal
    data_dir = Path(ns.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  (once, at start-up)
    try:
        server, executor = dev_settings(data_dir)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    stop = asyncio.Event()
    install_signal_handlers(stop)
    try:
        await run_dev(server, executor, stop)
    except RuntimeUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def register_dev(cli: Commands) -> None:
    p = cli.add(
        "dev", cmd_dev, help="control plane + executor in one process on embedded defaults",
        description=(
            "Everything in one process: a SQLite file under --data-dir, no NATS (runs are\n"
            "watched from the database), the sandbox runtime auto-detected (a Dagger engine\n"
            "if reachable, else podman; never unsandboxed). Prints the gRPC and web UI\n"
            "addresses and, on first start, the admin token (also saved to DATA_DIR/admin.token)."
        ),
    )
    p.add_argument("--data-dir", default="airlock-data", help="where the database and token live")


async def cmd_relay(ns: argparse.Namespace) -> int:
    from executor.main import install_signal_handlers
    from executor.relay import RelaySettings, run_relay
    from server.cli import load_settings
    from server.logs import setup_logging

    settings = load_settings(RelaySettings)
    setup_logging(settings.log_level, "json")
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await run_relay(settings, stop)
    return 0


def register_relay(cli: Commands) -> None:
    cli.add(
        "relay", cmd_relay, help="publish run events from the database outbox to NATS JetStream",
        description=(
            "Publish run_events rows to the JetStream stream AIRLOCK_NATS_STREAM (created or\n"
            "checked at start) on subjects <AIRLOCK_NATS_SUBJECT_PREFIX>.<agent>.<state>, with\n"
            "Nats-Msg-Id = the event id; rows are marked published only after JetStream's ack.\n"
            "Wakes on LISTEN/NOTIFY (PostgreSQL), survives NATS outages and restarts. Several\n"
            "relays may run against one PostgreSQL database. See docs/events.md."
        ),
    )
