"""``airlock serve``: the control plane until SIGINT or SIGTERM, then an ordered stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable
from typing import TYPE_CHECKING, NoReturn

from airlock.cli._framework import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK, Commands, ConfigError
from airlock.cli._output import err
from airlock.cli._settings import load_settings

if TYPE_CHECKING:
    from server.settings import ServerSettings


async def cmd_serve(ns: argparse.Namespace) -> int:
    from server.settings import ServerSettings

    settings = load_settings(ServerSettings)
    from server.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    if ns.serving_process:
        return await _serve_one(settings, ns.grace, serving_process=True)
    from server.supervisor import serving_processes

    requested = settings.serve_processes if ns.processes is None else ns.processes
    n, note = serving_processes(requested, settings.database_url.get_secret_value())
    if note:
        err(f"airlock: {note}")
    if n == 1:
        return await _serve_one(settings, ns.grace)
    return await _supervise(settings, n, ns.grace)


class _Signals:
    """SIGINT/SIGTERM only set flags: the first asks for an ordered stop, the second forces."""

    def __init__(self) -> None:
        self.stop, self.force = asyncio.Event(), asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.add_signal_handler(sig, self._on_signal)
                self._installed.append(sig)

    def _on_signal(self) -> None:
        if self.stop.is_set():
            self.force.set()
        self.stop.set()

    def remove(self) -> None:
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)


async def _serve_one(settings: ServerSettings, grace: float, *,
                     serving_process: bool = False) -> int:
    """One control plane in this process; ``serving_process``: one of a supervisor's (bound
    with SO_REUSEPORT, ready reported as one JSON line on stdout, stopping when stdin closes)."""
    from server.app import ControlPlane

    try:
        cp = ControlPlane(settings, reuse_port=serving_process)
    except (OSError, ValueError) as e:  # the policy file is read and checked here
        raise ConfigError(f"AIRLOCK_POLICY_FILE: {e}") from None
    sig = _Signals()
    try:
        try:
            if not await _unless(cp.start(), sig.force):
                _forced_exit()
        except Exception as e:
            err(f"start-up failed: {e}")
            with contextlib.suppress(Exception):
                await cp.stop(grace=0)
            return EXIT_CONFIG
        if serving_process:
            _stop_when_stdin_closes(sig.stop)
            print(json.dumps({"pid": os.getpid(), "grpc": cp.grpc_address,
                              "http": cp.http_address}), flush=True)
        else:
            _print_started(cp.grpc_address, cp.http_address, cp.admin_token, settings)
        await sig.stop.wait()
        if not serving_process:
            err("airlock: shutting down (press Ctrl-C again to force)")
        if not await _unless(cp.stop(grace=grace), sig.force):
            _forced_exit()
        if not serving_process:
            err("airlock: stopped")
        return EXIT_OK
    finally:
        sig.remove()


def _stop_when_stdin_closes(stop: asyncio.Event) -> None:
    """A serving process's stdin is a pipe from its supervisor: EOF means the supervisor is
    gone (even killed), so this process must not outlive it."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            stop.set()

    loop.add_reader(fd, readable)


async def _supervise(settings: ServerSettings, processes: int, grace: float) -> int:
    """Several serving processes on the same ports (``server.supervisor``)."""
    from server.app import prepare_database
    from server.domain.policy import Policy
    from server.supervisor import Supervisor

    try:
        if settings.policy_file:
            Policy.load(settings.policy_file)  # refused here, before any child starts
    except (OSError, ValueError) as e:
        raise ConfigError(f"AIRLOCK_POLICY_FILE: {e}") from None
    sig = _Signals()
    sup = Supervisor(settings, processes, grace=grace)
    try:
        try:
            admin_token = await prepare_database(settings)
            if not await _unless(sup.start(), sig.force):
                sup.kill()
                _forced_exit()
        except Exception as e:
            err(f"start-up failed: {e}")
            with contextlib.suppress(Exception):
                await sup.stop(0)
            return EXIT_CONFIG
        _print_started(sup.grpc_address, sup.http_address, admin_token, settings,
                       processes=sup.pids)
        await sig.stop.wait()
        err("airlock: shutting down (press Ctrl-C again to force)")
        if not await _unless(sup.stop(grace), sig.force):
            sup.kill()
            _forced_exit()
        err("airlock: stopped")
        return EXIT_OK
    finally:
        sig.remove()


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


def _print_started(grpc_address: str, http_address: str | None, admin_token: str | None,
                   settings: ServerSettings, *, processes: list[int] | None = None) -> None:
    how = (f" ({len(processes)} serving processes, pids "
           f"{', '.join(map(str, processes))})") if processes else ""
    print(f"airlock: control plane serving gRPC on {grpc_address}{how}", flush=True)
    if http_address:
        print(f"airlock: gRPC-Web and the UI on http://{http_address}", flush=True)
    if admin_token:
        if settings.admin_token_file:
            # Saved to a file: never print it too (stdout usually ends up in a log).
            print(f"airlock: created the first admin key; its token was written to "
                  f"{settings.admin_token_file} (mode 0600)", flush=True)
        else:
            print("airlock: created the first admin key; its token (shown once):", flush=True)
            print(f"    {admin_token}", flush=True)
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
            "On first start an admin key is created and its token printed once.\n"
            "On PostgreSQL it runs one serving process per CPU core on the same ports\n"
            "(--processes / AIRLOCK_SERVE_PROCESSES), replacing any that dies."
        ),
    )
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="how long in-flight RPCs may finish on shutdown (default 10)")
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="serving processes sharing the gRPC and HTTP ports (default: "
                        "AIRLOCK_SERVE_PROCESSES; 0 = one per CPU core on PostgreSQL; SQLite: 1)")
    p.add_argument("--serving-process", action="store_true", help=argparse.SUPPRESS)
