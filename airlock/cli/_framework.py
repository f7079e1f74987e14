"""How commands are declared: exit statuses, the user-facing errors, and ``Commands``.

A command group is a module with a ``register(cli: Commands) -> None`` function (listed in
``airlock.cli._main.REGISTRARS``); it adds its parser(s) with ``cli.add(name, handler, ...)``
or ``cli.group(name, ...)``. A handler takes the parsed ``argparse.Namespace`` and returns an
exit status; it may be ``async`` (``main`` runs it with ``asyncio.run``).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from agents.errors import AirlockError, ConfigError

__all__ = [
    "EXIT_CONFIG", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_RUN_NOT_SUCCEEDED",
    "EXIT_USAGE", "SHARED_DEFAULTS", "CliError", "Commands", "ConfigError", "Handler",
]

EXIT_OK = 0
EXIT_ERROR = 1  # gRPC error, bad input, a failed local action
EXIT_USAGE = 2
EXIT_CONFIG = 3  # a bad setting, or the host or database cannot serve (start-up failure)
EXIT_RUN_NOT_SUCCEEDED = 4  # `runs submit --wait`, `agent run-local`
EXIT_INTERRUPTED = 130

# The options every command accepts (see ``shared_options``), filled in by ``main`` when the
# command line did not give them.
SHARED_DEFAULTS: dict[str, Any] = {"json": False, "address": None, "token": None, "tls_ca": None}
Handler = Callable[[argparse.Namespace], int] | Callable[[argparse.Namespace], Awaitable[int]]


class CliError(AirlockError):
    """A user-facing failure of a command: printed as ``error: <message>``, exit status 1."""


class Commands:
    """Adds commands to one level of the parser tree, with the shared options attached.

    ``remote=True`` commands talk to the control plane and accept ``--address``, ``--token``
    and ``--tls-ca``; every command accepts ``--json``. The shared options may be given
    before or after the command name.
    """

    def __init__(
        self,
        subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
        *,
        output: argparse.ArgumentParser,
        connection: argparse.ArgumentParser,
    ) -> None:
        self._sub = subparsers
        self._output = output
        self._connection = connection

    def add(
        self,
        name: str,
        handler: Handler,
        *,
        help: str,
        description: str | None = None,
        remote: bool = False,
        epilog: str | None = None,
    ) -> argparse.ArgumentParser:
        """Add a leaf command; returns its parser so the caller can add arguments."""
        parents = [self._output, self._connection] if remote else [self._output]
        p = self._sub.add_parser(
            name,
            help=help,
            description=description or _sentence(help),
            epilog=epilog,
            parents=parents,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(handler=handler)
        return p

    def group(self, name: str, *, help: str, description: str | None = None) -> Commands:
        """Add a command with subcommands (``airlock runs …``); returns their ``Commands``."""
        p = self._sub.add_parser(
            name,
            help=help,
            description=description or _sentence(help),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(handler=None, group_parser=p)
        sub = p.add_subparsers(title="commands", metavar="COMMAND")
        return Commands(sub, output=self._output, connection=self._connection)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def shared_options(env_address: str, env_token: str, env_tls_ca: str,
                   ) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The ``--json`` parent parser and the connection parent parser."""
    # Defaults are SUPPRESS so that a subcommand which does not see the option keeps the value
    # given before the command name; the real defaults are set by main() (SHARED_DEFAULTS).
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of text (protobuf field names)")
    conn = argparse.ArgumentParser(add_help=False)
    g = conn.add_argument_group("connection")
    g.add_argument("--address", default=argparse.SUPPRESS, metavar="HOST:PORT",
                   help=f"control-plane gRPC address (env {env_address}; default 127.0.0.1:50051)")
    g.add_argument("--token", default=argparse.SUPPRESS,
                   help=f"API key (env {env_token}; prefer the variable: arguments show in ps)")
    g.add_argument("--tls-ca", default=argparse.SUPPRESS, metavar="PEM",
                   help=f"CA certificate file; enables TLS (env {env_tls_ca})")
    return output, conn
