"""The ``airlock`` command line.

Every top-level command is registered through one function in ``REGISTRARS``; a registrar
receives a ``Commands`` object and adds its parser(s) with ``cli.add(name, handler, ...)`` or
``cli.group(name, ...)``. A handler takes the parsed ``argparse.Namespace`` and returns an exit
status; it may be ``async`` (``main`` runs it with ``asyncio.run``).

Exit statuses: 0 success, 1 error (gRPC error, bad input), 2 usage error, 3 configuration or
start-up failure, 4 a run (``--wait``, ``agent run-local``) ended without succeeding,
130 interrupted.

Heavy modules (the control plane, SQLAlchemy, executor runtimes) are imported inside the
handlers that need them, so client commands start fast and need nothing but gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from agents import cli as agent_cli
from airlock.v1 import admin_service_pb2 as adm
from airlock.v1 import agent_pb2, approval_pb2, run_pb2
from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import registry_service_pb2 as reg
from airlock.v1 import run_service_pb2 as rs
from server.client import (
    ENV_ADDRESS,
    ENV_TLS_CA,
    ENV_TOKEN,
    ApiClient,
    ClientConfigError,
    Connection,
)

if TYPE_CHECKING:
    from server.app import ControlPlane
    from server.settings import ServerSettings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_RUN_NOT_SUCCEEDED = 4
EXIT_INTERRUPTED = 130

SHARED_DEFAULTS: dict[str, Any] = {"json": False, "address": None, "token": None, "tls_ca": None}
Handler = Callable[[argparse.Namespace], int] | Callable[[argparse.Namespace], Awaitable[int]]
T = TypeVar("T")


class CliError(Exception):
    """A user-facing failure: printed as ``error: <message>``, exit status 1."""


class ConfigError(Exception):
    """A bad setting: printed as ``configuration error: <message>`` per line, exit status 3."""


# ----------------------------------------------------------------------------- registration


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


def _shared_options() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    # Defaults are SUPPRESS so that a subcommand which does not see the option keeps the value
    # given before the command name; the real defaults are set once on the top-level parser.
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of text (protobuf field names)")
    conn = argparse.ArgumentParser(add_help=False)
    g = conn.add_argument_group("connection")
    g.add_argument("--address", default=argparse.SUPPRESS, metavar="HOST:PORT",
                   help=f"control-plane gRPC address (env {ENV_ADDRESS}; default 127.0.0.1:50051)")
    g.add_argument("--token", default=argparse.SUPPRESS,
                   help=f"API key (env {ENV_TOKEN}; prefer the variable: arguments show in ps)")
    g.add_argument("--tls-ca", default=argparse.SUPPRESS, metavar="PEM",
                   help=f"CA certificate file; enables TLS (env {ENV_TLS_CA})")
    return output, conn


def build_parser() -> argparse.ArgumentParser:
    output, conn = _shared_options()
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


# ----------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``airlock`` command; returns the exit status (never raises for user errors)."""
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
        _err(f"error: {name}: {details}")
        if name == "UNAUTHENTICATED":
            _err(f"hint: check {ENV_TOKEN} (or --token): is the key valid and not revoked?")
        elif name == "UNAVAILABLE":
            _err(f"hint: is the control plane running at {_address_hint(ns)}?")
        return EXIT_ERROR
    except ConfigError as e:
        for line in str(e).splitlines():
            _err(f"configuration error: {line}")
        return EXIT_CONFIG
    except (CliError, ClientConfigError) as e:
        _err(f"error: {e}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `airlock runs list | head`: quiet, as the Python docs advise
        with contextlib.suppress(Exception):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


async def _awaited(aw: Awaitable[T]) -> T:
    return await aw


def _address_hint(ns: argparse.Namespace) -> str:
    return getattr(ns, "address", None) or os.environ.get(ENV_ADDRESS) or "127.0.0.1:50051"


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def connect(ns: argparse.Namespace) -> ApiClient:
    """A client for the control plane from the command line and the environment."""
    conn = Connection.resolve(address=ns.address, token=ns.token, tls_ca=ns.tls_ca)
    return ApiClient(conn)


async def call(api: ApiClient, method: Callable[..., Awaitable[T]], request: Message) -> T:
    """One unary RPC with the key's metadata and the client's deadline."""
    return await method(request, metadata=api.metadata, timeout=api.timeout)


# ----------------------------------------------------------------------------- settings


def settings_errors(exc: Exception, prefix: str) -> str:
    """Turn a pydantic(-settings) error into lines ``AIRLOCK_<NAME>: <message>``."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        lines = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            var = prefix + (loc[0].upper() if loc else "?")
            where = "".join(f"[{p}]" for p in loc[1:])
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{var}{where}: {msg}")
        return "\n".join(lines)
    # pydantic-settings' SettingsError: 'error parsing value for field "x" from source "..."'
    m = re.search(r'field "(\w+)"', str(exc))
    if m:
        return f"{prefix}{m.group(1).upper()}: not valid JSON (this setting is a list or mapping)"
    return str(exc)


def load_settings(cls: type[T], **overrides: Any) -> T:
    """Build a settings class from the environment; ``ConfigError`` names the variable.

    Works for any pydantic-settings class (``ServerSettings``, ``ExecutorSettings``, ...).
    """
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    prefix = str(getattr(cls, "model_config", {}).get("env_prefix", "AIRLOCK_"))
    try:
        return cls(**overrides)
    except (ValidationError, SettingsError) as e:
        raise ConfigError(settings_errors(e, prefix)) from None


# ----------------------------------------------------------------------------- output helpers


def _enum_label(enum: Any, value: int, prefix: str, *, lower: bool) -> str:
    try:
        name = str(enum.Name(value)).removeprefix(prefix)
    except ValueError:
        return str(value)
    return name.lower() if lower else name


def state_name(value: int) -> str:
    return _enum_label(run_pb2.RunState, value, "RUN_STATE_", lower=False)


def risk_name(value: int) -> str:
    return _enum_label(agent_pb2.Risk, value, "RISK_", lower=True)


def role_name(value: int) -> str:
    return _enum_label(adm.Role, value, "ROLE_", lower=True)


def status_name(value: int) -> str:
    return _enum_label(approval_pb2.ApprovalStatus, value, "APPROVAL_STATUS_", lower=True)


ROLES = ("admin", "submitter", "approver", "viewer", "executor")
STATES = tuple(state_name(v) for v in run_pb2.RunState.values() if v)


def when(message: Message, field: str) -> str:
    if not message.HasField(field):
        return "-"
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def to_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def print_json(value: Message | dict[str, Any] | list[Any]) -> None:
    doc = to_dict(value) if isinstance(value, Message) else value
    print(json.dumps(doc, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Aligned columns, two spaces apart; the last column is not padded."""
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> None:
    print(table(headers, rows) if rows else empty)


def key_values(pairs: Iterable[tuple[str, object]]) -> str:
    items = [(k, str(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}".rstrip() for k, v in items)


def _clip(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _limits_text(lim: agent_pb2.Limits) -> str:
    parts = []
    if lim.memory_mib:
        parts.append(f"memory {lim.memory_mib} MiB")
    if lim.timeout_seconds:
        parts.append(f"timeout {lim.timeout_seconds:g}s")
    if lim.pids:
        parts.append(f"pids {lim.pids}")
    if lim.cpus:
        parts.append(f"cpus {lim.cpus:g}")
    if lim.output_kib:
        parts.append(f"output {lim.output_kib} KiB")
    if lim.log_kib:
        parts.append(f"logs {lim.log_kib} KiB")
    return ", ".join(parts) or "-"


def _risk_text(risk: int, reasons: Sequence[str]) -> str:
    return risk_name(risk) + (f" ({'; '.join(reasons)})" if reasons else "")


def read_text_arg(value: str, what: str) -> str:
    """``@file`` reads a file, ``@-`` or ``-`` reads stdin, anything else is the text itself."""
    if value in ("-", "@-"):
        return sys.stdin.read()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text()
        except OSError as e:
            raise CliError(f"{what}: cannot read {value[1:]}: {e.strerror or e}") from None
    return value


def json_arg(value: str, what: str) -> str:
    """Read and check a JSON argument; returns the text (sent as given)."""
    text = read_text_arg(value, what)
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"{what}: not valid JSON: {e}") from None
    return text


# ----------------------------------------------------------------------------- serve, migrate


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
            _err(f"start-up failed: {e}")
            with contextlib.suppress(Exception):
                await cp.stop(grace=0)
            return EXIT_CONFIG
        _print_started(cp, settings)
        await stop.wait()
        _err("airlock: shutting down (press Ctrl-C again to force)")
        if not await _unless(cp.stop(grace=ns.grace), force):
            _forced_exit()
        _err("airlock: stopped")
        return EXIT_OK
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _forced_exit() -> NoReturn:
    """Second signal: leave now. A half-stopped gRPC server cannot be finalised cleanly, and
    the point of forcing is not to wait for anything (the database is left to recover)."""
    _err("airlock: forced exit")
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


def _register_serve(cli: Commands) -> None:
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


def cmd_migrate(ns: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from server.app import ensure_sqlite_dir
    from server.settings import ServerSettings
    from server.store.migrate import upgrade

    settings = load_settings(ServerSettings)
    url = settings.database_url.get_secret_value()
    shown = make_url(url).render_as_string(hide_password=True)
    ensure_sqlite_dir(url)
    try:
        upgrade(url, ns.revision)
    except Exception as e:  # connection refused, bad credentials, a failing migration
        raise CliError(f"migration of {shown} failed: {_clip(str(e), 500)}") from None
    print(f"migrated {shown} to {ns.revision}")
    return EXIT_OK


def _register_migrate(cli: Commands) -> None:
    p = cli.add("migrate", cmd_migrate, help="apply database migrations to AIRLOCK_DATABASE_URL",
                description="Apply the Alembic migrations to AIRLOCK_DATABASE_URL (PostgreSQL or "
                            "SQLite).\n`airlock serve` also does this at start-up unless "
                            "AIRLOCK_MIGRATE_ON_START=false.")
    p.add_argument("--revision", default="head", help="target revision (default: head)")


# ----------------------------------------------------------------------------- keys


async def cmd_keys_create(ns: argparse.Namespace) -> int:
    role = getattr(adm, f"ROLE_{ns.role.upper()}")
    async with connect(ns) as api:
        resp = await call(api, api.admin.CreateApiKey,
                          adm.CreateApiKeyRequest(owner=ns.owner, role=role))
    if ns.json:
        print_json(resp)
        return EXIT_OK
    # The token alone on stdout, so `export AIRLOCK_TOKEN=$(airlock keys create ...)` works.
    _err(f"created key {resp.key.id} for {resp.key.owner} ({role_name(resp.key.role)}); "
         "the token below is shown only once:")
    print(resp.token)
    return EXIT_OK


async def cmd_keys_list(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.admin.ListApiKeys, adm.ListApiKeysRequest())
    if ns.json:
        print_json(resp)
        return EXIT_OK
    rows = [(k.id, k.owner, role_name(k.role), when(k, "create_time"), when(k, "revoke_time"))
            for k in resp.keys]
    print_table(("ID", "OWNER", "ROLE", "CREATED", "REVOKED"), rows, "no keys")
    return EXIT_OK


async def cmd_keys_revoke(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.admin.RevokeApiKey, adm.RevokeApiKeyRequest(id=ns.id))
    if ns.json:
        print_json(resp)
    else:
        print(f"revoked {resp.key.id} ({resp.key.owner}, {role_name(resp.key.role)})")
    return EXIT_OK


def _register_keys(cli: Commands) -> None:
    keys = cli.group("keys", help="manage API keys (admin)")
    p = keys.add("create", cmd_keys_create, remote=True, help="create an API key",
                 description="Create an API key. The token is printed once, alone on stdout "
                             "(details go to stderr),\nso `export AIRLOCK_TOKEN=$(airlock keys "
                             "create ...)` captures it. Only its hash is stored.")
    p.add_argument("--owner", required=True,
                   help="person or service the key belongs to (approvals compare owners)")
    p.add_argument("--role", required=True, choices=ROLES, help="what the key may do")
    keys.add("list", cmd_keys_list, remote=True, help="list API keys (never their tokens)")
    p = keys.add("revoke", cmd_keys_revoke, remote=True, help="revoke an API key",
                 description="Revoke an API key; servers honour it within "
                             "AIRLOCK_AUTH_CACHE_SECONDS.")
    p.add_argument("id", metavar="ID", help="key id (key_...)")


async def cmd_whoami(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.admin.WhoAmI, adm.WhoAmIRequest())
    if ns.json:
        print_json(resp)
    else:
        print(f"{resp.key.owner} ({role_name(resp.key.role)}, key {resp.key.id})")
    return EXIT_OK


def _register_whoami(cli: Commands) -> None:
    cli.add("whoami", cmd_whoami, remote=True, help="show the owner and role of the current key")


# ----------------------------------------------------------------------------- agents


def manifest_source(path_or_text: str) -> str:
    """A folder (its agent.yaml), a file, ``-`` (stdin), or the manifest text itself."""
    if path_or_text in ("-", "@-"):
        return sys.stdin.read()
    if "\n" not in path_or_text:
        p = Path(path_or_text)
        if p.is_dir():
            p = p / "agent.yaml"
        if p.is_file():
            return p.read_text()
        if not path_or_text.lstrip().startswith("{"):
            raise CliError(f"{path_or_text}: no such file or folder (expected agent.yaml or "
                           "a folder holding one)")
    return path_or_text


async def register_manifest(ns: argparse.Namespace, text: str, image_digest: str = "") -> int:
    """Register one manifest and print the version (shared with ``airlock agent register``)."""
    async with connect(ns) as api:
        resp = await call(api, api.registry.RegisterAgentVersion,
                          reg.RegisterAgentVersionRequest(manifest=text, image_digest=image_digest))
    v = resp.version
    if ns.json:
        print_json(resp)
    else:
        print(f"registered {v.agent} {v.version} (risk {risk_name(v.risk)}, "
              f"image {v.image}{' @ ' + v.image_digest if v.image_digest else ''})")
    return EXIT_OK


async def cmd_agents_register(ns: argparse.Namespace) -> int:
    return await register_manifest(ns, manifest_source(ns.manifest), ns.image_digest)


async def cmd_agents_list(ns: argparse.Namespace) -> int:
    agents: list[agent_pb2.Agent] = []
    async with connect(ns) as api:
        token = ""
        while True:
            resp = await call(api, api.registry.ListAgents, reg.ListAgentsRequest(
                page_size=100, page_token=token, name_prefix=ns.prefix))
            agents.extend(resp.agents)
            token = resp.next_page_token
            if not token:
                break
    if ns.json:
        print_json({"agents": [to_dict(a) for a in agents]})
        return EXIT_OK
    rows = [(a.name, a.latest_version or "-", ", ".join(a.versions), _clip(a.description))
            for a in agents]
    print_table(("NAME", "LATEST", "VERSIONS", "DESCRIPTION"), rows, "no agents")
    return EXIT_OK


def _version_detail(v: agent_pb2.AgentVersion) -> str:
    pairs: list[tuple[str, object]] = [
        ("agent", v.agent),
        ("version", v.version + (" (deprecated: " + v.deprecation_reason + ")"
                                 if v.deprecated else "")),
        ("description", _clip(v.description, 200) or "-"),
        ("image", v.image),
        ("image digest", v.image_digest or "-"),
        ("entrypoint", " ".join(v.entrypoint) or "(image default)"),
        ("risk", risk_name(v.risk)),
        ("network", "may ask" if v.network else "never"),
        ("secrets", ", ".join(v.secrets) or "-"),
        ("default limits", _limits_text(v.default_limits)),
        ("max limits", _limits_text(v.max_limits)),
        ("registered", f"{when(v, 'create_time')} by {v.created_by or '-'}"),
    ]
    for c in v.capabilities:
        pairs.append(("capability", c.name + (f": {_clip(c.description, 100)}"
                                              if c.description else "")))
    return key_values(pairs)


async def cmd_agents_get(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        if ns.version:
            vresp = await call(api, api.registry.GetAgentVersion,
                               reg.GetAgentVersionRequest(name=ns.name, version=ns.version))
            if ns.json:
                print_json(vresp)
            else:
                print(_version_detail(vresp.version))
            return EXIT_OK
        resp = await call(api, api.registry.GetAgent, reg.GetAgentRequest(name=ns.name))
    if ns.json:
        print_json(resp)
        return EXIT_OK
    a = resp.agent
    print(key_values([("agent", a.name), ("description", _clip(a.description, 200) or "-"),
                      ("latest", a.latest_version or "- (all versions deprecated)"),
                      ("created", when(a, "create_time"))]))
    print()
    rows = [(v.version, risk_name(v.risk), "yes" if v.network else "no",
             ", ".join(v.secrets) or "-", ", ".join(c.name for c in v.capabilities),
             ("yes: " + _clip(v.deprecation_reason, 40)) if v.deprecated else "no",
             when(v, "create_time")) for v in resp.versions]
    print_table(("VERSION", "RISK", "NETWORK", "SECRETS", "CAPABILITIES", "DEPRECATED",
                 "REGISTERED"), rows, "no versions")
    return EXIT_OK


async def cmd_agents_deprecate(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.registry.DeprecateAgentVersion, reg.DeprecateAgentVersionRequest(
            name=ns.name, version=ns.version, reason=ns.reason))
    if ns.json:
        print_json(resp)
    else:
        print(f"deprecated {resp.version.agent} {resp.version.version}: "
              f"{resp.version.deprecation_reason}")
    return EXIT_OK


def _register_agents(cli: Commands) -> None:
    agents = cli.group("agents", help="the agent registry: register, list, inspect, deprecate")
    p = agents.add("register", cmd_agents_register, remote=True,
                   help="register an agent version from its manifest",
                   description="Register an agent version from its manifest. Versions are "
                               "immutable: registering\nthe same manifest again is a no-op, a "
                               "different one with the same version is refused.\nAgent "
                               "authors: `airlock agent register PATH` also fills in the local "
                               "image digest.")
    p.add_argument("manifest", metavar="PATH_OR_MANIFEST",
                   help="agent.yaml, a folder holding one, '-' for stdin, or the YAML/JSON text")
    p.add_argument("--image-digest", default="", metavar="DIGEST",
                   help="content digest of the image (sha256:...), pinned with the version")
    p = agents.add("list", cmd_agents_list, remote=True, help="list agents")
    p.add_argument("--prefix", default="", help="only names starting with this")
    p = agents.add("get", cmd_agents_get, remote=True,
                   help="show an agent and its versions, or one version in detail")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--version", default="",
                   help="show this version in detail ('latest' is not special: omit for the list)")
    p = agents.add("deprecate", cmd_agents_deprecate, remote=True,
                   help="deprecate a version (it stays readable, accepts no new runs)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--reason", required=True, help="why (shown to users of the version)")


# ----------------------------------------------------------------------------- runs


def _run_detail(r: run_pb2.Run) -> str:
    pairs: list[tuple[str, object]] = [
        ("id", r.id),
        ("agent", f"{r.agent} {r.version}"),
        ("capability", r.capability),
        ("state", state_name(r.state)),
        ("reason", r.reason or "-"),
        ("risk", _risk_text(r.effective_risk, r.risk_reasons)),
        ("submitter", r.submitter),
        ("idempotency key", r.idempotency_key or "-"),
        ("network", "yes" if r.network else "no"),
        ("secrets", ", ".join(r.secrets) or "-"),
        ("limits", _limits_text(r.limits)),
        ("attempt", r.attempt),
        ("created", when(r, "create_time")),
        ("started", when(r, "start_time")),
        ("finished", when(r, "finish_time")),
    ]
    if r.executor_id:
        pairs.append(("executor", r.executor_id))
    if r.finish_time.seconds:
        pairs += [("duration", f"{r.duration_seconds:.2f}s"),
                  ("exit code", r.exit_code),
                  ("peak memory", f"{r.peak_memory_bytes / 2**20:.1f} MiB"
                   if r.peak_memory_bytes else "-")]
    if r.cancel_requested:
        pairs.append(("cancel", "requested"))
    pairs.append(("input", _clip(r.input_json, 200)))
    return key_values(pairs)


def _event_line(e: run_pb2.RunEvent) -> str:
    actor = f" [{e.actor}]" if e.actor else ""
    reason = f"  {e.reason}" if e.reason else ""
    return f"{e.sequence:>3}  {when(e, 'create_time')}  {state_name(e.state):<16}{actor}{reason}"


async def _watch(api: ApiClient, run_id: str, from_sequence: int, *, as_json: bool,
                 ) -> run_pb2.RunEvent | None:
    """Print events until the stream ends (after the terminal event); return the last one."""
    last = None
    stream: AsyncIterator[rs.WatchRunResponse] = api.runs.WatchRun(
        rs.WatchRunRequest(run_id=run_id, from_sequence=from_sequence), metadata=api.metadata)
    async for msg in stream:
        last = msg.event
        if as_json:
            print(json.dumps(to_dict(msg.event), ensure_ascii=False), flush=True)
        else:
            print(_event_line(msg.event), flush=True)
    return last


def _print_result(res: rs.GetRunResultResponse, tail: int) -> None:
    r = res.run
    head = f"run {r.id}: {state_name(r.state)}"
    if r.reason and r.reason.lower() != state_name(r.state).lower():
        head += f" ({r.reason})"
    print(head)
    if res.output_json:
        try:
            print(json.dumps(json.loads(res.output_json), indent=2, ensure_ascii=False))
        except json.JSONDecodeError:
            print(res.output_json)
    if res.error_code or res.error_message:
        # "error: CODE: message" when the agent gave a code, else just "error: message".
        parts = [p for p in (res.error_code, res.error_message) if p]
        print("error: " + ": ".join(parts))
    if res.logs:
        lines = res.logs.splitlines()
        shown = lines[-tail:] if tail > 0 else lines
        cut = len(lines) - len(shown)
        note = f", last {len(shown)} of {len(lines)} lines" if cut else ""
        note += ", truncated by the executor" if res.logs_truncated else ""
        print(f"--- logs{note} ---")
        print("\n".join(shown))


async def cmd_runs_submit(ns: argparse.Namespace) -> int:
    limits = agent_pb2.Limits(memory_mib=ns.memory_mib or 0,
                              timeout_seconds=ns.timeout_seconds or 0)
    req = rs.SubmitRunRequest(
        agent=ns.agent, version=ns.version, capability=ns.capability,
        input_json=json_arg(ns.input, "--input"), idempotency_key=ns.idempotency_key,
        network=ns.network, secrets=ns.secret, limits=limits,
    )
    async with connect(ns) as api:
        resp = await call(api, api.runs.SubmitRun, req)
        r = resp.run
        if not ns.wait:
            if ns.json:
                print_json(resp)
            else:
                print(r.id)
                _err(f"{state_name(r.state)}: {r.agent} {r.version} {r.capability}, risk "
                     f"{_risk_text(r.effective_risk, r.risk_reasons)}"
                     + (" (existing run for this idempotency key)" if resp.deduplicated else ""))
            return EXIT_OK
        if not ns.json:
            _err(f"{r.id}: {r.agent} {r.version} {r.capability}, risk "
                 f"{_risk_text(r.effective_risk, r.risk_reasons)}"
                 + (" (existing run for this idempotency key)" if resp.deduplicated else ""))
            if r.state == run_pb2.RUN_STATE_PENDING_APPROVAL:
                _err("waiting for approval (`airlock approvals approve " + r.id + "`)")
        if ns.json:
            await _drain(api, r.id)
        else:
            await _watch(api, r.id, 0, as_json=False)
        res = await call(api, api.runs.GetRunResult, rs.GetRunResultRequest(run_id=r.id))
    if ns.json:
        print_json(res)
    else:
        _print_result(res, ns.tail)
    return EXIT_OK if res.run.state == run_pb2.RUN_STATE_SUCCEEDED else EXIT_RUN_NOT_SUCCEEDED


async def _drain(api: ApiClient, run_id: str) -> None:
    stream = api.runs.WatchRun(rs.WatchRunRequest(run_id=run_id), metadata=api.metadata)
    async for _ in stream:
        pass


async def cmd_runs_get(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.runs.GetRun, rs.GetRunRequest(run_id=ns.run_id))
    if ns.json:
        print_json(resp)
    else:
        print(_run_detail(resp.run))
    return EXIT_OK


async def cmd_runs_list(ns: argparse.Namespace) -> int:
    states = [getattr(run_pb2, f"RUN_STATE_{s}") for s in ns.state]
    runs: list[run_pb2.Run] = []
    async with connect(ns) as api:
        token = ""
        while len(runs) < ns.limit:
            resp = await call(api, api.runs.ListRuns, rs.ListRunsRequest(
                page_size=min(ns.limit - len(runs), 100), page_token=token, agent=ns.agent,
                states=states, submitter=ns.submitter))
            runs.extend(resp.runs)
            token = resp.next_page_token
            if not token:
                break
    runs = runs[: ns.limit]
    if ns.json:
        print_json({"runs": [to_dict(r) for r in runs]})
        return EXIT_OK
    rows = [(r.id, r.agent, r.version, r.capability, state_name(r.state),
             risk_name(r.effective_risk), r.submitter, when(r, "create_time")) for r in runs]
    print_table(("ID", "AGENT", "VERSION", "CAPABILITY", "STATE", "RISK", "SUBMITTER", "CREATED"),
                rows, "no runs")
    return EXIT_OK


async def cmd_runs_watch(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        await _watch(api, ns.run_id, ns.from_sequence, as_json=ns.json)
    return EXIT_OK


async def cmd_runs_cancel(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.runs.CancelRun,
                          rs.CancelRunRequest(run_id=ns.run_id, reason=ns.reason))
    r = resp.run
    if ns.json:
        print_json(resp)
    elif r.cancel_requested and r.state == run_pb2.RUN_STATE_RUNNING:
        print(f"{r.id}: cancel requested; the executor stops the sandbox")
    else:
        print(f"{r.id}: {state_name(r.state)}")
    return EXIT_OK


async def cmd_runs_result(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        res = await call(api, api.runs.GetRunResult, rs.GetRunResultRequest(run_id=ns.run_id))
    if ns.json:
        print_json(res)
    else:
        _print_result(res, ns.tail)
    return EXIT_OK


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _state(text: str) -> str:
    name = text.upper().removeprefix("RUN_STATE_")
    if name not in STATES:
        raise argparse.ArgumentTypeError(f"unknown state {text!r}; one of {', '.join(STATES)}")
    return name


def _register_runs(cli: Commands) -> None:
    runs = cli.group("runs", help="submit, inspect, watch and cancel runs")
    p = runs.add(
        "submit", cmd_runs_submit, remote=True, help="submit a run of an agent capability",
        description=(
            "Submit a run. Prints the run id on stdout (details on stderr). Asking for network\n"
            "egress, secrets or limits above the version's defaults raises the run's risk,\n"
            "which may require approval. With --wait, follows the run to its end and prints the\n"
            "result; the exit status is then 0 if it SUCCEEDED and 4 otherwise."
        ))
    p.add_argument("agent", metavar="AGENT")
    p.add_argument("capability", metavar="CAPABILITY")
    p.add_argument("--input", required=True, metavar="JSON|@FILE",
                   help="the capability's input: JSON text, @file, or @- for stdin")
    p.add_argument("--version", default="", help="agent version (default: latest not deprecated)")
    p.add_argument("--idempotency-key", default="", metavar="KEY",
                   help="resubmitting with the same key returns the same run")
    p.add_argument("--network", action="store_true", help="ask for network egress (risk >= high)")
    p.add_argument("--secret", action="append", default=[], metavar="NAME",
                   help="name of a secret the run needs (repeatable); values stay with executors")
    p.add_argument("--memory-mib", type=_positive_int, metavar="MIB",
                   help="memory limit (default: the version's)")
    p.add_argument("--timeout-seconds", type=_positive_float, metavar="SECONDS",
                   help="wall-clock limit (default: the version's)")
    p.add_argument("--wait", action="store_true", help="watch until the run ends, print its result")
    p.add_argument("--tail", type=int, default=50, metavar="N",
                   help="with --wait: log lines to show (0: all; default 50)")

    p = runs.add("get", cmd_runs_get, remote=True, help="show one run")
    p.add_argument("run_id", metavar="RUN_ID")

    p = runs.add("list", cmd_runs_list, remote=True, help="list runs, newest first")
    p.add_argument("--agent", default="", help="only runs of this agent")
    p.add_argument("--state", action="append", default=[], type=_state, metavar="STATE",
                   help=f"only runs in this state (repeatable): {', '.join(STATES)}")
    p.add_argument("--submitter", default="", help="only runs submitted by this key owner")
    p.add_argument("--limit", type=_positive_int, default=50, help="at most this many (default 50)")

    p = runs.add("watch", cmd_runs_watch, remote=True,
                 help="stream a run's events until it ends",
                 description="Stream a run's state changes until its terminal event. "
                             "With --json, one JSON object per line.")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--from", dest="from_sequence", type=int, default=0, metavar="N",
                   help="first event sequence to show (default: from the beginning)")

    p = runs.add("cancel", cmd_runs_cancel, remote=True, help="cancel a run",
                 description="Cancel a run. A RUNNING run is stopped by its executor "
                             "shortly after.")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--reason", default="", help="why (recorded in the run's history)")

    p = runs.add("result", cmd_runs_result, remote=True,
                 help="print a run's output (or error) and the tail of its logs")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--tail", type=int, default=50, metavar="N",
                   help="log lines to show (0: all; default 50)")


# ----------------------------------------------------------------------------- approvals


async def cmd_approvals_list(ns: argparse.Namespace) -> int:
    statuses = [v for v in approval_pb2.ApprovalStatus.values() if v] if ns.all else []
    items: list[approval_pb2.Approval] = []
    async with connect(ns) as api:
        token = ""
        while True:
            resp = await call(api, api.approvals.ListApprovals, aps.ListApprovalsRequest(
                page_size=100, page_token=token, statuses=statuses,
                actionable_only=ns.actionable))
            items.extend(resp.approvals)
            token = resp.next_page_token
            if not token or len(items) >= ns.limit:
                break
    items = items[: ns.limit]
    if ns.json:
        print_json({"approvals": [to_dict(a) for a in items]})
        return EXIT_OK
    rows = [(a.run_id, a.run.agent, a.run.version, a.run.capability,
             risk_name(a.risk), status_name(a.status),
             f"{a.approvals}/{a.required}", a.run.submitter, when(a, "expire_time"))
            for a in items]
    print_table(("RUN", "AGENT", "VERSION", "CAPABILITY", "RISK", "STATUS", "VOTES", "SUBMITTER",
                 "EXPIRES"), rows, "no approvals" if ns.all else "no pending approvals")
    return EXIT_OK


def _print_approval(verb: str, a: approval_pb2.Approval) -> None:
    print(f"{verb} {a.run_id}: approval {status_name(a.status)} ({a.approvals}/{a.required} "
          f"approvals); run {state_name(a.run.state)}")


async def cmd_approvals_approve(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.approvals.Approve,
                          aps.ApproveRequest(run_id=ns.run_id, reason=ns.reason))
    if ns.json:
        print_json(resp)
    else:
        _print_approval("approved", resp.approval)
    return EXIT_OK


async def cmd_approvals_reject(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.approvals.Reject,
                          aps.RejectRequest(run_id=ns.run_id, reason=ns.reason))
    if ns.json:
        print_json(resp)
    else:
        _print_approval("rejected", resp.approval)
    return EXIT_OK


def _register_approvals(cli: Commands) -> None:
    ap = cli.group("approvals", help="list, approve and reject risky runs (approver role)")
    p = ap.add("list", cmd_approvals_list, remote=True, help="list approval requests",
               description="List approval requests; pending ones unless --all.")
    p.add_argument("--all", action="store_true", help="every status, not only pending")
    p.add_argument("--actionable", action="store_true",
                   help="only those you may still decide (not your own runs, not yet voted)")
    p.add_argument("--limit", type=_positive_int, default=100,
                   help="at most this many (default 100)")
    p = ap.add("approve", cmd_approvals_approve, remote=True, help="approve a run",
               description="Approve a run. You cannot approve your own runs; some risks need "
                           "several distinct approvers.")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--reason", default="", help="why (recorded and audited)")
    p = ap.add("reject", cmd_approvals_reject, remote=True,
               help="reject a run (a reason is required)")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--reason", required=True, help="why (shown to the submitter)")


# ----------------------------------------------------------------------------- executors


async def cmd_executors_list(ns: argparse.Namespace) -> int:
    async with connect(ns) as api:
        resp = await call(api, api.admin.ListExecutors, adm.ListExecutorsRequest())
    if ns.json:
        print_json(resp)
        return EXIT_OK
    rows = [(e.id, e.host, e.runtime, f"{e.slots_in_use}/{e.slots}",
             adm.ExecutorState.Name(e.state).removeprefix("EXECUTOR_STATE_").lower(),
             when(e, "start_time"), when(e, "heartbeat_time"))
            for e in resp.executors]
    print_table(("ID", "HOST", "RUNTIME", "SLOTS", "STATE", "STARTED", "HEARTBEAT"), rows,
                "no executors registered")
    return EXIT_OK


def _register_executors(cli: Commands) -> None:
    ex = cli.group("executors", help="the executor fleet")
    ex.add("list", cmd_executors_list, remote=True,
           help="list executors with their slots and state (active, lost, stopped)",
           description="List the executor fleet. STATE: active (heartbeating), lost (no "
                       "heartbeat within the lease timeout: killed or cut off; its runs are "
                       "re-queued) or stopped (shut down). Stopped and lost executors are "
                       "dropped after AIRLOCK_EXECUTOR_RETENTION_SECONDS.")


# ----------------------------------------------------------------------------- base image


def cmd_base_image(ns: argparse.Namespace) -> int:
    from executor.base_image import DEFAULT_TAG, make_base_image

    wanted = ns.tag or DEFAULT_TAG
    if not ns.json:
        _err(f"making {wanted} (debootstrap + podman import; the first time takes a minute)")
    try:
        tag = make_base_image(wanted, force=ns.force, refresh_cache=ns.refresh)
    except (RuntimeError, OSError) as e:
        raise CliError(str(e)) from None
    if ns.json:
        print_json({"image": tag})
    else:
        print(tag)
    return EXIT_OK


def _register_base_image(cli: Commands) -> None:
    p = cli.add("base-image", cmd_base_image, help="make the offline base image for agents",
                description="Make a local base image for agent Containerfiles without any "
                            "container registry:\ndebootstrap a minimal Debian with python3, then "
                            "`podman import` it.\nUse it with `airlock agent build --base-image "
                            "TAG`.")
    p.add_argument("--tag", default=None,
                   help="image tag (default: executor.base_image.DEFAULT_TAG, "
                        "localhost/airlock/base:bookworm)")
    p.add_argument("--force", action="store_true", help="re-import even if the image exists")
    p.add_argument("--refresh", action="store_true",
                   help="rerun debootstrap instead of reusing the cached root filesystem")


# ----------------------------------------------------------------------------- the registry

# One registrar per top-level command, in the order `airlock --help` lists them.
# To add a command: write `def _register_x(cli: Commands) -> None` (cli.add / cli.group) and
# list it here.
from server.cli_processes import (  # noqa: E402
    register_dev,
    register_executor,
    register_relay,
    register_sandbox_check,
)

REGISTRARS: list[Callable[[Commands], None]] = [
    _register_serve,
    register_executor,
    register_sandbox_check,  # the executor's start-up check alone
    register_dev,
    register_relay,
    _register_migrate,
    _register_keys,
    _register_whoami,
    _register_agents,
    _register_runs,
    _register_approvals,
    _register_executors,
    agent_cli.register,  # `airlock agent validate|build|run-local|register` (agents/cli.py)
    _register_base_image,
]


if __name__ == "__main__":
    sys.exit(main())
