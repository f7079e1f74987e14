"""Build an agent's image with ``podman build``.

The build context is staged in a temporary directory: the agent's own ``build.context`` plus
the standard-library helper (``agents/__init__.py``, ``agents/_helper.py``) at
``_airlock/agents/``, so a Containerfile can ``COPY _airlock/agents /opt/airlock/agents``
without the agent author vendoring it. Nothing here imports ``server`` or ``executor``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from agents.manifest import Manifest, load_manifest

HELPER_FILES = ("__init__.py", "_helper.py")
STAGED_HELPER_DIR = "_airlock/agents"


class BuildError(RuntimeError):
    """Raised when ``podman build`` fails; the message ends with podman's output."""


def default_tag(manifest: Manifest) -> str:
    return f"localhost/airlock/{manifest.name}:{manifest.version}"


def _stage(agent_dir: Path, manifest: Manifest, dest: Path) -> Path:
    """Copy the build context into ``dest`` with the helper added; return the Containerfile."""
    build = manifest.build
    if build is None:
        raise BuildError(f"{agent_dir}/agent.yaml has no 'build' section")
    context = (agent_dir / build.context).resolve()
    if not context.is_dir():
        raise BuildError(f"build.context {build.context!r} is not a directory")
    containerfile = (context / build.containerfile).resolve()
    if not containerfile.is_file():
        raise BuildError(f"build.containerfile {build.containerfile!r} not found in {context}")
    shutil.copytree(
        context, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", ".git")
    )
    helper_src = Path(__file__).resolve().parent
    helper_dst = dest / STAGED_HELPER_DIR
    helper_dst.mkdir(parents=True, exist_ok=True)
    for name in HELPER_FILES:
        shutil.copy2(helper_src / name, helper_dst / name)
    return dest / containerfile.relative_to(context)


def build_image(
    agent_dir: str | Path,
    *,
    base_image: str | None = None,
    tag: str | None = None,
    podman: str = "podman",
    timeout: float = 900,
) -> str:
    """Build the agent in ``agent_dir`` and return the image reference it was tagged with.

    ``base_image`` is passed as ``--build-arg BASE_IMAGE=...`` (e.g. the offline base made by
    ``executor.base_image``); ``None`` keeps the Containerfile's default.
    """
    agent_dir = Path(agent_dir).resolve()
    manifest = load_manifest(agent_dir)
    ref = tag or manifest.image or default_tag(manifest)
    with tempfile.TemporaryDirectory(prefix="airlock-build-") as tmp:
        ctx = Path(tmp) / "ctx"
        containerfile = _stage(agent_dir, manifest, ctx)
        cmd = [podman, "build", "--file", str(containerfile), "--tag", ref]
        if base_image:
            cmd += ["--pull=never", "--build-arg", f"BASE_IMAGE={base_image}"]
        cmd.append(str(ctx))
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError as e:
            raise BuildError(f"{podman!r} not found: install podman to build agent images") from e
        except subprocess.TimeoutExpired as e:
            raise BuildError(f"podman build timed out after {timeout:g}s") from e
        if r.returncode != 0:
            tail = (r.stdout + r.stderr).strip()[-3000:]
            raise BuildError(
                f"podman build of {manifest.name} failed (exit {r.returncode}):\n{tail}"
            )
    return ref
