"""Executors die and scale out: kill -9 mid-run, and two executor processes sharing 200 runs."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pytest

from airlock.v1 import run_service_pb2 as rs
from executor.runtime.podman import PodmanRuntime
from server.domain.states import RunState
from tests.conftest import Plane
from tests.e2e.conftest import MISBEHAVE, SAMPLES, register, running_executor, wait_terminal
from tests.helpers.processes import airlock_process, executor_env
from tests.helpers.wait import assert_eventually

pytestmark = [pytest.mark.podman, pytest.mark.postgres, pytest.mark.slow]


@contextmanager
def executor_process(url: str, executor_id: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``airlock executor`` process (its own interpreter, store and LISTEN)."""
    with airlock_process("executor", executor_env(url, executor_id, **env)) as proc:
        yield proc


async def containers(run_ids: Iterable[str]) -> list[str]:
    """This test's sandboxes (containers of other tests or sessions on the host do not count)."""
    prefixes = tuple(f"airlock-{i}-" for i in run_ids)
    p = await asyncio.create_subprocess_exec(
        "podman", "ps", "-a", "--format", "{{.Names}}", stdout=asyncio.subprocess.PIPE)
    out, _ = await p.communicate()
    return [n for n in out.decode().split() if n.startswith(prefixes)]


async def run_events(plane: Plane, run_id: str) -> list:
    async with plane.cp.store.read() as tx:
        return await tx.events.since(run_id, 1)


async def test_kill9_executor_mid_run_another_finishes_every_run_once(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object
) -> None:
    await register(pg_plane.admin, MISBEHAVE, **{"risk: critical": "risk: low"})
    alice = await pg_plane.key("alice", "submitter")
    ids = []
    with executor_process(pg_plane.url, "victim", AIRLOCK_SLOTS="3", AIRLOCK_LEASE_SECONDS="3") as victim:
        for _ in range(3):
            sub = await alice.runs.SubmitRun(rs.SubmitRunRequest(
                agent="misbehave", capability="sleep", input_json='{"seconds": 20}',
                limits={"timeout_seconds": 40}), metadata=alice.md)
            ids.append(sub.run.id)

        async def all_running() -> int:
            names = await containers(ids)
            return sum(any(n.startswith(f"airlock-{i}-1") for n in names) for i in ids)

        await assert_eventually(all_running, lambda n: n == 3, timeout=60, what="3 sandboxes up")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    # The victim's sandboxes outlive it (podman keeps them): the survivor must reap them.
    assert len(await containers(ids)) >= 3

    seen: list[set[str]] = []
    watching = True

    async def watch_containers() -> None:
        while watching:
            seen.append(set(await containers(ids)))
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch_containers())  # a sampler, not a synchronisation
    # Short runs now, so the survivor finishes quickly once it has re-queued them.
    async with running_executor(pg_plane.url, podman_runtime, slots=3, lease_seconds=3):
        for run_id in ids:
            await wait_terminal(alice, run_id)
    watching = False
    await watcher

    for run_id in ids:
        events = await run_events(pg_plane, run_id)
        states = [e.state for e in events]
        assert states == [RunState.QUEUED, RunState.RUNNING, RunState.QUEUED, RunState.RUNNING,
                          RunState.SUCCEEDED], (run_id, states)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert "lease lost on victim" in events[2].reason
        assert events[3].attempt == 2
        # Never two attempts of one run at once.
        for snapshot in seen:
            assert not (any(n.startswith(f"airlock-{run_id}-1") for n in snapshot)
                        and any(n.startswith(f"airlock-{run_id}-2") for n in snapshot)), snapshot
    assert await containers(ids) == [], "sandboxes leaked"


async def test_two_executor_processes_share_200_runs_each_executed_once(
    pg_plane: Plane, e2e_ready: object
) -> None:
    await register(pg_plane.admin, SAMPLES / "text-transform")
    alice = await pg_plane.key("alice", "submitter")
    with executor_process(pg_plane.url, "ex-a", AIRLOCK_SLOTS="4"), \
            executor_process(pg_plane.url, "ex-b", AIRLOCK_SLOTS="4"):
        sem = asyncio.Semaphore(20)

        async def submit(i: int) -> str:
            async with sem:
                r = await alice.runs.SubmitRun(rs.SubmitRunRequest(
                    agent="text-transform", capability="uppercase", input_json=f'{{"text": "run {i}"}}'),
                    metadata=alice.md)
                return r.run.id

        ids = await asyncio.gather(*(submit(i) for i in range(200)))

        async def finished() -> int:
            async with pg_plane.cp.store.read() as tx:
                return await tx.runs.count(RunState.SUCCEEDED)

        await assert_eventually(finished, lambda n: n == 200, timeout=600, interval=1,
                                what="200 runs SUCCEEDED")
    by_executor: Counter[str] = Counter()
    for run_id in ids:
        events = await run_events(pg_plane, run_id)
        running = [e for e in events if e.state is RunState.RUNNING]
        assert len(running) == 1, (run_id, [(e.state, e.actor) for e in events])
        assert running[0].attempt == 1
        by_executor[running[0].actor] += 1
    assert sum(by_executor.values()) == 200
    assert set(by_executor) == {"ex-a", "ex-b"}, by_executor
    assert await containers(ids) == []
