"""A killed executor's sandboxes: they end by their deadline with no executor alive (conmon's
``--timeout`` backstop), the executor shows as lost, and the next executor starting on the host
reaps what is left (containers, tmpfs work dirs, cgroups) at once, not when leases lapse."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from airlock.v1 import admin_service_pb2 as adm
from airlock.v1 import run_service_pb2 as rs
from executor.runtime.podman import DEADLINE_GRACE_SECONDS, _cgroup_mounts
from tests.conftest import start_plane
from tests.e2e.conftest import MISBEHAVE, register
from tests.helpers.processes import airlock_process, executor_env
from tests.helpers.wait import assert_eventually

pytestmark = [pytest.mark.podman, pytest.mark.postgres, pytest.mark.slow]

WORK_ROOT = Path("/run/airlock")  # the executors' default AIRLOCK_PODMAN_WORK_ROOT
# How often the test looks at podman, and how long one `podman inspect` may take on a busy
# 2-core machine: the only slack added to the contract's bound below.
POLL_SLACK_SECONDS = 3.0


@contextmanager
def executor_process(url: str, executor_id: str, log: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """The real ``airlock executor`` (own interpreter, store, LISTEN), logging to ``log``."""
    with log.open("ab") as sink, airlock_process(
            "executor", executor_env(url, executor_id, AIRLOCK_LOG_FORMAT="text", **env),
            stdout=sink, stderr=sink) as proc:
        yield proc


async def container_state(name: str) -> dict | None:
    """podman's State of container ``name``, or None when there is no such container."""
    p = await asyncio.create_subprocess_exec(
        "podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "container", "inspect",
        "--format", "{{json .State}}", name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await p.communicate()
    return json.loads(out) if p.returncode == 0 and out.strip() else None


def tail(log: Path) -> str:
    return log.read_text()[-3000:]


def cgroup_dirs(name: str) -> list[Path]:
    return [d for root in _cgroup_mounts() if (d := root / "airlock" / name).exists()]


async def spinning_run(plane, log: Path, executor_id: str, timeout: float) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    await register(plane.admin, MISBEHAVE, **{"risk: critical": "risk: low"})
    alice = await plane.key("alice", "submitter")
    sub = await alice.runs.SubmitRun(rs.SubmitRunRequest(
        agent="misbehave", capability="spin", input_json="{}",
        limits={"timeout_seconds": timeout}), metadata=alice.md)
    return sub.run.id, f"airlock-{sub.run.id}-1"


async def wait_running(name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    async def probe() -> bool:
        assert proc.poll() is None, tail(log)
        state = await container_state(name)
        return bool(state and state.get("Running"))

    await assert_eventually(probe, bool, timeout=120, interval=0.2, what=f"{name} running")


async def test_killed_executors_sandbox_ends_by_its_deadline_and_it_shows_as_lost(
    pg_url: str, e2e_ready: object, tmp_path: Path
) -> None:
    plane = await start_plane(pg_url, lease_seconds=3)
    ex_id = f"doomed-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "executor.log"
    timeout = 4.0
    try:
        run_id, name = await spinning_run(plane, log, ex_id, timeout)
        with executor_process(pg_url, ex_id, log) as proc:
            await wait_running(name, proc, log)
            up = time.monotonic()  # the container started before this instant
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        # No executor is alive on this host for this run now. The contract (podman.py,
        # DEADLINE_GRACE_SECONDS): the sandbox ends at most timeout + grace after it started.
        bound = timeout + DEADLINE_GRACE_SECONDS + POLL_SLACK_SECONDS

        async def ended() -> bool:
            state = await container_state(name)
            return state is None or not state.get("Running")

        await assert_eventually(ended, bool, timeout=bound + 30, interval=0.2,
                                what=f"{name} ended with no executor alive")
        took = time.monotonic() - up
        assert took <= bound, f"the sandbox ran {took:.1f}s after start, bound {bound}s"
        state = await container_state(name)
        assert state is None or state.get("Status") in ("exited", "stopped"), state

        admin = plane.admin

        async def fleet() -> dict[str, adm.Executor]:
            resp = await admin.admin.ListExecutors(adm.ListExecutorsRequest(), metadata=admin.md)
            return {e.id: e for e in resp.executors}

        got = await assert_eventually(
            fleet, lambda f: ex_id in f and f[ex_id].state == adm.EXECUTOR_STATE_LOST,
            timeout=30, interval=0.5, what="the killed executor listed as lost")
        assert got[ex_id].slots_in_use == 0 and not got[ex_id].healthy
        assert run_id  # its run is re-queued by the next executor once the lease lapses
    finally:
        await plane.close()


async def test_an_executor_starting_reaps_a_dead_executors_leftovers_at_once(
    pg_url: str, e2e_ready: object, tmp_path: Path
) -> None:
    plane = await start_plane(pg_url)
    dead_id, next_id = f"dead-{uuid.uuid4().hex[:8]}", f"next-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "executors.log"
    # Long lease and timeout: neither lease recovery nor the deadline can explain the removal.
    long = {"AIRLOCK_LEASE_SECONDS": "600"}
    try:
        _, name = await spinning_run(plane, log, dead_id, timeout=60)
        with executor_process(pg_url, dead_id, log, **long) as proc:
            await wait_running(name, proc, log)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        state = await container_state(name)
        assert state and state.get("Running"), state  # it outlived its executor
        assert (WORK_ROOT / name).exists() and cgroup_dirs(name)

        with executor_process(pg_url, next_id, log, **long) as survivor:
            async def leftovers() -> tuple[bool, bool, list[Path]]:
                assert survivor.poll() is None, tail(log)
                return (await container_state(name) is not None, (WORK_ROOT / name).exists(),
                        cgroup_dirs(name))

            await assert_eventually(leftovers, lambda v: v == (False, False, []), timeout=45,
                                    interval=0.3, what="dead executor's leftovers reaped")
        text = log.read_text()
        assert f"reaped leftovers of dead executor {dead_id}" in text, text[-3000:]
    finally:
        await plane.close()
