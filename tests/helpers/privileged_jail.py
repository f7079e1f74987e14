"""TEST-ONLY stand-in for the Dagger engine: ``PrivilegedPodmanJailRuntime``.

No Dagger engine can run on the machines of this project (its image is in a registry they
cannot reach), so the Dagger runtime's exec is run here the way Dagger documents
``insecureRootCapabilities``: as ``podman run --privileged``. Each attempt runs the exec that
``executor.runtime.dagger_pipeline.jail_container`` sends to an engine, built by the same
``executor.runtime.jail_core.bundle.container_exec`` (the image's root filesystem only, the
read-only bundle, the run's files, the bundle's static supervisor as the entrypoint, run as
root with no environment from the image), via ``tests.executor.jail_container.PrivilegedJail``;
its result document is judged by ``executor.runtime.jail.result_from_document`` as the Dagger
runtime judges it.

It is a ``SandboxRuntime`` built through the runtime registry (``register`` adds it to
``executor.runtime.registry.RUNTIMES`` under ``NAME`` for a test), so a real ``Executor``
takes runs through it end to end. It is never part of the product: nothing outside tests/
imports it, and ``auto`` never considers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from executor.runtime.base import (
    LABEL_EXECUTOR,
    LABEL_RUN_ID,
    RunSpec,
    RuntimeFactory,
    RuntimeSettings,
    RuntimeUnavailable,
    SandboxResult,
    Termination,
)
from executor.runtime.jail import result_from_document
from executor.runtime.jail_core.bundle import Bundle, BundleError, host_bundle
from executor.runtime.podman import GLOBAL_OPTIONS
from tests.executor.jail_container import PrivilegedJail

NAME = "privileged-podman-jail"  # the registry name a test gives it
LABEL_STANDIN = "airlock.test-standin"
# Over the run's own timeout (which the supervisor inside enforces): podman's start and the
# result's read-back, as the Dagger runtime's client-side backstop allows for the engine.
BACKSTOP_GRACE_SECONDS = 30.0


class PrivilegedPodmanJailSettings(RuntimeSettings):
    bundle_dir: Path | None = None  # where the bundle is assembled (default: a temp dir)
    executor_id: str = "pytest"


class PrivilegedPodmanJailRuntime:
    """The Dagger runtime's exec, run by ``podman run --privileged`` (a test stand-in)."""

    name = NAME
    network_pool: bool | None = None  # network decided per run by the jail inside, as Dagger's

    def __init__(self, *, bundle_dir: Path | None = None, executor_id: str = "pytest") -> None:
        self.bundle_dir = bundle_dir or Path(tempfile.mkdtemp(prefix="airlock-standin-bundle-"))
        self.executor_id = executor_id
        self._bundle: Bundle | None = None

    async def bundle(self) -> Bundle:
        if self._bundle is None:
            try:
                self._bundle = await asyncio.to_thread(host_bundle, self.bundle_dir)
            except (BundleError, OSError) as e:
                raise RuntimeUnavailable(f"{NAME}: cannot assemble the jail's bundle: {e}") from e
        return self._bundle

    async def check(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeUnavailable(f"{NAME}: podman run --privileged needs root here")
        if shutil.which("podman") is None:
            raise RuntimeUnavailable(f"{NAME}: podman is not on PATH")
        await self.bundle()

    def _labels(self, spec: RunSpec) -> list[str]:
        return ["--name", spec.sandbox_name, "--label", f"{LABEL_RUN_ID}={spec.run_id}",
                "--label", f"{LABEL_EXECUTOR}={self.executor_id}", "--label", f"{LABEL_STANDIN}=1"]

    async def run(self, spec: RunSpec, cancel: asyncio.Event) -> SandboxResult:
        started = time.monotonic()
        if cancel.is_set():
            return _result(Termination.CANCELLED, started, "cancelled before start")
        jail = PrivilegedJail(await self.bundle(), extra_podman=self._labels(spec))
        run_dir = Path(tempfile.mkdtemp(prefix="airlock-standin-run-"))
        secrets_dir = Path(tempfile.mkdtemp(prefix="airlock-standin-secrets-"))
        try:
            try:
                cmd = await asyncio.to_thread(jail.command, spec, run_dir, secrets_dir)
            except (ValueError, subprocess.CalledProcessError) as e:
                return _result(Termination.START_FAILED, started, f"cannot build the exec: {e}")
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            communicate = asyncio.ensure_future(proc.communicate())
            cancelled = asyncio.ensure_future(cancel.wait())
            try:
                backstop = spec.limits.timeout_seconds + BACKSTOP_GRACE_SECONDS
                done, _ = await asyncio.wait({communicate, cancelled}, timeout=backstop,
                                             return_when=asyncio.FIRST_COMPLETED)
                if communicate not in done:
                    await self._remove(spec.sandbox_name)
                    await communicate
                    if cancelled in done:
                        return _result(Termination.CANCELLED, started, "cancelled on request")
                    return _result(Termination.TIMED_OUT, started,
                                   f"backstop: no result within {backstop:g}s")
            finally:
                cancelled.cancel()
                if not communicate.done():  # run() itself cancelled: leave no container behind
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            _, err = communicate.result()
            try:
                document = (run_dir / "result.json").read_bytes()
            except FileNotFoundError:
                return _result(Termination.START_FAILED, started,
                               f"podman exit {proc.returncode}: {err.decode(errors='replace')[-800:]}")
            return result_from_document(document, duration_seconds=time.monotonic() - started)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.rmtree(secrets_dir, ignore_errors=True)

    async def _remove(self, name: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            "podman", *GLOBAL_OPTIONS, "rm", "-f", "-t", "0", name,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await proc.wait()

    async def reap(self, run_id: str) -> int:
        names = await containers(run_id)
        for name in names:
            await self._remove(name)
        return len(names)


async def containers(run_id: str) -> list[str]:
    """Names of the stand-in's containers (any state) still present for ``run_id``."""
    proc = await asyncio.create_subprocess_exec(
        "podman", *GLOBAL_OPTIONS, "ps", "-a", "--format", "{{.Names}}",
        "--filter", f"label={LABEL_RUN_ID}={run_id}", "--filter", f"label={LABEL_STANDIN}=1",
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, _ = await proc.communicate()
    return out.decode().split()


def _result(termination: Termination, started: float, detail: str) -> SandboxResult:
    return SandboxResult(termination, None, None, False, b"", False, time.monotonic() - started,
                         detail=detail)


def _create(s: PrivilegedPodmanJailSettings) -> PrivilegedPodmanJailRuntime:
    return PrivilegedPodmanJailRuntime(bundle_dir=s.bundle_dir, executor_id=s.executor_id)


FACTORY: RuntimeFactory[PrivilegedPodmanJailSettings] = RuntimeFactory(
    settings=PrivilegedPodmanJailSettings, create=_create)


def register(monkeypatch: pytest.MonkeyPatch) -> str:
    """Make ``NAME`` a runtime of the registry for one test; returns the name."""
    from executor.runtime import registry

    monkeypatch.setitem(registry.RUNTIMES, NAME, f"{__name__}:FACTORY")
    return NAME
