"""``airlock agent …``: the agent author's commands (validate, build, run-local, register).

They work on an agent folder (``agent.yaml``, Containerfile, code) on the author's machine;
``run-local`` gives the run the control plane's limits, input check and run id shape
(``agents.limits``, ``agents.inputs``, ``agents.ids``) and the executor's sandbox runtimes
and result checks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from agents.build import default_tag
from agents.ids import new_run_id
from agents.inputs import InputMismatch, check_input
from agents.limits import DEFAULT_LIMITS, Limits, LimitsRefused, resolve_limits
from agents.manifest import SECRET_RE, Manifest, ManifestError, load_manifest
from airlock.cli._framework import EXIT_OK, EXIT_RUN_NOT_SUCCEEDED, CliError, Commands
from airlock.cli._output import err, print_json
from airlock.cli.agents import register_manifest


def _manifest_path(path: str) -> Path:
    p = Path(path)
    return p / "agent.yaml" if p.is_dir() else p


def _load(path: str) -> Manifest:
    p = _manifest_path(path)
    try:
        return load_manifest(p)
    except FileNotFoundError:
        raise CliError(
            f"{p}: not found (expected agent.yaml or a folder holding one)") from None
    except OSError as e:
        raise CliError(f"{p}: cannot read: {e.strerror or e}") from None
    except ManifestError as e:
        raise CliError(f"{p}: invalid manifest: {e}") from None


def image_ref(manifest: Manifest) -> str:
    """The image an agent runs as: its ``image``, else the tag ``agent build`` gives it."""
    return manifest.image or default_tag(manifest)


def local_image_digest(image: str, *, podman: str = "podman") -> str | None:
    """``sha256:…`` of a locally stored image (its digest, else its ID); None if absent."""
    try:
        r = subprocess.run([podman, "image", "inspect", "--format", "{{.Digest}} {{.Id}}", image],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = r.stdout.split()
    if r.returncode != 0 or not parts:
        return None
    return parts[0] if parts[0].startswith("sha256:") else f"sha256:{parts[-1]}"


# ----------------------------------------------------------------------------- validate


def _summary(m: Manifest) -> str:
    d = m.limits.default
    lines = [
        f"{m.name} {m.version}: valid",
        f"  image         {m.image or '(built: ' + image_ref(m) + ')'}",
        f"  risk          {m.risk.label}",
        f"  network       {'may ask' if m.permissions.network else 'never'}",
        f"  secrets       {', '.join(m.permissions.secrets) or '-'}",
        f"  limits        memory {d.memory_mib or DEFAULT_LIMITS.memory_mib} MiB, timeout "
        f"{d.timeout_seconds or DEFAULT_LIMITS.timeout_seconds:g}s (defaults)",
    ]
    for c in m.capabilities:
        lines.append(f"  capability    {c.name}" + (f": {c.description.strip()}"
                                                   if c.description else ""))
    return "\n".join(lines)


def cmd_validate(ns: argparse.Namespace) -> int:
    m = _load(ns.path)
    if ns.json:
        print_json(m.to_json())
    else:
        print(_summary(m))
    return EXIT_OK


# ----------------------------------------------------------------------------- build


def _build(path: str, *, base_image: str | None, tag: str | None) -> str:
    from agents.build import BuildError, build_image

    try:
        return build_image(path, base_image=base_image, tag=tag)
    except BuildError as e:
        raise CliError(str(e)) from None


def cmd_build(ns: argparse.Namespace) -> int:
    m = _load(ns.path)
    if m.build is None:
        raise CliError(f"{_manifest_path(ns.path)} has no 'build' section: nothing to build")
    err(f"building {m.name} {m.version} ...")
    ref = _build(ns.path, base_image=ns.base_image, tag=ns.tag)
    if ns.json:
        print_json({"image": ref, "image_digest": local_image_digest(ref)})
    else:
        print(ref)
    return EXIT_OK


# ----------------------------------------------------------------------------- run-local


def _local_limits(m: Manifest, *, memory_mib: int | None, timeout_seconds: float | None,
                  ) -> Limits:
    """The limits the control plane would give this run (``agents.limits.resolve_limits``)."""
    try:
        limits, _ = resolve_limits({"memory_mib": memory_mib, "timeout_seconds": timeout_seconds},
                                   m.limits.default, m.limits.max)
    except LimitsRefused as e:
        if e.above_maximum:
            raise CliError(str(e)) from None
        raise CliError(f"--{e.field.replace('_', '-')}: {e.problem}") from None
    return limits


def _secrets(m: Manifest, items: list[str]) -> dict[str, bytes]:
    """``NAME=VALUE``, or ``NAME`` alone to take the value from the environment variable NAME."""
    out: dict[str, bytes] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not re.match(SECRET_RE, name):
            raise CliError(f"--secret {name!r}: a name must match {SECRET_RE}")
        if name not in m.permissions.secrets:
            allowed = ", ".join(m.permissions.secrets) or "none"
            raise CliError(f"--secret {name}: not permitted by the manifest "
                           f"(permissions.secrets: {allowed})")
        if not sep:
            if name not in os.environ:
                raise CliError(f"--secret {name}: no value (use NAME=VALUE or set ${name})")
            value = os.environ[name]
        out[name] = value.encode()
    return out


def _input(m: Manifest, capability: str, text: str) -> Any:
    cap = m.capability(capability)
    if cap is None:
        names = ", ".join(c.name for c in m.capabilities)
        raise CliError(f"{m.name} has no capability {capability!r} (it has: {names})")
    if text in ("-", "@-"):
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as e:
            raise CliError(f"--input: cannot read {text[1:]}: {e.strerror or e}") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"--input: not valid JSON: {e}") from None
    try:
        check_input(cap, payload)
    except InputMismatch as e:
        raise CliError(str(e)) from None
    return payload


def _image_exists(image: str) -> bool:
    try:
        return subprocess.run(["podman", "image", "exists", image], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


async def cmd_run_local(ns: argparse.Namespace) -> int:
    m = _load(ns.path)
    payload = _input(m, ns.capability, ns.input)
    if ns.network and not m.permissions.network:
        raise CliError("--network: the manifest does not permit network egress "
                       "(permissions.network: false)")
    secret_values = _secrets(m, ns.secret)
    limits = _local_limits(m, memory_mib=ns.memory_mib, timeout_seconds=ns.timeout_seconds)
    image = image_ref(m)
    if m.build is not None and (ns.rebuild or not await asyncio.to_thread(_image_exists, image)):
        err(f"building {image} ...")
        image = await asyncio.to_thread(_build, ns.path, base_image=ns.base_image, tag=None)
    elif m.build is None and not await asyncio.to_thread(_image_exists, image):
        raise CliError(f"image {image} is not in local storage and the manifest has no "
                       "'build' section to make it")

    # Imported here: other commands need no sandbox runtime.
    from executor.results import interpret
    from executor.runtime.base import RunSpec, RuntimeUnavailable, SecretValue
    from executor.runtime.registry import resolve_runtime

    try:
        runtime = await resolve_runtime(ns.runtime)
    except (RuntimeUnavailable, ValueError) as e:
        raise CliError(f"no sandbox: {e}") from None
    spec = RunSpec(
        run_id=new_run_id(),
        attempt=1,
        image=image,
        capability=ns.capability,
        input=payload,
        limits=limits,
        entrypoint=m.entrypoint,
        network=ns.network,
        secrets={k: SecretValue(v) for k, v in secret_values.items()},
        executor_id="local",
    )
    cancel = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, cancel.set)  # Ctrl-C stops the sandbox cleanly
    err(f"running {m.name} {m.version} {ns.capability} on {runtime.name} "
        f"(memory {limits.memory_mib} MiB, timeout {limits.timeout_seconds:g}s, "
        f"network {'on' if ns.network else 'off'})")
    try:
        result = await runtime.run(spec, cancel)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)
    cap = m.capability(ns.capability)
    assert cap is not None  # checked by _input
    outcome = interpret(result, cap.output_schema, limits=limits)
    if ns.json:
        print_json({
            "state": outcome.state, "reason": outcome.reason, "output": outcome.output,
            "error_code": outcome.error_code, "exit_code": outcome.exit_code,
            "duration_seconds": round(outcome.duration_seconds, 3),
            "peak_memory_bytes": outcome.peak_memory_bytes, "image_digest": outcome.image_digest,
            "logs": outcome.logs, "logs_truncated": outcome.logs_truncated,
        })
    else:
        head = f"{outcome.state}" + (f": {outcome.reason}" if outcome.reason else "")
        peak = (f", peak memory {outcome.peak_memory_bytes / 2**20:.1f} MiB"
                if outcome.peak_memory_bytes else "")
        print(f"{head} (exit {outcome.exit_code}, {outcome.duration_seconds:.2f}s{peak})")
        if outcome.succeeded:
            print_json(outcome.output)
        if outcome.logs:
            print("--- logs" + (" (truncated)" if outcome.logs_truncated else "") + " ---")
            print(outcome.logs.rstrip("\n"))
    return EXIT_OK if outcome.succeeded else EXIT_RUN_NOT_SUCCEEDED


# ----------------------------------------------------------------------------- register


async def cmd_register(ns: argparse.Namespace) -> int:
    m = _load(ns.path)
    text = _manifest_path(ns.path).read_text()
    if m.image is None:
        # Registration needs an image reference: use the tag `agent build` gave the image.
        doc = m.to_json()
        doc["image"] = image_ref(m)
        text = json.dumps(doc)
        err(f"note: the manifest has no 'image'; registering it as {doc['image']}")
    digest = ns.image_digest or await asyncio.to_thread(local_image_digest, image_ref(m)) or ""
    if not digest:
        err(f"note: {image_ref(m)} is not in local storage: registering without a digest")
    return await register_manifest(ns, text, digest)


# ----------------------------------------------------------------------------- registration


def register(cli: Commands) -> None:
    from executor.runtime.registry import runtime_names  # names only; no runtime is imported

    agent = cli.group("agent", help="agent authors: validate, build, try and register an agent",
                      description="Commands for agent authors, working on an agent folder "
                                  "(agent.yaml, Containerfile, code).")
    p = agent.add("validate", cmd_validate, help="check agent.yaml and summarise it",
                  description="Parse and check agent.yaml; on error, name the offending field "
                              "and exit 1.")
    p.add_argument("path", metavar="PATH", help="agent.yaml or the agent's folder")

    p = agent.add("build", cmd_build, help="build the agent's image with podman",
                  description="Build the agent's image with `podman build` (the in-container "
                              "helper is added to\nthe build context as _airlock/agents).")
    p.add_argument("path", metavar="PATH", help="the agent's folder (or its agent.yaml)")
    p.add_argument("--base-image", default=None, metavar="IMAGE",
                   help="passed as --build-arg BASE_IMAGE (e.g. the output of "
                        "`airlock base-image`)")
    p.add_argument("--tag", default=None,
                   help="image tag (default: the manifest's image, else "
                        "localhost/airlock/NAME:VERSION)")

    p = agent.add(
        "run-local", cmd_run_local, help="run one capability locally in a real sandbox",
        description=(
            "Run one capability in a real sandbox (auto: Dagger if an engine is reachable,\n"
            "else podman) with the same limits, contract and output checks as the executor.\n"
            "Builds the image first if it is missing. Exit status 0 if the run SUCCEEDED,\n"
            "4 if it did not, 1 on errors."
        ))
    p.add_argument("path", metavar="PATH", help="the agent's folder (or its agent.yaml)")
    p.add_argument("capability", metavar="CAPABILITY")
    p.add_argument("--input", required=True, metavar="JSON|@FILE",
                   help="the capability's input: JSON text, @file, or @- for stdin")
    p.add_argument("--network", action="store_true",
                   help="allow network egress (the manifest must permit it)")
    p.add_argument("--memory-mib", type=int, default=None, metavar="MIB",
                   help="memory limit (default: the manifest's)")
    p.add_argument("--timeout-seconds", type=float, default=None, metavar="SECONDS",
                   help="wall-clock limit (default: the manifest's)")
    p.add_argument("--secret", action="append", default=[], metavar="NAME=VALUE",
                   help="a secret for the run (repeatable); NAME alone takes $NAME")
    p.add_argument("--runtime", default=os.environ.get("AIRLOCK_RUNTIME", "auto"),
                   choices=runtime_names(),
                   help="sandbox runtime (env AIRLOCK_RUNTIME; default auto)")
    p.add_argument("--rebuild", action="store_true", help="build the image even if it exists")
    p.add_argument("--base-image", default=None, metavar="IMAGE",
                   help="base image for a build (see `agent build`)")

    p = agent.add(
        "register", cmd_register, remote=True,
        help="register the agent with the control plane, pinning the local image digest",
        description=(
            "Register the agent version with the control plane. The image digest is taken\n"
            "from `podman image inspect` when the image is in local storage."
        ))
    p.add_argument("path", metavar="PATH", help="the agent's folder (or its agent.yaml)")
    p.add_argument("--image-digest", default="", metavar="DIGEST",
                   help="use this digest instead of the local image's")
