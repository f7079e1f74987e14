"""Runs really run: gRPC submission, real PostgreSQL, a real executor, real podman containers."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import run_service_pb2 as rs
from executor.runtime.podman import KILL_GRACE_SECONDS, PodmanRuntime
from tests.conftest import Plane
from tests.e2e.conftest import MISBEHAVE, SAMPLES, register, running_executor, state_name, wait_terminal
from tests.helpers.wait import assert_eventually

pytestmark = [pytest.mark.podman, pytest.mark.postgres]


async def test_low_risk_run_succeeds_with_output_and_logs(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object
) -> None:
    admin = pg_plane.admin
    await register(admin, SAMPLES / "text-transform")
    alice = await pg_plane.key("alice", "submitter")
    async with running_executor(pg_plane.url, podman_runtime):
        sub = await alice.runs.SubmitRun(rs.SubmitRunRequest(
            agent="text-transform", capability="uppercase", input_json='{"text": "hello"}'),
            metadata=alice.md)
        events = await wait_terminal(alice, sub.run.id)
    assert [state_name(e.state) for e in events] == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert [e.sequence for e in events] == [1, 2, 3]
    res = await alice.runs.GetRunResult(rs.GetRunResultRequest(run_id=sub.run.id), metadata=alice.md)
    assert json.loads(res.output_json) == {"text": "HELLO"}
    assert res.run.duration_seconds > 0
    assert res.run.attempt == 1


async def test_high_risk_run_waits_for_approval_then_runs(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object
) -> None:
    admin = pg_plane.admin
    await register(admin, SAMPLES / "text-transform", **{"risk: low": "risk: high"})
    await register(admin, SAMPLES / "text-stats")  # low risk: runs without approval
    alice = await pg_plane.key("alice", "submitter")
    bob = await pg_plane.key("bob", "approver")
    async with running_executor(pg_plane.url, podman_runtime):
        sub = await alice.runs.SubmitRun(rs.SubmitRunRequest(
            agent="text-transform", capability="reverse", input_json='{"text": "abc"}'),
            metadata=alice.md)
        assert state_name(sub.run.state) == "PENDING_APPROVAL"
        # An executor is running: a run submitted *after* the pending one is taken and
        # finished, so the executor has looked at the queue, and still left this one alone.
        later = await alice.runs.SubmitRun(rs.SubmitRunRequest(
            agent="text-stats", capability="stats",
            input_json='{"text": "a b"}'), metadata=alice.md)
        assert state_name((await wait_terminal(alice, later.run.id))[-1].state) == "SUCCEEDED"
        got = await alice.runs.GetRun(rs.GetRunRequest(run_id=sub.run.id), metadata=alice.md)
        assert state_name(got.run.state) == "PENDING_APPROVAL"
        await bob.approvals.Approve(aps.ApproveRequest(run_id=sub.run.id, reason="looks fine"),
                                    metadata=bob.md)
        events = await wait_terminal(alice, sub.run.id)
    assert [state_name(e.state) for e in events] == ["PENDING_APPROVAL", "QUEUED", "RUNNING", "SUCCEEDED"]
    res = await alice.runs.GetRunResult(rs.GetRunResultRequest(run_id=sub.run.id), metadata=alice.md)
    assert json.loads(res.output_json) == {"text": "cba"}


async def test_cancel_running_run_stops_container_quickly(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object
) -> None:
    admin = pg_plane.admin
    await register(admin, MISBEHAVE, **{"risk: critical": "risk: low"})
    alice = await pg_plane.key("alice", "submitter")
    async with running_executor(pg_plane.url, podman_runtime):
        sub = await alice.runs.SubmitRun(rs.SubmitRunRequest(
            agent="misbehave", capability="spin", input_json="{}",
            limits={"timeout_seconds": 30}), metadata=alice.md)
        async for msg in alice.runs.WatchRun(rs.WatchRunRequest(run_id=sub.run.id), metadata=alice.md,
                                            timeout=60):
            if state_name(msg.event.state) == "RUNNING":
                break
        await assert_eventually(lambda: _containers(sub.run.id, "running"), bool, timeout=60,
                                what="the spin container running")
        t0 = time.monotonic()
        await alice.runs.CancelRun(rs.CancelRunRequest(run_id=sub.run.id, reason="enough"),
                                   metadata=alice.md)
        events = await wait_terminal(alice, sub.run.id)
        elapsed = time.monotonic() - t0
    # CANCELLED, not TIMED_OUT at 30 s: the cancel ended it. The contract bound: the executor
    # notices within its 1 s cancel poll (or at once, by notification), the kill takes at most
    # KILL_GRACE_SECONDS; plus 1 s for recording and the watch.
    assert state_name(events[-1].state) == "CANCELLED"
    assert elapsed < 1.0 + KILL_GRACE_SECONDS + 1.0, f"cancel took {elapsed:.1f}s"
    assert await _containers(sub.run.id) == [], "container left behind"


async def _containers(run_id: str, status: str | None = None) -> list[str]:
    args = ["podman", "ps", "-aq", "--filter", f"label=airlock.run_id={run_id}"]
    if status:
        args += ["--filter", f"status={status}"]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return out.decode().split()


async def test_fast_heartbeats_never_mistake_claims_or_completions_for_lost_leases(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Heartbeats racing with claims and with outcome recording must not cancel anything."""
    await register(pg_plane.admin, SAMPLES / "text-transform")
    alice = await pg_plane.key("alice", "submitter")
    caplog.set_level("WARNING", logger="executor.worker")
    async with running_executor(pg_plane.url, podman_runtime, slots=3, heartbeat_seconds=0.02):
        subs = await asyncio.gather(*(alice.runs.SubmitRun(rs.SubmitRunRequest(
            agent="text-transform", capability="reverse", input_json=f'{{"text": "r{i}"}}'),
            metadata=alice.md) for i in range(12)))
        finals = [await wait_terminal(alice, s.run.id) for s in subs]
    assert [state_name(events[-1].state) for events in finals] == ["SUCCEEDED"] * 12
    assert "lease lost" not in caplog.text
