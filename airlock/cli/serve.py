"""``airlock serve``: the control plane until SIGINT or SIGTERM, then an ordered stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable
from typing import TYPE_CHECKING, NoReturn

from airlock.cli._framework import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK, Commands, ConfigError
from airlock.cli._output import err
from airlock.cli._settings import load_settings

if TYPE_CHECKING:
    from server.app import ControlPlane
    from server.settings import ServerSettings


async def cmd_serve(ns: argparse.Namespace) -> int:
    from server.settings import ServerSettings

    settings = load_settings(ServerSettings)
    from server.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    from server.app import ControlPlane

    try:
        cp = ControlPlane(settings)
    except (OSError, ValueError) as e:  # the policy file is read and checked here
        raise ConfigError(f"AIRLOCK_POLICY_FILE: {e}") from None

    stop, force = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:  # only flags: the main coroutine does the work
        if stop.is_set():
            force.set()
        stop.set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
    try:
        try:
            if not await _unless(cp.start(), force):
                _forced_exit()
        except Exception as e:
            err(f"start-up failed: {e}")
            with contextlib.suppress(Exception):
                await cp.stop(grace=0)
            return EXIT_CONFIG
        _print_started(cp, settings)
        await stop.wait()
        err("airlock: shutting down (press Ctrl-C again to force)")
        if not await _unless(cp.stop(grace=ns.grace), force):
            _forced_exit()
        err("airlock: stopped")
        return EXIT_OK
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _forced_exit() -> NoReturn:
    """Second signal: leave now. A half-stopped gRPC server cannot be finalised cleanly, and
    the point of forcing is not to wait for anything (the database is left to recover)."""
    err("airlock: forced exit")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(EXIT_INTERRUPTED)


async def _unless(work: Awaitable[None], force: asyncio.Event) -> bool:
    """Run ``work`` unless ``force`` is set first (then cancel it); True if it completed."""
    task = asyncio.ensure_future(work)
    forced = asyncio.ensure_future(force.wait())
    await asyncio.wait({task, forced}, return_when=asyncio.FIRST_COMPLETED)
    forced.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return False


def _print_started(cp: ControlPlane, settings: ServerSettings) -> None:
    print(f"airlock: control plane serving gRPC on {cp.grpc_address}", flush=True)
    if cp.http_address:
        print(f"airlock: gRPC-Web and the UI on http://{cp.http_address}", flush=True)
    if cp.admin_token:
        if settings.admin_token_file:
            # Saved to a file: never print it too (stdout usually ends up in a log).
            print(f"airlock: created the first admin key; its token was written to "
                  f"{settings.admin_token_file} (mode 0600)", flush=True)
        else:
            print("airlock: created the first admin key; its token (shown once):", flush=True)
            print(f"    {cp.admin_token}", flush=True)
            print("airlock: the token was not written anywhere (set AIRLOCK_ADMIN_TOKEN_FILE "
                  "to keep it in a file); store it now", flush=True)


def register(cli: Commands) -> None:
    p = cli.add(
        "serve", cmd_serve, help="run the control plane until SIGINT or SIGTERM",
        description=(
            "Run the control plane (gRPC API) until SIGINT or SIGTERM, then stop gracefully;\n"
            "a second SIGINT forces the exit. Settings come from AIRLOCK_* environment\n"
            "variables (AIRLOCK_DATABASE_URL, AIRLOCK_GRPC_LISTEN, AIRLOCK_POLICY_FILE, ...);\n"
            "a bad value stops start-up with exit status 3 and names the variable.\n"
            "On first start an admin key is created and its token printed once."
        ),
    )
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="how long in-flight RPCs may finish on shutdown (default 10)")
