"""``airlock dev``: control plane and executor in one process, on embedded defaults.

SQLite file, no NATS (WatchRun streams from the database), sandbox runtime auto-detected
(a Dagger engine if reachable, else podman); refuses to start if no sandbox is usable.
One executor process on SQLite is the supported shape (see docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from executor.runtime.registry import resolve_runtime
from executor.settings import ExecutorSettings
from executor.worker import Executor
from server.app import ControlPlane
from server.settings import ServerSettings

log = logging.getLogger(__name__)


async def run_dev(server: ServerSettings, executor: ExecutorSettings, stop: asyncio.Event,
                  *, ready: asyncio.Event | None = None) -> None:
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


def dev_settings(data_dir: Path, **overrides: object) -> tuple[ServerSettings, ExecutorSettings]:
    """Embedded defaults rooted at ``data_dir``; environment variables still apply."""
    url = f"sqlite:///{(data_dir / 'airlock.db').resolve()}"
    server = ServerSettings(**{"database_url": url, "admin_token_file": data_dir / "admin.token",
                               **overrides})  # type: ignore[arg-type]
    executor = ExecutorSettings(database_url=url)  # type: ignore[arg-type]
    return server, executor
