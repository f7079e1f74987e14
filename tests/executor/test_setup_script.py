"""scripts/setup.sh names what is missing, and ends by starting one real sandbox.

Absence is simulated, never made: ``--check`` (installs nothing) runs with a PATH of links to
every program but the one taken away, or with a ``podman`` wrapper first on PATH whose
containers.conf points ``init_path`` at a missing file (a host without catatonit).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from executor.runtime.podman import PodmanRuntime
from tests.executor.test_runtime_probe import MISSING_INIT, wrapper

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup.sh"

pytestmark = [pytest.mark.podman, pytest.mark.slow]


def path_without(program: str, tmp_path: Path) -> str:
    """A PATH holding links to every program on the current PATH except ``program``."""
    bindir = tmp_path / "path"
    bindir.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for entry in os.scandir(d):
            link = bindir / entry.name
            if entry.name != program and not link.exists() and os.access(entry.path, os.X_OK):
                link.symlink_to(entry.path)
    assert shutil.which(program, path=str(bindir)) is None
    return str(bindir)


def setup_check(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SETUP), "--check"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PATH=path))


def test_setup_check_passes_here_and_ends_with_a_real_sandbox(podman_runtime: PodmanRuntime) -> None:
    r = setup_check(os.environ["PATH"])
    assert r.returncode == 0, r.stderr
    # The jail first (what `auto` picks here), then podman (the fallback), each a real sandbox.
    lines = r.stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines if ln.startswith("sandbox runtime")] == [
        "sandbox runtime jail", "sandbox runtime podman"], r.stdout
    assert all(": ok (a trial sandbox ran from" in ln for ln in lines
               if ln.startswith("sandbox runtime")), r.stdout
    steps = [ln for ln in r.stderr.splitlines() if "== " in ln]
    assert "airlock sandbox-check" in steps[-2] and "setup done" in steps[-1], r.stderr


@pytest.mark.parametrize(("program", "package"), [
    ("runc", "runc"), ("nats-server", "nats-server"), ("debootstrap", "debootstrap"),
    ("bwrap", "bubblewrap"), ("slirp4netns", "slirp4netns"), ("cc", "gcc"),
])
def test_setup_check_names_a_missing_program(program: str, package: str, tmp_path: Path) -> None:
    r = setup_check(path_without(program, tmp_path))
    assert r.returncode == 1, r.stderr
    assert f"error: missing: {program} (Debian package {package})" in r.stderr, r.stderr
    assert "sandbox-check" not in r.stderr  # stops before trying a sandbox


def test_setup_fails_naming_catatonit_when_no_sandbox_can_start(podman_runtime: PodmanRuntime,
                                                                tmp_path: Path) -> None:
    script = wrapper(tmp_path, init_path=MISSING_INIT)
    r = setup_check(f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    assert r.returncode == 1, r.stderr
    assert MISSING_INIT in r.stderr and "apt-get install catatonit" in r.stderr, r.stderr
    assert "error: this machine cannot run podman sandboxes" in r.stderr
