"""Shared fixtures for tests that run real containers through podman.

Images are built once per session: the offline Debian base (``make_base_image``, cached
rootfs), the ``misbehave`` fixture agent and the four sample agents on top of it. Where podman
cannot run sandboxes everything is skipped (failed under CI), with a reason naming what is
missing (see tests/helpers/requirements.py).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agents.build import build_image
from agents.limits import Limits
from agents.manifest import Manifest, load_manifest
from executor.base_image import make_base_image
from executor.results import Outcome, interpret
from executor.runtime.base import LABEL_RUN_ID, RunSpec, RuntimeUnavailable, SandboxResult, SecretValue
from executor.runtime.podman import PodmanRuntime
from tests.helpers.requirements import require

REPO = Path(__file__).resolve().parents[2]
MISBEHAVE_DIR = REPO / "tests" / "agents" / "misbehave"
SAMPLES_DIR = REPO / "sample_agents"
SAMPLE_NAMES = ("text-transform", "text-stats", "url-fetch", "signed-digest")

# Small limits keep the containment tests quick on a 2-core machine.
SMALL = Limits(memory_mib=64, timeout_seconds=10, pids=32, cpus=1, output_kib=64, log_kib=64)

_counter = itertools.count()


def new_run_id(prefix: str = "t") -> str:
    return f"{prefix}{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
async def podman_runtime() -> PodmanRuntime:
    require("podman", None if shutil.which("podman") else "not on PATH (scripts/setup.sh installs it)")
    require("root", None if os.geteuid() == 0 else "the podman runtime runs as root")
    try:  # the runtime's check runs a trial sandbox from the base image
        await asyncio.to_thread(make_base_image)
    except (RuntimeError, OSError) as e:
        require("the offline base image", f"`airlock base-image` failed: {e}")
    runtime = PodmanRuntime(executor_id="pytest")
    try:
        await runtime.check()
    except RuntimeUnavailable as e:
        require("a working podman sandbox", str(e))
    return runtime


@pytest.fixture(scope="session")
async def base_image(podman_runtime: PodmanRuntime) -> str:
    return await asyncio.to_thread(make_base_image)


@pytest.fixture(scope="session")
async def misbehave_image(base_image: str) -> str:
    return await asyncio.to_thread(build_image, MISBEHAVE_DIR, base_image=base_image)


@pytest.fixture(scope="session")
def misbehave_manifest() -> Manifest:
    return load_manifest(MISBEHAVE_DIR)


@pytest.fixture(scope="session")
async def sample_images(base_image: str) -> dict[str, str]:
    """Sample agent name -> image ref, all built on the offline base."""

    def build_all() -> dict[str, str]:
        return {n: build_image(SAMPLES_DIR / n, base_image=base_image) for n in SAMPLE_NAMES}

    return await asyncio.to_thread(build_all)


def output_schema(manifest: Manifest, capability: str) -> dict[str, Any]:
    cap = manifest.capability(capability)
    assert cap is not None, f"{manifest.name} has no capability {capability}"
    return cap.output_schema


async def run_agent(
    runtime: PodmanRuntime,
    image: str,
    manifest: Manifest,
    capability: str,
    payload: Any = None,
    *,
    limits: Limits = SMALL,
    network: bool = False,
    secrets: Mapping[str, bytes] | None = None,
    env: Mapping[str, str] | None = None,
    cancel: asyncio.Event | None = None,
    run_id: str | None = None,
) -> tuple[SandboxResult, Outcome]:
    """Run one capability for real and interpret it, as the executor does."""
    spec = RunSpec(
        run_id=run_id or new_run_id(capability.replace("_", "")),
        attempt=1,
        image=image,
        capability=capability,
        input={} if payload is None else payload,
        limits=limits,
        network=network,
        secrets={k: SecretValue(v) for k, v in (secrets or {}).items()},
        env=dict(env or {}),
        executor_id="pytest",
    )
    result = await runtime.run(spec, cancel or asyncio.Event())
    return result, interpret(result, output_schema(manifest, capability), limits=limits)


def containers(run_id: str) -> list[str]:
    """Names of the podman containers (any state) labelled with ``run_id``."""
    out = subprocess.run(
        ["podman", "ps", "-a", "--filter", f"label={LABEL_RUN_ID}={run_id}", "--format", "{{.Names}}"],
        capture_output=True, text=True, check=True).stdout
    return out.split()
