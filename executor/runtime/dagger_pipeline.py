"""Dagger pipeline objects for running and building agents. Pure: nothing here talks to an engine.

Dagger's SDK builds queries lazily, so these functions only describe containers; the runtime
(``executor.runtime.dagger``) and the ``dagger/`` module decide when to evaluate them. Tests render
the resulting GraphQL without an engine and validate it against the engine's schema.

This module is importable on its own (it needs ``dagger``, ``agents``, ``executor.runtime.jail_core.bundle``
and ``executor.runtime.base`` only, never ``server``): the ``dagger/`` module imports it from the
repository so that ``dagger call run-agent`` builds exactly the container the executor runs.

How one run executes (``jail_container``): the jail runs inside the exec. The exec is a fresh
container whose root filesystem is the image's (``withRootfs(image.rootfs)``: the image's
entrypoint, environment, user and working directory are *not* applied; the executor read them
beforehand and hands them to the jail), with the jail's read-only bundle mounted at
``BUNDLE_MOUNT``, the run's files at ``RUN_MOUNT`` and the secrets at ``SECRETS_MOUNT``; it runs
the bundle's static supervisor with ``insecureRootCapabilities`` (Dagger's ``docker run
--privileged``), which puts the agent through bubblewrap into its own namespaces and cgroup as
uid 65534 with no privileges. Nothing of the image runs privileged: see
``executor/runtime/jail_core/bundle.py`` and docs/security.md.

Facts this relies on (dagger-io 0.21.11, ``dagger/client/gen.py``; the engine schema):

- ``Container.with_exec`` has no resource limits and no network switch: the jail enforces both.
- ``with_exec(expect=ReturnType.ANY)`` accepts exit codes 0-127 and 192-255; the supervisor
  exits 0 once it wrote its result document, 125 when it could not.
- ``Client.set_secret(name, plaintext: str)`` (at most 128000 bytes) and
  ``Container.with_mounted_secret(path, source, owner=, mode=)``; ``mode`` needs ``owner``.
- Object arguments (a ``Secret``, a ``Directory``) are sent as IDs, resolved by separate
  requests, so the secret's plaintext is only ever in the ``setSecret`` request, never in the
  exec's query, its arguments or its environment.
- ``withMountedDirectory(readOnly: true)`` mounts the bundle read-only.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path

import dagger

from agents import build as _agent_build
from agents.build import HELPER_FILES, STAGED_HELPER_DIR
from executor.runtime.base import RunSpec
from executor.runtime.jail_core.bundle import (
    BUNDLE_MOUNT,
    RESULT_FILE,
    RUN_MOUNT,
    SUPERVISOR,
    ImageConfig,
    container_exec,
)

RESULT_PATH = f"{RUN_MOUNT}/{RESULT_FILE}"  # status + base64 logs/output: one read, exact bytes
SUPERVISOR_PATH = f"{BUNDLE_MOUNT}/{SUPERVISOR}"
RUN_ID_ENV = "AIRLOCK_RUN_ID"
SECRET_PLAINTEXT_MAX = 128_000  # Client.set_secret's documented limit
_SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HELPER_DIR = Path(_agent_build.__file__).resolve().parent  # the files `agent build` stages


async def image_config(image: dagger.Container) -> ImageConfig:
    """What a run takes from the image's configuration: entrypoint + default args, environment,
    working directory (several small requests; the runtime caches the answer per digest)."""
    argv = (*(await image.entrypoint()), *(await image.default_args()))
    env = tuple([(await v.name(), await v.value()) for v in await image.env_variables()])
    return ImageConfig(argv=argv, env=env, workdir=(await image.workdir()) or "/")


def _secret_text(name: str, value: bytes) -> str:
    if not _SECRET_NAME_RE.match(name):
        raise ValueError(f"secret name {name!r} is not a safe file name")
    if len(value) > SECRET_PLAINTEXT_MAX:
        raise ValueError(f"secret {name} is larger than Dagger's {SECRET_PLAINTEXT_MAX} bytes")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"secret {name} is not UTF-8 text (Dagger secrets are strings)") from None


def jail_container(
    client: dagger.Client,
    spec: RunSpec,
    *,
    image: dagger.Container,
    config: ImageConfig,
    bundle: dagger.Directory,
    loader: str,
) -> dagger.Container:
    """The exec that runs one attempt in the jail; evaluate ``.file(RESULT_PATH).contents()``.

    ``image`` gives only its root filesystem (pin it by digest: ``from_(ref@sha256:…)``);
    ``config`` is what the run takes from the image's configuration (``image_config``);
    ``bundle`` is the jail's bundle directory (``executor.runtime.jail_core.bundle``) and ``loader`` the
    relative path of its dynamic loader (``Bundle.loader``).
    Raises ValueError for a run that cannot be expressed (no command, non-UTF-8 secret, ...).
    """
    plan = container_exec(spec, config, loader=loader)
    secrets = {name: _secret_text(name, spec.secrets[name].value) for name in plan.secret_files}
    run_files = client.directory()
    for name, text in sorted(plan.run_files.items()):
        # Root's: the supervisor opens them as root and hands bubblewrap descriptors.
        run_files = run_files.with_new_file(name, text, permissions=0o600)
    ctr = (
        # A fresh container on the image's files alone: none of its configuration applies, so
        # the exec runs as root with no environment from the image.
        client.container().with_rootfs(image.rootfs())
        .with_mounted_directory(BUNDLE_MOUNT, bundle, read_only=True)
        # In the container's own filesystem (not a mount): the supervisor writes its result
        # there and the exec's snapshot is where it is read back from.
        .with_directory(RUN_MOUNT, run_files)
        # Unique to the attempt: the exec cache can never hand back an earlier run's result
        # (with_volatile_variable would not change the cache key). The supervisor gives
        # bubblewrap no environment of its own, so this does not reach the agent this way.
        .with_env_variable(RUN_ID_ENV, f"{spec.run_id}:{spec.attempt}")
    )
    for name, path in sorted(plan.secret_files.items()):
        # A per-attempt secret name: concurrent runs in one engine session never collide.
        source = client.set_secret(f"airlock-{spec.run_id}-{spec.attempt}-{name}", secrets[name])
        ctr = ctr.with_mounted_secret(path, source, owner="0:0", mode=0o400)
    return ctr.with_exec(plan.argv, insecure_root_capabilities=True,
                         expect=dagger.ReturnType.ANY)


# --- the bundle, built inside an engine (the dagger/ module) -------------------------------------

BUNDLE_BUILDER_IMAGE = "docker.io/library/debian:bookworm-slim"
BUNDLE_BUILDER_PACKAGES = ("bubblewrap", "slirp4netns", "gcc", "libc6-dev", "libseccomp2", "python3")
BUNDLE_OUT = "/bundle"
_JAIL_DIR = Path(__file__).resolve().parent / "jail_core"
# Runs in the builder (a Debian image: trusted, never the agent's), unprivileged. The same
# layout as jail_core.bundle.assemble_bundle: the static supervisor, bwrap and slirp4netns
# with every library they load and the loader, the seccomp filter compiled by seccomp.py.
# (``BUNDLE_SRC``/``BUNDLE_OUT`` override the paths: tests run the same script on this host.)
BUILD_SCRIPT = f"""set -eu
src="${{BUNDLE_SRC:-/src}}"; out="${{BUNDLE_OUT:-{BUNDLE_OUT}}}"; mkdir -p "$out/lib"
cc -O2 -Wall -Wextra -Wno-format-truncation -static -o "$out/{SUPERVISOR}" "$src/supervisor.c"
for prog in bwrap slirp4netns; do
  cp "$(command -v $prog)" "$out/$prog"
  for lib in $(ldd "$(command -v $prog)" | grep -o '/[^ ]*'); do cp -L "$lib" "$out/lib/"; done
done
PYTHONPATH="$src" python3 -c 'import sys, seccomp
sys.stdout.buffer.write(seccomp.compile_filter())' > "$out/seccomp.bpf"
chmod 0755 "$out" "$out/lib" "$out/{SUPERVISOR}" "$out/bwrap" "$out/slirp4netns" "$out"/lib/*
chmod 0644 "$out/seccomp.bpf"
"""


@functools.cache
def _jail_source(name: str) -> str:
    return (_JAIL_DIR / name).read_text(encoding="utf-8")


def jail_bundle(client: dagger.Client) -> dagger.Directory:
    """The jail's bundle, built in the engine from this repository's supervisor and seccomp
    policy and Debian's bubblewrap and slirp4netns (where no executor host supplies one)."""
    return (
        client.container().from_(BUNDLE_BUILDER_IMAGE)
        .with_exec(["apt-get", "update"])
        .with_exec(["apt-get", "install", "-y", "--no-install-recommends",
                    *BUNDLE_BUILDER_PACKAGES])
        .with_new_file("/src/supervisor.c", _jail_source("supervisor.c"), permissions=0o644)
        .with_new_file("/src/seccomp.py", _jail_source("seccomp.py"), permissions=0o644)
        .with_exec(["sh", "-c", BUILD_SCRIPT])
        .directory(BUNDLE_OUT)
    )


async def bundle_loader(bundle: dagger.Directory) -> str:
    """The relative path of the bundle's dynamic loader (``lib/ld-linux-*``)."""
    names = [n.rstrip("/") for n in await bundle.entries(path="lib")]
    loaders = sorted(n for n in names if n.startswith("ld-linux"))
    if not loaders:
        raise ValueError(f"the jail bundle has no dynamic loader in lib/ ({', '.join(names)})")
    return f"lib/{loaders[0]}"


# --- images --------------------------------------------------------------------------------------


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
