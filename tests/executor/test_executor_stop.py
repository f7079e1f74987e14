"""Executor.stop() leaves no task behind: a run that ignores its stop is cancelled, not
abandoned (an abandoned task is destroyed while pending, with the database connection it held).

The runtime here is a TEST DOUBLE that never returns (it ignores the cancel event), standing
for a sandbox technology whose stop hangs; no container is involved in what is tested.
"""

from __future__ import annotations

import asyncio

import pytest

from executor import worker
from executor.runtime.base import RunSpec, SandboxResult
from executor.settings import ExecutorSettings
from executor.worker import Executor
from server.domain.states import RunState
from tests.conftest import Plane, manifest_text
from tests.helpers.api import register, submit
from tests.helpers.wait import assert_eventually


class HangingRuntime:
    """A test double whose runs never end, whatever they are told."""

    name = "hanging"
    network_pool: bool | None = None

    async def check(self) -> None:
        return None

    async def run(self, spec: RunSpec, cancel: asyncio.Event) -> SandboxResult:
        await asyncio.Event().wait()  # ignores ``cancel``
        raise AssertionError("unreachable")

    async def reap(self, run_id: str) -> int:
        return 0


async def test_stop_cancels_a_run_that_ignores_it(plane: Plane, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "RUN_STOP_SECONDS", 0.2)
    await register(plane.admin, manifest_text("echo"))
    run = (await submit(plane.admin, "echo")).run
    settings = ExecutorSettings(database_url=plane.url, slots=1, grace_seconds=0, poll_seconds=0.2)
    ex = Executor(settings, plane.cp.store, HangingRuntime())  # type: ignore[arg-type]
    await ex.start()

    async def state() -> RunState:
        async with plane.cp.store.read() as tx:
            got = await tx.runs.get(run.id)
        assert got is not None
        return got.state

    await assert_eventually(state, lambda s: s is RunState.RUNNING, what="the run leased")
    task = ex.active[run.id].task
    assert task is not None
    await ex.stop()
    assert task.done() and task.cancelled(), "stop() left the run's task pending"
