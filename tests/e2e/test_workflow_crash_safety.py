"""Workflows across executor processes: kill -9 of the executor running a step, and 50
workflows of 5 steps shared by two executor processes: every step runs exactly once per
attempt, every workflow ends."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter

import pytest

from airlock.v1 import run_service_pb2 as rs
from executor.runtime.podman import PodmanRuntime
from server.domain.states import RunState
from tests.conftest import Plane
from tests.e2e.conftest import MISBEHAVE, SAMPLES, register, running_executor
from tests.e2e.test_crash_safety import containers, executor_process, run_events
from tests.helpers.wait import assert_eventually
from tests.helpers.workflows import (
    TERMINAL,
    get_workflow,
    ref,
    spec,
    state_name,
    step,
    steps_by_name,
    submit_workflow,
    watch_to_end,
)

pytestmark = [pytest.mark.podman, pytest.mark.postgres, pytest.mark.slow]


async def workflow_runs(plane: Plane, workflow_id: str) -> list:
    async with plane.cp.store.read() as tx:
        return [r for r in await tx.runs.find(limit=10_000) if r.workflow_id == workflow_id]


async def test_kill9_of_the_executor_mid_workflow_each_step_once_per_attempt(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object
) -> None:
    await register(pg_plane.admin, MISBEHAVE, **{"risk: critical": "risk: low"})
    alice = await pg_plane.key("alice", "submitter")
    plan = spec(step("slow", "misbehave", "sleep", {"seconds": 6}, limits={"timeout_seconds": 40}),
                step("quick", "misbehave", "ok", {"n": 1}),
                step("last", "misbehave", "ok", {"slept": ref("steps.slow.output.slept")},
                     after=("slow", "quick")))
    w = (await submit_workflow(alice, plan)).workflow
    with executor_process(pg_plane.url, "victim", AIRLOCK_SLOTS="2",
                          AIRLOCK_LEASE_SECONDS="3") as victim:
        slow_run = ""

        async def slow_sandbox() -> int:
            nonlocal slow_run
            slow_run = steps_by_name(await get_workflow(alice, w.id))["slow"].run_id
            return len(await containers([slow_run])) if slow_run else 0

        await assert_eventually(slow_sandbox, lambda n: n == 1, timeout=120, interval=0.2,
                                what="the slow step's sandbox up")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    # The survivor recovers the lapsed lease (reaping the sandbox, re-queueing the step); when
    # the step succeeds, "last" is queued in that same transaction and runs once.
    async with running_executor(pg_plane.url, podman_runtime, slots=2, lease_seconds=3):
        final = (await watch_to_end(alice, w.id))[-1]
    assert state_name(final.state) == "SUCCEEDED", final.reason
    runs = await workflow_runs(pg_plane, w.id)
    assert sorted(r.workflow_step for r in runs) == ["last", "quick", "slow"]  # one run per step
    for r in runs:
        events = await run_events(pg_plane, r.id)
        running = [e for e in events if e.state is RunState.RUNNING]
        # One RUNNING per attempt, attempts numbered without gaps.
        assert [e.attempt for e in running] == list(range(1, r.attempt + 1)), (r.workflow_step, events)
        assert events[-1].state is RunState.SUCCEEDED
    slow = next(r for r in runs if r.workflow_step == "slow")
    assert slow.attempt == 2  # the killed attempt, then the survivor's
    last = next(r for r in runs if r.workflow_step == "last")
    assert last.attempt == 1 and json.loads(last.input_json) == {"slept": 6}
    assert await containers([r.id for r in runs]) == [], "sandboxes leaked"


def five_steps(i: int) -> object:
    """a → (b, c) → d → e, each passing text on by reference."""
    t = "text-transform"
    return spec(
        step("a", t, "uppercase", {"text": f"workflow {i}"}),
        step("b", t, "reverse", {"text": ref("steps.a.output.text")}, after=("a",)),
        step("c", t, "uppercase", {"text": ref("steps.a.output.text")}, after=("a",)),
        step("d", t, "reverse", {"text": ref("steps.b.output.text")}, after=("b", "c")),
        step("e", t, "uppercase", {"text": ref("steps.d.output.text")}, after=("d",)),
        name=f"five-{i}")


async def test_fifty_workflows_of_five_steps_on_two_executor_processes(
    pg_plane: Plane, e2e_ready: object
) -> None:
    await register(pg_plane.admin, SAMPLES / "text-transform")
    alice = await pg_plane.key("alice", "submitter")
    with executor_process(pg_plane.url, "ex-a", AIRLOCK_SLOTS="4"), \
            executor_process(pg_plane.url, "ex-b", AIRLOCK_SLOTS="4"):
        sem = asyncio.Semaphore(10)

        async def submit(i: int) -> str:
            async with sem:
                return str((await submit_workflow(alice, five_steps(i))).workflow.id)  # type: ignore[arg-type]

        ids = await asyncio.gather(*(submit(i) for i in range(50)))

        async def ended() -> int:
            async with pg_plane.cp.store.read() as tx:
                return sum(1 for w in await tx.workflows.find(limit=100) if w.state.terminal)

        await assert_eventually(ended, lambda n: n == 50, timeout=900, interval=1,
                                what="50 workflows ended")
    by_executor: Counter[str] = Counter()
    for i, wid in enumerate(ids):
        w = await get_workflow(alice, wid)
        assert w.state in TERMINAL and state_name(w.state) == "SUCCEEDED", (wid, w.reason)
        assert json.loads(steps_by_name(w)["e"].output_json) == {"text": f"WORKFLOW {i}"}
        runs = await workflow_runs(pg_plane, wid)
        assert sorted(r.workflow_step for r in runs) == ["a", "b", "c", "d", "e"], wid
        for r in runs:
            events = await run_events(pg_plane, r.id)
            running = [e for e in events if e.state is RunState.RUNNING]
            assert len(running) == 1 and running[0].attempt == 1, (wid, r.workflow_step, events)
            by_executor[running[0].actor] += 1
    assert sum(by_executor.values()) == 250
    assert set(by_executor) == {"ex-a", "ex-b"}, by_executor
    listed = await alice.runs.ListRuns(rs.ListRunsRequest(page_size=200), metadata=alice.md)
    assert all(r.workflow_id for r in listed.runs)
