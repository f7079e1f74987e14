"""Usage measured by the sandbox, checked against known work, on every runtime here.

The ``burner`` agent holds 100 MiB (every page touched), burns 2 s of CPU on one thread
(timed by its own ``time.process_time()``), logs 64 KiB to stderr and pads its output with
16 KiB. Tolerances, and why:

- CPU: at least the 2.0 s the agent itself counted (the cgroup's counter and the process's
  CPU clock are the same scheduler figure, and the cgroup also holds every other process of the
  run), at most 0.5 s more: the interpreter's start and imports, touching 100 MiB of pages and
  the sandbox's own helpers (init, bubblewrap) measured 0.02-0.05 s here; contention stretches
  wall time, not CPU time, so ten times that still fits on a loaded machine.
- Peak memory: at least the 100 MiB held, at most 100 + 32 MiB: the interpreter and its
  modules add about 6 MiB here (106 MiB measured on all three runtimes).
- Logs: exactly the 64 KiB written (nothing else of the run writes to its stdout/stderr).
- Output: exactly the size of the output file the runtime read back.
- Wall time: at least the CPU time of one thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agents.build import build_image
from agents.limits import Limits
from agents.manifest import load_manifest
from executor.runtime.base import SandboxRuntime
from executor.runtime.jail import JailRuntime
from executor.runtime.podman import PodmanRuntime
from executor.runtime.registry import resolve_runtime
from tests.conftest import REPO
from tests.executor import jail_support
from tests.executor.conftest import run_agent
from tests.helpers import privileged_jail

pytestmark = pytest.mark.podman
jail_runtime = jail_support.jail_runtime  # fixture

BURNER = REPO / "tests" / "agents" / "burner"
MiB = 1 << 20
WORK = {"mib": 100, "cpu_seconds": 2.0, "log_kib": 64, "pad_kib": 16}
LIMITS = Limits(memory_mib=256, timeout_seconds=40, pids=32, cpus=1, output_kib=64, log_kib=256)
CPU_SLACK = 0.5
MEMORY_SLACK = 32 * MiB


@pytest.fixture(scope="module")
async def burner_image(base_image: str) -> str:
    return await asyncio.to_thread(build_image, BURNER, base_image=base_image)


@pytest.fixture(params=["jail", "privileged-container", "podman"])
async def runtime(request: pytest.FixtureRequest, podman_runtime: PodmanRuntime,
                  jail_runtime: JailRuntime) -> AsyncIterator[SandboxRuntime]:
    jail = jail_runtime
    if request.param == "podman":
        yield podman_runtime
        return
    if request.param == "jail":
        yield jail
        return
    with pytest.MonkeyPatch.context() as mp:  # the Dagger exec's stand-in
        name = privileged_jail.register(mp)
        yield await resolve_runtime(name, bundle_dir=jail.work_root / "bundle")


async def test_known_work_is_recorded_within_tolerance(runtime: SandboxRuntime, burner_image: str) -> None:
    result, outcome = await run_agent(runtime, burner_image, load_manifest(BURNER), "burn", WORK,
                                      limits=LIMITS)  # type: ignore[arg-type]
    assert outcome.succeeded, (outcome.reason, result.logs[-500:])
    own_cpu = outcome.output["cpu_seconds"]
    print(f"measured on {runtime.name}: cpu {result.cpu_seconds}s (agent's own {own_cpu:.3f}s), "
          f"peak {result.peak_memory_bytes} B, logs {result.log_bytes} B, "
          f"output {result.output_bytes} B, wall {result.duration_seconds:.2f}s")
    assert own_cpu >= WORK["cpu_seconds"]

    assert result.cpu_seconds is not None, "no CPU time measured"
    assert own_cpu <= result.cpu_seconds <= WORK["cpu_seconds"] + CPU_SLACK, result.cpu_seconds
    assert result.peak_memory_bytes is not None
    assert 100 * MiB <= result.peak_memory_bytes <= 100 * MiB + MEMORY_SLACK, result.peak_memory_bytes
    assert result.log_bytes == WORK["log_kib"] * 1024
    assert result.output is not None and not result.output_truncated
    assert result.output_bytes == len(result.output) > WORK["pad_kib"] * 1024
    assert result.duration_seconds >= own_cpu
    # What the executor records is what was measured.
    assert (outcome.cpu_seconds, outcome.output_bytes, outcome.log_bytes) == (
        result.cpu_seconds, result.output_bytes, result.log_bytes)


async def test_idle_run_uses_little_cpu(runtime: SandboxRuntime, burner_image: str) -> None:
    """The counter is the run's own: a run that burns nothing is not charged another's CPU."""
    result, outcome = await run_agent(runtime, burner_image, load_manifest(BURNER), "burn", {},
                                      limits=LIMITS)  # type: ignore[arg-type]
    assert outcome.succeeded, outcome.reason
    assert result.cpu_seconds is not None and result.cpu_seconds < CPU_SLACK
    assert result.log_bytes == 0
