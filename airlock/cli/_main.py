"""The ``airlock`` parser (one registrar per command group) and ``main``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc

from airlock.cli import (
    agent,
    agents,
    approvals,
    audit,
    base_image,
    dev,
    executor,
    executors,
    keys,
    migrate,
    relay,
    runs,
    sandbox_check,
    serve,
    usage,
    whoami,
    workflows,
)
from airlock.cli._client import DEFAULT_ADDRESS, ENV_ADDRESS, ENV_TLS_CA, ENV_TOKEN
from airlock.cli._framework import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    SHARED_DEFAULTS,
    CliError,
    Commands,
    ConfigError,
    Handler,
    shared_options,
)
from airlock.cli._output import err

T = TypeVar("T")

# One registrar per top-level command, in the order `airlock --help` lists them. To add a
# command group: a module with `def register(cli: Commands) -> None`, listed here.
REGISTRARS: list[Callable[[Commands], None]] = [
    serve.register,
    executor.register,
    sandbox_check.register,  # the executor's start-up check alone
    dev.register,
    relay.register,
    migrate.register,
    keys.register,
    whoami.register,
    agents.register,
    runs.register,
    workflows.register,
    approvals.register,
    audit.register,
    executors.register,
    usage.register,
    agent.register,  # `airlock agent validate|build|run-local|register`
    base_image.register,
]


def build_parser() -> argparse.ArgumentParser:
    output, conn = shared_options(ENV_ADDRESS, ENV_TOKEN, ENV_TLS_CA)
    parser = argparse.ArgumentParser(
        prog="airlock",
        description="Airlock: run untrusted, containerised agents with risk-based human approvals.",
        epilog=(
            "Client commands read AIRLOCK_ADDRESS and AIRLOCK_TOKEN. "
            "Run `airlock COMMAND --help` for a command's options."
        ),
        parents=[output, conn],
    )
    # Not set_defaults for the shared options: parents share their action objects, so that
    # would replace SUPPRESS in every subcommand too. main() fills them in after parsing.
    parser.set_defaults(handler=None, group_parser=parser)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    cli = Commands(sub, output=output, connection=conn)
    for register in REGISTRARS:
        register(cli)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``airlock`` command; returns the exit status (never raises for user errors).

    Exit statuses: 0 success, 1 error (gRPC error, bad input), 2 usage error, 3 configuration
    or start-up failure, 4 a run (``--wait``, ``agent run-local``) ended without succeeding,
    130 interrupted.
    """
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed by argparse
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    for name, default in SHARED_DEFAULTS.items():
        if not hasattr(ns, name):
            setattr(ns, name, default)
    handler: Handler | None = ns.handler
    if handler is None:  # `airlock` or `airlock runs` alone: show what is available
        ns.group_parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        result = handler(ns)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        return int(result)
    except grpc.RpcError as e:  # grpc.aio.AioRpcError and friends carry code() and details()
        code = e.code() if callable(getattr(e, "code", None)) else None
        name = code.name if code is not None else "UNKNOWN"
        details = e.details() if callable(getattr(e, "details", None)) else str(e)
        err(f"error: {name}: {details}")
        if name == "UNAUTHENTICATED":
            err(f"hint: check {ENV_TOKEN} (or --token): is the key valid and not revoked?")
        elif name == "UNAVAILABLE":
            err(f"hint: is the control plane running at {_address_hint(ns)}?")
        return EXIT_ERROR
    except ConfigError as e:
        for line in str(e).splitlines():
            err(f"configuration error: {line}")
        return EXIT_CONFIG
    except CliError as e:
        err(f"error: {e}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `airlock runs list | head`: quiet, as the Python docs advise
        with contextlib.suppress(Exception):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


async def _awaited(aw: Awaitable[T]) -> T:
    return await aw


def _address_hint(ns: argparse.Namespace) -> str:
    return getattr(ns, "address", None) or os.environ.get(ENV_ADDRESS) or DEFAULT_ADDRESS
