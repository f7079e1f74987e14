"""Dagger pipeline objects for running and building agents. Pure: nothing here talks to an engine.

Dagger's SDK builds queries lazily, so these functions only describe containers; the runtime
(``executor.runtime.dagger``) and the ``dagger/`` module decide when to evaluate them. Tests render
the resulting GraphQL without an engine and validate it against the engine's schema.

This module is importable on its own (it needs ``dagger``, ``agents`` and ``executor.runtime.base``
only, never ``server``): the ``dagger/`` module imports it from the repository so that
``dagger call run-agent`` builds exactly the container the executor runs.

Facts this relies on (dagger-io 0.21.11, ``dagger/client/gen.py``):

- ``Container.with_exec`` has no resource limits and no network switch, so limits come from
  ``limits_wrapper.py``, injected with ``with_new_file`` and run in front of the agent.
- ``with_exec(expect=ReturnType.ANY)`` accepts exit codes 0-127 and 192-255 only; the wrapper
  therefore exits 0 (or 125) and carries the agent's exit code in its status file.
- ``Client.set_secret(name, plaintext: str)`` (at most 128000 bytes) and
  ``Container.with_mounted_secret(path, source, owner=, mode=)``; ``mode`` needs ``owner``.
- Object arguments (a ``Secret``, a ``Directory``) are sent as IDs, resolved by separate
  requests, so the secret's plaintext is only ever in the ``setSecret`` request, never in the
  exec's query, its arguments or its environment.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagger

from agents import build as _agent_build
from agents.build import HELPER_FILES, STAGED_HELPER_DIR
from agents.limits import Limits
from executor.runtime.base import INPUT_PATH, OUTPUT_DIR, OUTPUT_PATH, SECRETS_DIR, RunSpec

AIRLOCK_DIR = "/airlock"
WRAPPER_PATH = f"{AIRLOCK_DIR}/wrapper.py"
STATUS_PATH = f"{AIRLOCK_DIR}/status.json"
LOG_PATH = f"{AIRLOCK_DIR}/logs.txt"
RESULT_PATH = f"{AIRLOCK_DIR}/result.json"  # status + base64 logs/output: one read, exact bytes
RUN_ID_ENV = "AIRLOCK_RUN_ID"
WRAPPER_PYTHON = "python3"  # agent images must have python3 on PATH (the wrapper needs it)
DEFAULT_KILL_GRACE_SECONDS = 1.0
MIN_FSIZE_BYTES = 64 * 1024 * 1024
SECRET_PLAINTEXT_MAX = 128_000  # Client.set_secret's documented limit
# Sandbox users come from this range, one per run (see sandbox_uid).
SANDBOX_UID_BASE = 20000
SANDBOX_UID_SPAN = 40000
_SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_WRAPPER_FILE = Path(__file__).with_name("limits_wrapper.py")
_HELPER_DIR = Path(_agent_build.__file__).resolve().parent  # the files `agent build` stages


@functools.cache
def wrapper_source() -> str:
    """The limits wrapper's source, injected into every agent container."""
    return _WRAPPER_FILE.read_text(encoding="utf-8")


def sandbox_uid(spec: RunSpec) -> int:
    """A non-root uid for this attempt, stable for the same (run, attempt).

    Not a shared 65534: ``RLIMIT_NPROC`` counts every process of a uid in the engine's user
    namespace, so with one shared uid all concurrent runs would share one pids budget.
    The range stays below 65536 so that any user-namespace mapping of the engine covers it.
    """
    digest = hashlib.sha256(f"{spec.run_id}:{spec.attempt}".encode()).digest()
    return SANDBOX_UID_BASE + int.from_bytes(digest[:4], "big") % SANDBOX_UID_SPAN


def fsize_limit(limits: Limits) -> int:
    """RLIMIT_FSIZE: room for the allowed output (and scratch files), never unbounded."""
    return max(MIN_FSIZE_BYTES, 2 * limits.output_kib * 1024)


def wrapper_argv(
    limits: Limits,
    command: Sequence[str],
    *,
    kill_grace_seconds: float = DEFAULT_KILL_GRACE_SECONDS,
) -> list[str]:
    """The exec's argv: the limits wrapper, then ``--``, then the agent's own command."""
    return [
        WRAPPER_PYTHON, "-I", "-S", WRAPPER_PATH,  # isolated: no PYTHON* env, no site-packages
        "--timeout", repr(float(limits.timeout_seconds)),
        "--kill-grace", repr(float(kill_grace_seconds)),
        "--memory-mib", str(limits.memory_mib),
        "--pids", str(limits.pids),
        "--fsize-bytes", str(fsize_limit(limits)),
        "--log-kib", str(limits.log_kib),
        "--log-file", LOG_PATH,
        "--status-file", STATUS_PATH,
        "--output-file", OUTPUT_PATH,
        "--output-kib", str(limits.output_kib),
        "--result-file", RESULT_PATH,
        "--", *command,
    ]  # fmt: skip


def run_request_json(spec: RunSpec) -> bytes:
    """What the agent reads from ``AIRLOCK_INPUT``: ``{"run_id", "capability", "input"}``."""
    return spec.request_json()


async def image_command(image: dagger.Container, spec: RunSpec) -> list[str]:
    """The agent's command: ``spec.entrypoint``, else the image's entrypoint plus default args
    (asking for those evaluates the image: pulls or builds it)."""
    if spec.entrypoint is not None:
        return list(spec.entrypoint)
    return [*(await image.entrypoint()), *(await image.default_args())]


def _secret_text(name: str, value: bytes) -> str:
    if not _SECRET_NAME_RE.match(name):
        raise ValueError(f"secret name {name!r} is not a safe file name")
    if len(value) > SECRET_PLAINTEXT_MAX:
        raise ValueError(f"secret {name} is larger than Dagger's {SECRET_PLAINTEXT_MAX} bytes")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"secret {name} is not UTF-8 text (Dagger secrets are strings)") from None


def agent_container(
    client: dagger.Client,
    spec: RunSpec,
    *,
    input_json: bytes,
    command: Sequence[str] | None = None,
    image: str | None = None,
    base: dagger.Container | None = None,
    kill_grace_seconds: float = DEFAULT_KILL_GRACE_SECONDS,
) -> dagger.Container:
    """The container that runs one attempt: the agent's command under the limits wrapper.

    ``command`` defaults to ``spec.entrypoint``; when that is None the caller resolves the
    image's entrypoint and default args first (that needs the engine) and passes them here.
    ``image`` overrides ``spec.image`` (the runtime passes the digest-pinned reference);
    ``base`` replaces pulling an image altogether (the ``dagger/`` module passes the image it
    has just built from the agent's Containerfile).
    Raises ValueError for input that cannot be expressed (no command, non-UTF-8 secret, ...).
    """
    argv = list((spec.entrypoint if command is None else command) or ())
    if not argv:
        raise ValueError("no command: spec.entrypoint is None and no resolved command was given")
    try:
        input_text = input_json.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("input JSON is not UTF-8") from None
    uid = sandbox_uid(spec)
    owner = f"{uid}:{uid}"

    ctr = (
        (base if base is not None else client.container().from_(image or spec.image))
        # /airlock and the output dir belong to the sandbox user: the agent writes its output
        # and the wrapper (same user) its status. Both land in the container's own filesystem
        # (not a mount), so they can be read back from the exec's result.
        .with_directory(AIRLOCK_DIR, client.directory(), owner=owner)
        .with_directory(OUTPUT_DIR, client.directory(), owner=owner)
        .with_new_file(INPUT_PATH, input_text, permissions=0o444)
        .with_new_file(WRAPPER_PATH, wrapper_source(), permissions=0o444)
    )
    for name, value in sorted(spec.env.items()):  # e.g. TRACEPARENT
        ctr = ctr.with_env_variable(name, value)
    # Set after spec.env so the contract's variables always win.
    ctr = (
        ctr.with_env_variable("AIRLOCK_INPUT", INPUT_PATH)
        .with_env_variable("AIRLOCK_OUTPUT", OUTPUT_PATH)
        # A real (not volatile) variable unique to the attempt: the exec cache can never hand
        # back an earlier run's result. with_volatile_variable would not change the cache key.
        .with_env_variable(RUN_ID_ENV, f"{spec.run_id}:{spec.attempt}")
        # Informational: the sandbox cannot switch the network itself (see DaggerRuntime).
        .with_env_variable("AIRLOCK_NETWORK", "egress" if spec.network else "none")
    )
    if spec.secrets:  # only then, as with podman: no secrets, no secrets directory
        ctr = ctr.with_env_variable("AIRLOCK_SECRETS_DIR", SECRETS_DIR)
    for name, secret in sorted(spec.secrets.items()):
        # A per-attempt secret name: concurrent runs in one engine session never collide.
        plaintext = _secret_text(name, secret.value)
        source = client.set_secret(f"airlock-{spec.run_id}-{spec.attempt}-{name}", plaintext)
        ctr = ctr.with_mounted_secret(f"{SECRETS_DIR}/{name}", source, owner=owner, mode=0o400)
    return ctr.with_user(owner).with_exec(
        wrapper_argv(spec.limits, argv, kill_grace_seconds=kill_grace_seconds),
        expect=dagger.ReturnType.ANY,
    )


def docker_build(
    context: dagger.Directory,
    containerfile: str = "Containerfile",
    build_args: Mapping[str, str] | None = None,
) -> dagger.Container:
    """An image built from a build context (``Directory.docker_build``).

    Build args (e.g. ``BASE_IMAGE``) go in sorted order so the same inputs render the same
    query (and hit the same cache).
    """
    args = [dagger.BuildArg(name=k, value=v) for k, v in sorted((build_args or {}).items())]
    return context.docker_build(dockerfile=containerfile, build_args=args)


@functools.cache
def _helper_file(name: str) -> str:
    return (_HELPER_DIR / name).read_text(encoding="utf-8")


def agent_build_context(
    client: dagger.Client, source: dagger.Directory, context: str = "."
) -> dagger.Directory:
    """An agent's build context as ``airlock agent build`` stages it: the folder's
    ``build.context`` plus the in-container helper (``agents/__init__.py``, ``_helper.py``) at
    ``_airlock/agents``, so a Containerfile can ``COPY _airlock/agents /opt/airlock/agents``."""
    ctx = source if context in ("", ".") else source.directory(context)
    helper = client.directory()
    for name in HELPER_FILES:
        helper = helper.with_new_file(name, _helper_file(name), permissions=0o644)
    return ctx.with_directory(STAGED_HELPER_DIR, helper)


def build_container(
    client: dagger.Client,
    context_dir: str | os.PathLike[str],
    containerfile: str = "Containerfile",
    build_args: Mapping[str, str] | None = None,
) -> dagger.Container:
    """An agent image built from a folder on the client's host, e.g. a sample agent.

    ``context_dir`` is a path on the client's host, sent to the engine by the session;
    ``containerfile`` is relative to it.
    """
    source = client.host().directory(
        os.path.abspath(context_dir), exclude=[".git", "**/__pycache__", "**/*.pyc"]
    )
    return docker_build(source, containerfile, build_args)
