"""Containment: each misbehaviour runs in a real container next to a well-behaved run.

Every test asserts the misbehaving run's final state *and* that an ``ok`` run started at the
same time still succeeds, i.e. one bad agent cannot take the executor or its neighbours down.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agents.limits import Limits
from agents.manifest import Manifest
from executor.results import Outcome
from executor.runtime.base import SandboxResult, Termination
from executor.runtime.podman import PodmanRuntime
from tests.executor.conftest import SMALL, new_run_id, run_agent
from tests.executor.conftest import containers as _containers

pytestmark = pytest.mark.podman

T = TypeVar("T")


async def alongside_ok(
    runtime: PodmanRuntime, image: str, manifest: Manifest, bad: Awaitable[T]
) -> T:
    """Await ``bad`` while an ``ok`` run goes on in parallel; the ok run must succeed."""
    ok = asyncio.create_task(run_agent(runtime, image, manifest, "ok", {"n": 1}, limits=SMALL))
    res = await bad
    _, ok_outcome = await ok
    assert ok_outcome.state == "SUCCEEDED", f"neighbour run failed: {ok_outcome}"
    return res


async def _bad(
    runtime: PodmanRuntime,
    image: str,
    manifest: Manifest,
    capability: str,
    payload: Any = None,
    limits: Limits = SMALL,
    **kw: Any,
) -> tuple[SandboxResult, Outcome, float]:
    t0 = time.monotonic()
    result, outcome = await alongside_ok(
        runtime,
        image,
        manifest,
        run_agent(runtime, image, manifest, capability, payload, limits=limits, **kw),
    )
    return result, outcome, time.monotonic() - t0


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
async def host_listener() -> AsyncIterator[int]:
    """A TCP server on every host address; a container reaching it proves egress."""
    accepted = 0

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        w.close()

    server = await asyncio.start_server(on_conn, "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


def _podman_gateway() -> str | None:
    r = subprocess.run(
        ["podman", "network", "inspect", "podman", "--format", "{{json .}}"],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        return None
    nets = json.loads(r.stdout)
    net = nets[0] if isinstance(nets, list) else nets
    subnets = net.get("subnets") or []
    return subnets[0].get("gateway") if subnets else None


def _host_addresses() -> list[str]:
    addrs = {"127.0.0.1"}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent; picks the outbound address
            addrs.add(s.getsockname()[0])
        except OSError:
            pass
    return sorted(addrs)


# ---------------------------------------------------------------------------------------------


async def test_memory_hog_is_oom_killed(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    result, outcome, _ = await _bad(
        podman_runtime, misbehave_image, misbehave_manifest, "hog_memory", {"mib": 512}
    )
    assert result.termination is Termination.OOM_KILLED, result
    assert (outcome.state, outcome.reason) == ("OOM_KILLED", "memory limit of 64 MiB exceeded")
    assert outcome.peak_memory_bytes is not None and outcome.peak_memory_bytes >= 63 << 20


async def test_spin_ignoring_sigterm_is_killed_at_the_deadline(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    limits = Limits(memory_mib=64, timeout_seconds=3, pids=32, cpus=1)
    result, outcome, elapsed = await _bad(
        podman_runtime, misbehave_image, misbehave_manifest, "spin", limits=limits
    )
    assert (outcome.state, outcome.reason) == ("TIMED_OUT", "timed out after 3s")
    assert result.duration_seconds < 3 + 1
    assert elapsed < 3 + 1, f"run() took {elapsed:.2f}s for a 3 s limit"


async def test_fork_bomb_is_stopped_by_the_pids_limit(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    run_id = new_run_id("fork")
    _, outcome, _ = await _bad(
        podman_runtime,
        misbehave_image,
        misbehave_manifest,
        "fork_bomb",
        {"seconds": 1.5},
        run_id=run_id,
    )
    assert outcome.state == "SUCCEEDED", outcome
    report = outcome.output
    assert 0 < report["forked"] < SMALL.pids  # the cgroup, not the agent, set the ceiling
    assert report["refused"] > 0 and "temporarily unavailable" in report["error"]
    assert _containers(run_id) == []  # and its sleeping children went with it


async def test_no_network_egress_without_permission(
    podman_runtime: PodmanRuntime,
    misbehave_image: str,
    misbehave_manifest: Manifest,
    host_listener: int,
) -> None:
    port = host_listener
    targets = ["1.1.1.1:53", "8.8.8.8:443"] + [f"{a}:{port}" for a in _host_addresses()]
    if gw := _podman_gateway():
        targets.append(f"{gw}:{port}")
    _, outcome, _ = await _bad(
        podman_runtime, misbehave_image, misbehave_manifest, "connect", {"targets": targets}
    )
    assert outcome.state == "SUCCEEDED", outcome
    results = outcome.output["results"]
    assert set(results) == set(targets)
    assert not [t for t, r in results.items() if r == "connected"], results

    # Control: with network granted, the same agent does reach the host listener, so the
    # check above would have seen a connection had there been one.
    if gw:
        _, granted = await run_agent(
            podman_runtime,
            misbehave_image,
            misbehave_manifest,
            "connect",
            {"targets": [f"{gw}:{port}"]},
            network=True,
        )
        assert granted.output["results"] == {f"{gw}:{port}": "connected"}


async def test_writes_outside_the_output_dir_are_refused(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    _, outcome, _ = await _bad(podman_runtime, misbehave_image, misbehave_manifest, "write_outside")
    assert outcome.state == "SUCCEEDED", outcome
    results = outcome.output["results"]
    assert results, "nothing was tried"
    written = {p: r for p, r in results.items() if r == "written"}
    assert written == {}, written
    refusals = ("Read-only file system", "Permission denied", "No such file or directory")
    assert all(r.removeprefix("error: ") in refusals for r in results.values()), results


async def test_gigabytes_of_stdout_keep_logs_capped_and_executor_memory_flat(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    limits = Limits(memory_mib=64, timeout_seconds=30, pids=32, log_kib=64)
    baseline = peak = _rss_bytes()
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, _rss_bytes())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        result, outcome, _ = await _bad(
            podman_runtime,
            misbehave_image,
            misbehave_manifest,
            "flood_stdout",
            {"mib": 2048},
            limits=limits,
        )
    finally:
        done = True
        await sampler
    assert outcome.state == "SUCCEEDED", outcome
    assert outcome.output == {"written_mib": 2048}
    assert result.logs_truncated and len(result.logs) == 64 * 1024
    assert peak - baseline < 100 << 20, f"executor RSS grew by {(peak - baseline) >> 20} MiB"


async def test_orphaned_child_does_not_outlive_the_run(
    podman_runtime: PodmanRuntime, misbehave_image: str, misbehave_manifest: Manifest
) -> None:
    run_id = new_run_id("orphan")
    _, outcome, elapsed = await _bad(
        podman_runtime, misbehave_image, misbehave_manifest, "orphan", run_id=run_id
    )
    assert outcome.state == "SUCCEEDED", outcome
    assert elapsed < 5  # the run ended when its main process did, not at the timeout
    assert _containers(run_id) == []
    sleepers = [
        pid
        for pid in os.listdir("/proc")
        if pid.isdigit() and _proc_uid(pid) == 65534 and b"/app/main.py" in _cmdline(pid)
    ]
    assert sleepers == []


def _proc_uid(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
