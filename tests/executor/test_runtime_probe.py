"""The podman runtime's start-up check runs one real sandbox and refuses a host that cannot.

Absence is simulated, never made: a ``podman`` wrapper (first on PATH, or passed as the
runtime's ``podman``) runs the real podman with a containers.conf whose ``init_path`` names a
missing file (as on a host without catatonit), a global ``--runtime`` names a missing runc, or
the probe image does not exist. The wrapper also logs every podman command it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from executor.runtime import podman as podman_mod
from executor.runtime.base import LABEL_RUN_ID, RunSpec, RuntimeUnavailable
from executor.runtime.podman import GLOBAL_OPTIONS, PodmanRuntime
from tests.executor.conftest import SMALL, containers

pytestmark = [pytest.mark.podman, pytest.mark.slow]

MISSING_INIT = "/nonexistent/airlock-test/catatonit"


def wrapper(tmp_path: Path, *, init_path: str | None = None) -> Path:
    """A ``podman`` that logs its argv (one JSON line each) and runs the real one."""
    real = shutil.which("podman")
    assert real is not None
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "podman.log"
    conf = ""
    if init_path is not None:
        (tmp_path / "containers.conf").write_text(f'[containers]\ninit_path = "{init_path}"\n')
        conf = f"export CONTAINERS_CONF={tmp_path / 'containers.conf'}\n"
    script = bindir / "podman"
    script.write_text(
        "#!/bin/sh\n" + conf
        # One write(2) per line on an O_APPEND descriptor: lines from podman commands run at
        # the same time never interleave (a buffered print could split a line).
        + f"{sys.executable} -c 'import json, os, sys; fd = os.open(sys.argv[1], "
        + "os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644); "
        + "os.write(fd, (json.dumps(sys.argv[2:]) + chr(10)).encode())'"
        + f" {log} \"$@\"\n"
        + f'exec {real} "$@"\n')
    script.chmod(0o755)
    return script


def logged(script: Path) -> list[list[str]]:
    log = script.parent.parent / "podman.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def runs_of(script: Path) -> list[list[str]]:
    return [argv for argv in logged(script) if "run" in argv and argv.index("run") == len(GLOBAL_OPTIONS)]


async def test_missing_catatonit_is_refused_naming_it(podman_runtime: PodmanRuntime,
                                                      tmp_path: Path) -> None:
    rt = PodmanRuntime(podman=str(wrapper(tmp_path, init_path=MISSING_INIT)), executor_id="pytest")
    with pytest.raises(RuntimeUnavailable) as e:
        await rt.check()
    msg = str(e.value)
    assert "trial sandbox" in msg and MISSING_INIT in msg, msg
    assert "apt-get install catatonit" in msg, msg
    # cached: a second check answers the same without running podman again
    n = len(logged(Path(rt.podman)))
    with pytest.raises(RuntimeUnavailable) as again:
        await rt.check()
    assert str(again.value) == msg and len(logged(Path(rt.podman))) == n


async def test_missing_runc_is_refused_naming_it(podman_runtime: PodmanRuntime) -> None:
    rt = PodmanRuntime(global_options=("--runtime", "/nonexistent/airlock-test/runc",
                                       "--cgroup-manager", "cgroupfs"))
    with pytest.raises(RuntimeUnavailable, match="/nonexistent/airlock-test/runc"):
        await rt.check()


async def test_missing_probe_image_is_refused_naming_it(podman_runtime: PodmanRuntime) -> None:
    rt = PodmanRuntime(probe_image="localhost/airlock-test/no-such-image:1")
    with pytest.raises(RuntimeUnavailable) as e:
        await rt.check()
    assert "localhost/airlock-test/no-such-image:1 is not in local storage" in str(e.value)
    assert "airlock base-image" in str(e.value)


async def test_trial_uses_the_runs_options_once_per_process(
        podman_runtime: PodmanRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(podman_mod, "_TRIALS_PASSED", set())  # as in a fresh process
    script = wrapper(tmp_path)
    rt = PodmanRuntime(podman=str(script), executor_id="pytest")
    await rt.check()
    await rt.check()
    await PodmanRuntime(podman=str(script), executor_id="pytest").check()  # same process
    runs = runs_of(script)
    assert len(runs) == 1, runs  # one trial sandbox for the three checks
    trial = runs[0]
    # The same option names (every limit, --init, the work-dir binds...) as an ordinary run.
    spec = RunSpec(run_id="r1", attempt=1, image="img", capability="c", input={}, limits=SMALL)
    ordinary = rt._argv(spec, tmp_path / "work")

    def flags(argv: list[str]) -> list[str]:
        return sorted(w.split("=")[0] for w in argv if w.startswith("--") and w != "--entrypoint")

    assert flags(trial) == flags(ordinary)
    for must in ("--init", "--memory", "--pids-limit", "--cpus", "--read-only", "--cap-drop"):
        assert any(w.split("=")[0] == must for w in trial), must
    # it left nothing behind: no container, no work dir
    name = trial[trial.index("--name") + 1]
    run_id = next(w.split("=", 1)[1] for w in trial if w.startswith(f"{LABEL_RUN_ID}="))
    assert containers(run_id) == []
    assert not (rt.work_root / name).exists()


def test_executor_refuses_to_start_naming_catatonit(podman_runtime: PodmanRuntime,
                                                   tmp_path: Path) -> None:
    script = wrapper(tmp_path, init_path=MISSING_INIT)
    env = dict(os.environ, PATH=f"{script.parent}{os.pathsep}{os.environ['PATH']}",
               AIRLOCK_DATABASE_URL=f"sqlite:///{tmp_path / 'never.db'}", AIRLOCK_RUNTIME="podman",
               AIRLOCK_LOG_FORMAT="text")
    r = subprocess.run([sys.executable, "-m", "airlock.cli", "executor"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
    assert MISSING_INIT in r.stderr and "catatonit" in r.stderr, r.stderr[-2000:]
    assert runs_of(script), "the executor never tried a sandbox"
