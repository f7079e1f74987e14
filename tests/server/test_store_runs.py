"""The runs repository's executor operations (lease, record an outcome, re-queue, fail as
LOST): each changes the state through the one transition, writes the run's event, and leaves
the lease and the attempt's result as the worker relies on (real database, both dialects)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server.domain.errors import IllegalTransition
from server.domain.models import AttemptResult
from server.domain.states import RunState
from tests.conftest import Plane, manifest_text
from tests.helpers.api import register, stored_events, submit


async def _queued_run(plane: Plane) -> str:
    await register(plane.admin, manifest_text())
    alice = await plane.key("alice", "submitter")
    return (await submit(alice)).run.id


async def test_lease_then_outcome_stores_the_result_and_releases_the_lease(plane: Plane) -> None:
    store = plane.cp.store
    run_id = await _queued_run(plane)
    now = plane.cp.clock()
    async with store.transaction() as tx:
        assert await tx.runs.count(RunState.QUEUED) == 1
        [run] = await tx.runs.next_queued(10)
        leased = await tx.runs.lease(run, executor_id="ex-1", until=now + timedelta(seconds=30),
                                     now=now)
    assert leased.state is RunState.RUNNING and leased.attempt == 1
    assert (leased.lease_owner, leased.executor_id) == ("ex-1", "ex-1")
    assert leased.lease_expires_at == now + timedelta(seconds=30) and leased.started_at == now
    result = AttemptResult(output_json=None, error_code="BAD_INPUT", error_message="no",
                           exit_code=3, logs=b"line\n", logs_truncated=True,
                           peak_memory_bytes=1024, duration_seconds=0.5)
    async with store.transaction() as tx:
        current = await tx.runs.get(run_id, lock=True)
        assert current == leased  # what lease returned is what was stored
        with pytest.raises(ValueError, match="not a run outcome"):
            await tx.runs.record_outcome(current, RunState.QUEUED, reason="x", result=result,
                                         actor="ex-1", now=now)
        done = await tx.runs.record_outcome(current, RunState.FAILED, reason="no",
                                            result=result, actor="ex-1", now=now)
    async with store.read() as tx:
        stored = await tx.runs.result(run_id)
        assert await tx.runs.count(RunState.QUEUED) == 0
    assert stored is not None and stored.run == done
    assert done.state is RunState.FAILED and done.finished_at == now
    assert done.lease_owner is None and done.lease_expires_at is None
    assert (done.exit_code, done.peak_memory_bytes, done.duration_seconds) == (3, 1024, 0.5)
    assert (stored.output_json, stored.error_code, stored.error_message) == (None, "BAD_INPUT",
                                                                              "no")
    assert (stored.logs, stored.logs_truncated) == (b"line\n", True)
    events = await stored_events(store, run_id)
    assert [(e.seq, e.state, e.attempt) for e in events] == [
        (1, RunState.QUEUED, 0), (2, RunState.RUNNING, 1), (3, RunState.FAILED, 1)]
    assert events[1].reason == "running on ex-1 (attempt 1)" and events[2].actor == "ex-1"


async def test_requeue_then_fail_lost(plane: Plane) -> None:
    store = plane.cp.store
    run_id = await _queued_run(plane)
    now = plane.cp.clock()
    async with store.transaction() as tx:
        run = await tx.runs.get(run_id, lock=True)
        assert run is not None
        run = await tx.runs.lease(run, executor_id="ex-1", until=now, now=now)
        requeued = await tx.runs.requeue(run, reason="lease lost", actor="ex-2", now=now,
                                         result=AttemptResult(logs=b"partial"))
    assert requeued.state is RunState.QUEUED and requeued.attempt == 1
    assert requeued.lease_owner is None and requeued.finished_at is None
    async with store.transaction() as tx:
        # Re-queued is not RUNNING: no outcome may be recorded for it any more.
        with pytest.raises(IllegalTransition):
            await tx.runs.fail_lost(requeued, reason="LOST", actor="ex-2", now=now)
    async with store.transaction() as tx:
        run = await tx.runs.get(run_id, lock=True)
        assert run is not None
        again = await tx.runs.lease(run, executor_id="ex-2", until=now, now=now)
        assert again.attempt == 2
        assert await tx.runs.lapsed(now + timedelta(seconds=1)) == [again]
        lost = await tx.runs.fail_lost(again, reason="LOST: lease lost on ex-2", actor="ex-3",
                                       now=now)
    assert lost.state is RunState.FAILED and lost.lease_owner is None
    async with store.read() as tx:
        stored = await tx.runs.result(run_id)
    assert stored is not None and stored.error_code == "LOST"
    assert stored.logs == b"partial"  # the interrupted attempt's logs, kept from the re-queue
    events = await stored_events(store, run_id)
    assert [e.state for e in events] == [RunState.QUEUED, RunState.RUNNING, RunState.QUEUED,
                                         RunState.RUNNING, RunState.FAILED]
