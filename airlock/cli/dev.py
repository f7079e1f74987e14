"""``airlock dev``: control plane and executor in one process, on embedded defaults.

SQLite file, no NATS (WatchRun streams from the database), sandbox runtime auto-detected
(a Dagger engine if reachable, else podman); refuses to start if no sandbox is usable.
One executor process on SQLite is the supported shape (see docs/deployment.md).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airlock.cli._framework import EXIT_CONFIG, EXIT_OK, Commands
from airlock.cli._output import err
from airlock.cli._process import install_signal_handlers
from airlock.cli._settings import load_settings

if TYPE_CHECKING:
    from executor.settings import ExecutorSettings
    from server.settings import ServerSettings


async def run_dev(server: ServerSettings, executor: ExecutorSettings, stop: asyncio.Event,
                  *, ready: asyncio.Event | None = None) -> None:
    from executor.runtime.registry import resolve_runtime
    from executor.worker import Executor
    from server.app import ControlPlane

    runtime = await resolve_runtime(executor.runtime, **executor.model_dump())
    cp = ControlPlane(server)
    await cp.start()
    # Same store (and so the same SQLite writer lock and wake-ups) as the control plane.
    ex = Executor(executor, cp.store, runtime)
    try:
        await ex.start()
        token_note = ""
        if cp.admin_token:
            where = f" (saved to {server.admin_token_file})" if server.admin_token_file else ""
            token_note = f"\n  admin token: {cp.admin_token}{where}"
        http = getattr(cp, "http_address", None)
        print(f"airlock dev is up\n  gRPC:    {cp.grpc_address}"
              + (f"\n  web UI:  http://{http}/" if http else "")
              + f"\n  runtime: {runtime.name}, {executor.slots} slots"
              + f"\n  data:    {server.database_url.get_secret_value()}{token_note}", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await ex.stop()
        await cp.stop()


def dev_settings(data_dir: Path, **overrides: Any) -> tuple[ServerSettings, ExecutorSettings]:
    """Embedded defaults rooted at ``data_dir``; environment variables still apply.

    ``ConfigError`` names the variable when one is refused.
    """
    from executor.settings import ExecutorSettings
    from server.settings import ServerSettings

    url = f"sqlite:///{(data_dir / 'airlock.db').resolve()}"
    server = load_settings(ServerSettings, **{"database_url": url,
                                              "admin_token_file": data_dir / "admin.token",
                                              **overrides})
    executor = load_settings(ExecutorSettings, database_url=url)
    return server, executor


async def cmd_dev(ns: argparse.Namespace) -> int:
    from executor.runtime.base import RuntimeUnavailable
    from server.logs import setup_logging

    setup_logging("WARNING", "text")  # a person is reading this terminal
    data_dir = Path(ns.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  (once, at start-up)
    server, executor = dev_settings(data_dir)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    try:
        await run_dev(server, executor, stop)
    except RuntimeUnavailable as e:
        err(f"error: {e}")
        return EXIT_CONFIG
    return EXIT_OK


def register(cli: Commands) -> None:
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
