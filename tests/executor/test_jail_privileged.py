"""The jail inside a privileged container, exactly as the Dagger exec runs it.

Dagger documents ``insecureRootCapabilities`` as the equivalent of ``docker run --privileged``:
each run here is one ``podman run --privileged`` holding the files the Dagger exec holds (the
read-only bundle, the run's files; the image only as the root filesystem). The containment
essentials must hold there as on the host, and an image whose programs and libraries are
hostile must never have them run with privileges.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from agents.limits import Limits
from agents.manifest import Manifest
from executor.runtime.base import RunSpec, Termination
from executor.runtime.jail import JailRuntime
from executor.runtime.jail_core.bundle import BUNDLE_MOUNT, Bundle, BundleError, host_bundle
from executor.runtime.podman import GLOBAL_OPTIONS
from tests.executor import jail_support
from tests.executor.conftest import SMALL, new_run_id, run_agent
from tests.executor.jail_container import ULIMITS, PrivilegedJail
from tests.executor.jail_support import host_addresses
from tests.helpers.requirements import require

pytestmark = pytest.mark.podman
jail_runtime = jail_support.jail_runtime  # fixtures
host_listener = jail_support.host_listener

HOSTILE_DIR = Path(__file__).resolve().parents[1] / "agents" / "hostile"
HOSTILE_IMAGE = "localhost/airlock/hostile:test"
REPO_JAIL_CORE = Path(__file__).resolve().parents[2] / "executor" / "runtime" / "jail_core"


@pytest.fixture(scope="session")
async def bundle(jail_runtime: JailRuntime) -> Bundle:
    try:
        return await asyncio.to_thread(host_bundle, jail_runtime.work_root / "bundle")
    except BundleError as e:
        require("the jail's bundle (bwrap, slirp4netns, a C compiler, libseccomp)", str(e))
        raise


@pytest.fixture(scope="session")
def priv(bundle: Bundle) -> PrivilegedJail:
    return PrivilegedJail(bundle)


def _cc(*args: str) -> None:
    r = subprocess.run(["cc", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="session")
def hostile_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    ctx = tmp_path_factory.mktemp("hostile")
    for name in ("Containerfile", "agent.c", "hostile.c", "hostile_lib.c"):
        shutil.copy(HOSTILE_DIR / name, ctx / name)
    _cc("-O2", "-static", "-o", str(ctx / "agent"), str(ctx / "agent.c"))
    _cc("-O2", "-static", "-o", str(ctx / "hostile"), str(ctx / "hostile.c"))
    for out, marker in (("libc.so.6", "libc"), ("preload.so", "preload")):
        _cc("-O2", "-shared", "-fPIC", "-nostdlib", f'-DMARKER="/markers/{marker}"',
            "-o", str(ctx / out), str(ctx / "hostile_lib.c"))
    (ctx / "ld.so.preload").write_text("/lib/preload.so\n/lib/x86_64-linux-gnu/libc.so.6\n")
    (ctx / "owned").mkdir()
    (ctx / "owned" / "existing.txt").write_text("mine\n")
    subprocess.run(["podman", "build", "-q", "-t", HOSTILE_IMAGE, "-f", str(ctx / "Containerfile"), str(ctx)],
                   check=True, capture_output=True)
    return HOSTILE_IMAGE


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    d = tmp_path / "markers"  # root's, 0755: only a process running as root can write here
    d.mkdir(mode=0o755)
    return d


def _spec(image: str, *, network: bool = False, limits: Limits = SMALL) -> RunSpec:
    return RunSpec(run_id=new_run_id("priv"), attempt=1, image=image, capability="run", input={"x": 1},
                   limits=limits, network=network, executor_id="pytest")


# ---------------------------------------------------------------- containment essentials


async def test_a_normal_run_succeeds(priv: PrivilegedJail, misbehave_image: str,
                                     misbehave_manifest: Manifest) -> None:
    result, outcome = await run_agent(priv, misbehave_image, misbehave_manifest, "ok", {"n": 1})  # type: ignore[arg-type]
    assert outcome.state == "SUCCEEDED", (outcome, result.logs[-800:], result.detail)
    assert outcome.output == {"ok": True, "echo": {"n": 1}}


async def test_memory_hog_is_oom_killed_from_the_cgroup_counter(
        priv: PrivilegedJail, misbehave_image: str, misbehave_manifest: Manifest) -> None:
    result, outcome = await run_agent(priv, misbehave_image, misbehave_manifest, "hog_memory", {"mib": 512})  # type: ignore[arg-type]
    assert result.termination is Termination.OOM_KILLED, result
    assert (outcome.state, outcome.reason) == ("OOM_KILLED", "memory limit of 64 MiB exceeded")
    assert outcome.peak_memory_bytes is not None and 63 << 20 <= outcome.peak_memory_bytes <= 64 << 20


async def test_self_sigkill_is_not_oom(priv: PrivilegedJail, misbehave_image: str,
                                       misbehave_manifest: Manifest) -> None:
    result, outcome = await run_agent(priv, misbehave_image, misbehave_manifest, "kill_self", {"mib": 16})  # type: ignore[arg-type]
    assert b"MemoryError" in result.logs
    assert (outcome.state, outcome.reason) == ("FAILED", "agent exited with code 137")


async def test_spin_is_killed_at_the_deadline(priv: PrivilegedJail, misbehave_image: str,
                                              misbehave_manifest: Manifest) -> None:
    limits = Limits(memory_mib=64, timeout_seconds=3, pids=32, cpus=1)
    result, outcome = await run_agent(priv, misbehave_image, misbehave_manifest, "spin", limits=limits)  # type: ignore[arg-type]
    assert (outcome.state, outcome.reason) == ("TIMED_OUT", "timed out after 3s")
    # The contract: the supervisor kills the whole cgroup at the 3 s limit (1 s for the kill
    # and the report); podman's own start-up is outside this duration.
    assert 3 <= result.duration_seconds < 3 + 1


async def test_fork_bomb_is_stopped_by_the_pids_limit(priv: PrivilegedJail, misbehave_image: str,
                                                      misbehave_manifest: Manifest) -> None:
    _, outcome = await run_agent(priv, misbehave_image, misbehave_manifest, "fork_bomb", {"seconds": 1.5})  # type: ignore[arg-type]
    assert outcome.state == "SUCCEEDED", outcome
    assert outcome.output["forked"] == SMALL.pids - 1, outcome.output
    assert outcome.output["refused"] > 0


async def test_no_network_though_the_container_has_one(
        priv: PrivilegedJail, misbehave_image: str, misbehave_manifest: Manifest,
        host_listener: tuple[int, list[int]]) -> None:
    port, accepted = host_listener
    before = accepted[0]
    # The container is on podman's bridge (as a Dagger exec is on the engine's network): from
    # there the host's addresses answer; from the jail nothing does.
    targets = [f"{a}:{port}" for a in host_addresses()]
    _, outcome = await run_agent(priv, misbehave_image, misbehave_manifest, "connect", {"targets": targets})  # type: ignore[arg-type]
    assert outcome.state == "SUCCEEDED", outcome
    assert all(r.startswith("error") for r in outcome.output["results"].values()), outcome.output
    assert accepted[0] == before


async def test_egress_when_granted_goes_through_slirp4netns(
        priv: PrivilegedJail, misbehave_image: str, misbehave_manifest: Manifest,
        host_listener: tuple[int, list[int]]) -> None:
    port, accepted = host_listener
    before = accepted[0]
    eth = [a for a in host_addresses() if not a.startswith("127.")]
    assert eth, "this host has no non-loopback address"
    _, outcome = await run_agent(priv, misbehave_image, misbehave_manifest, "connect",  # type: ignore[arg-type]
                                 {"targets": [f"{eth[0]}:{port}"]}, network=True)
    assert outcome.state == "SUCCEEDED", outcome
    assert list(outcome.output["results"].values()) == ["connected"], outcome.output
    assert accepted[0] > before


async def test_the_root_is_read_only_even_where_the_sandbox_user_owns_the_path(
        priv: PrivilegedJail, misbehave_image: str, misbehave_manifest: Manifest) -> None:
    _, outcome = await run_agent(priv, misbehave_image, misbehave_manifest, "write_outside")  # type: ignore[arg-type]
    assert outcome.state == "SUCCEEDED", outcome
    results, owners = outcome.output["results"], outcome.output["owners"]
    assert [p for p, r in results.items() if r == "written"] == [], results
    for path in ("/srv/sandbox-owned/existing.txt", "/srv/sandbox-owned/new-file"):
        assert owners[path] == 65534 and results[path] == "error: Read-only file system"


# ---------------------------------------------------------------- a hostile image


def _marker_names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_the_markers_work_when_an_image_program_runs_as_root(
        bundle: Bundle, hostile_image: str, markers: Path) -> None:
    # Controls: what the jail must avoid does leave markers. The image's shell run as root, or
    # the bundle's bwrap run through the bundle's loader without the shield (the loader then
    # reads the image's /etc/ld.so.preload, naming its preload library and its libc), runs the
    # image's code as root.
    base = ["podman", *GLOBAL_OPTIONS, "run", "--rm", "--privileged", "--user", "0:0", *ULIMITS,
            "-v", f"{markers}:/markers",
            "-v", f"{bundle.path}:{BUNDLE_MOUNT}:ro"]
    subprocess.run([*base, "--entrypoint", "/bin/sh", hostile_image], capture_output=True)
    subprocess.run([*base, "--entrypoint", f"{BUNDLE_MOUNT}/{bundle.loader}", hostile_image,
                    "--library-path", f"{BUNDLE_MOUNT}/lib", f"{BUNDLE_MOUNT}/bwrap", "--version"],
                   capture_output=True)
    assert _marker_names(markers) == ["libc", "preload", "sh"]


@pytest.mark.parametrize("network", [False, True], ids=["no-network", "egress"])
async def test_a_hostile_image_never_runs_privileged_and_its_static_agent_runs(
        bundle: Bundle, hostile_image: str, markers: Path, network: bool) -> None:
    # No shell, no Python, a libc and loader that would leave markers if anything privileged
    # loaded them, an /etc/ld.so.preload and LD_PRELOAD naming them: the agent (static) runs
    # as uid 65534 and nothing of the image ran as root.
    jail = PrivilegedJail(bundle, extra_podman=["-v", f"{markers}:/markers"])
    result = await jail.run(_spec(hostile_image, network=network), asyncio.Event())
    assert result.termination is Termination.EXITED and result.exit_code == 0, (result.detail, result.logs)
    import json

    out = json.loads(result.output or b"{}")["output"]
    assert (out["uid"], out["euid"], out["erofs"]) == (65534, 65534, True), out
    assert out["preload"] == "/lib/preload.so"  # the image's environment reached only the agent
    assert _marker_names(markers) == []


def test_image_config_is_read_by_the_executor_not_in_the_container(hostile_image: str) -> None:
    from tests.executor.jail_container import image_config

    config = image_config(hostile_image)
    assert (config.argv, config.workdir) == (("/agent",), "/")
    assert dict(config.env)["LD_PRELOAD"] == "/lib/preload.so"  # given to bwrap's --setenv only


# ---------------------------------------------------------------- the dagger/ module's bundle


def test_the_module_bundle_script_builds_a_bundle_that_runs_the_jail(
        tmp_path: Path, hostile_image: str, markers: Path) -> None:
    # The dagger/ module builds its bundle in the engine with BUILD_SCRIPT (it has no executor
    # host to take one from). The same script, run here, gives the host bundle's layout, a
    # static supervisor, and a bundle that runs a hostile image's agent with nothing of the
    # image run as root.
    from executor.runtime.dagger_pipeline import BUILD_SCRIPT
    from executor.runtime.jail_core.bundle import is_static

    out = tmp_path / "bundle"
    r = subprocess.run(["sh", "-c", BUILD_SCRIPT], capture_output=True, text=True, timeout=300,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "BUNDLE_OUT": str(out),
                            "BUNDLE_SRC": str(REPO_JAIL_CORE)})
    assert r.returncode == 0, r.stderr
    assert is_static(out / "airlock-jail")
    (loader,) = [p.name for p in (out / "lib").iterdir() if p.name.startswith("ld-linux")]
    jail = PrivilegedJail(Bundle(out, f"lib/{loader}"), extra_podman=["-v", f"{markers}:/markers"])
    result = asyncio.run(jail.run(_spec(hostile_image), asyncio.Event()))
    assert result.termination is Termination.EXITED and result.exit_code == 0, (result.detail, result.logs)
    import json

    out_doc = json.loads(result.output or b"{}")["output"]
    assert (out_doc["uid"], out_doc["erofs"]) == (65534, True), out_doc
    assert _marker_names(markers) == []
