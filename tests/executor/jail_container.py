"""The jail inside ``podman run --privileged``, holding the files a Dagger exec would hold.

Dagger documents ``insecureRootCapabilities`` as the equivalent of ``docker run --privileged``.
This runs the exact exec of ``executor.runtime.jail_core.bundle.container_exec`` (the one the Dagger pipeline
sends) that way: the image's root filesystem only (its environment unset, user root, entrypoint
replaced by the bundle's supervisor), the bundle mounted read-only, the run's files in a
directory mounted at ``RUN_MOUNT``; the result is read back from that directory and judged by
``executor.runtime.jail.result_from_document``, as the Dagger runtime does.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from executor.runtime.base import RunSpec, SandboxResult, Termination
from executor.runtime.jail import result_from_document
from executor.runtime.jail_core.bundle import (
    BUNDLE_MOUNT,
    RUN_MOUNT,
    SECRETS_MOUNT,
    Bundle,
    ImageConfig,
    container_exec,
)
from executor.runtime.podman import GLOBAL_OPTIONS, NOFILE

# runc here cannot raise these above the host's hard limits (podman's defaults exceed them).
ULIMITS = ("--ulimit", f"nofile={NOFILE}:{NOFILE}", "--ulimit", "nproc=4096:4096")


def image_config(image: str) -> ImageConfig:
    info = json.loads(subprocess.run(["podman", "image", "inspect", image], capture_output=True,
                                     text=True, check=True).stdout)[0]
    cfg = info.get("Config") or {}
    env = tuple((k, v) for k, _, v in (e.partition("=") for e in cfg.get("Env") or ()))
    return ImageConfig(argv=tuple(cfg.get("Entrypoint") or ()) + tuple(cfg.get("Cmd") or ()),
                       env=env, workdir=cfg.get("WorkingDir") or "/")


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class PrivilegedJail:
    """``run(spec, cancel)`` like a runtime: one ``podman run --privileged`` per run."""

    name = "jail-in-privileged-container"

    def __init__(self, bundle: Bundle, *, extra_podman: Sequence[str] = ()) -> None:
        self.bundle = bundle
        self.extra_podman = list(extra_podman)

    def command(self, spec: RunSpec, run_dir: Path, secrets_dir: Path | None) -> list[str]:
        plan = container_exec(spec, image_config(spec.image), loader=self.bundle.loader)
        run_dir.chmod(0o755)  # the sandbox user reaches its output directory inside
        for name, text in plan.run_files.items():
            (run_dir / name).write_text(text)
        mounts = ["-v", f"{self.bundle.path}:{BUNDLE_MOUNT}:ro", "-v", f"{run_dir}:{RUN_MOUNT}"]
        if plan.secret_files:
            assert secrets_dir is not None
            for name, path in plan.secret_files.items():
                f = secrets_dir / Path(path).name
                f.write_bytes(spec.secrets[name].value)
                f.chmod(0o400)
            mounts += ["-v", f"{secrets_dir}:{SECRETS_MOUNT}:ro"]
        return ["podman", *GLOBAL_OPTIONS, "run", "--rm", "--privileged",
                "--unsetenv-all", "--user", "0:0", "--workdir", "/",  # the rootfs only, as Dagger's
                *ULIMITS,
                "--network", "bridge",  # the exec has the engine's network: the jail must deny it
                *self.extra_podman, *mounts,
                "--entrypoint", plan.argv[0], spec.image, *plan.argv[1:]]  # fmt: skip

    async def run(self, spec: RunSpec, cancel: asyncio.Event) -> SandboxResult:
        started = time.monotonic()
        run_dir = Path(tempfile.mkdtemp(prefix="airlock-priv-run-"))
        secrets_dir = Path(tempfile.mkdtemp(prefix="airlock-priv-secrets-"))
        try:
            cmd = self.command(spec, run_dir, secrets_dir)
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await proc.communicate()
            document = _read(run_dir / "result.json")
            if document is None:
                return SandboxResult(Termination.START_FAILED, None, None, False, out + err, False,
                                     time.monotonic() - started,
                                     detail=f"podman exit {proc.returncode}: {err.decode(errors='replace')[-800:]}")
            return result_from_document(document, duration_seconds=time.monotonic() - started)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.rmtree(secrets_dir, ignore_errors=True)
