"""Workflows really run: gRPC, real PostgreSQL, real executors, real podman sandboxes.

Each step is a run; the steps a finished run unblocks are queued in the transaction that
finished it, so these tests only watch: nothing here nudges a workflow along.
"""

from __future__ import annotations

import json

import grpc
import pytest

from airlock.v1 import run_service_pb2 as rs
from airlock.v1 import workflow_pb2 as wf
from airlock.v1 import workflow_service_pb2 as wfs
from airlock.v1.run_pb2 import RunState
from executor.runtime.podman import PodmanRuntime
from tests.conftest import Plane, start_plane
from tests.e2e.conftest import MISBEHAVE, SAMPLES, register, running_executor
from tests.helpers.api import expect_code
from tests.helpers.clock import ManualClock
from tests.helpers.wait import assert_eventually
from tests.helpers.workflows import (
    approve_workflow,
    get_workflow,
    ref,
    reject_workflow,
    spec,
    state_name,
    step,
    steps_by_name,
    submit_workflow,
    watch_to_end,
)

pytestmark = [pytest.mark.podman, pytest.mark.postgres]
CONTINUE = wf.FAILURE_POLICY_CONTINUE


def diamond() -> wf.WorkflowSpec:
    """A → (B, C) → D; D's input takes B's and C's outputs by reference."""
    return spec(
        step("a", "text-transform", "uppercase", {"text": "hello big world"}),
        step("b", "text-transform", "reverse", {"text": ref("steps.a.output.text")}, after=("a",)),
        step("c", "text-stats", "stats", {"text": ref("steps.a.output.text")}, after=("a",)),
        step("d", "text-transform", "pick",
             {"data": {"reversed": ref("steps.b.output.text"), "words": ref("steps.c.output.words")},
              "path": ".reversed"}, after=("b", "c")),
        name="diamond")


async def test_diamond_runs_b_and_c_together_and_d_gets_both_outputs(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object
) -> None:
    admin = pg_plane.admin
    await register(admin, SAMPLES / "text-transform")
    await register(admin, SAMPLES / "text-stats")
    alice = await pg_plane.key("alice", "submitter")
    async with running_executor(pg_plane.url, podman_runtime, slots=2):
        sub = await submit_workflow(alice, diamond(), idempotency_key="diamond-1")
        assert state_name(sub.workflow.state) == "RUNNING"
        again = await submit_workflow(alice, diamond(), idempotency_key="diamond-1")
        assert again.deduplicated and again.workflow.id == sub.workflow.id
        seen = await watch_to_end(alice, sub.workflow.id)
    final = seen[-1]
    assert state_name(final.state) == "SUCCEEDED", final.reason
    steps = steps_by_name(final)
    assert {n: s.state for n, s in steps.items()} == dict.fromkeys("abcd", "SUCCEEDED")
    runs = {n: (await alice.runs.GetRun(rs.GetRunRequest(run_id=s.run_id), metadata=alice.md)).run
            for n, s in steps.items()}
    for name, run in runs.items():
        assert (run.workflow_id, run.workflow_step) == (final.id, name)
    b, c = runs["b"], runs["c"]
    # B and C were RUNNING at the same time, on the executor's two slots.
    assert b.start_time.ToDatetime() < c.finish_time.ToDatetime()
    assert c.start_time.ToDatetime() < b.finish_time.ToDatetime()
    # D starts only after both ended, with both outputs resolved into its input.
    d = runs["d"]
    assert d.start_time.ToDatetime() >= max(b.finish_time.ToDatetime(), c.finish_time.ToDatetime())
    assert json.loads(d.input_json) == {"data": {"reversed": "DLROW GIB OLLEH", "words": 3},
                                        "path": ".reversed"}
    assert json.loads(steps["d"].output_json) == {"found": True, "value": "DLROW GIB OLLEH"}
    # Each step ran exactly once.
    assert all(r.attempt == 1 for r in runs.values())
    listed = await alice.runs.ListRuns(rs.ListRunsRequest(page_size=50), metadata=alice.md)
    assert sorted(r.workflow_step for r in listed.runs) == ["a", "b", "c", "d"]


async def test_failure_policies_fail_or_continue(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object
) -> None:
    await register(pg_plane.admin, SAMPLES / "text-transform")
    alice = await pg_plane.key("alice", "submitter")
    bad = {"data": {"x": 1}, "path": "!!"}  # the agent fails it with E_PATH
    async with running_executor(pg_plane.url, podman_runtime, slots=2):
        failing = await submit_workflow(alice, spec(
            step("a", "text-transform", "pick", bad),
            step("b", "text-transform", "uppercase", {"text": "x"}, after=("a",))))
        going_on = await submit_workflow(alice, spec(
            step("a", "text-transform", "pick", bad, on_failure=CONTINUE),
            step("b", "text-transform", "uppercase", {"text": "x"}, after=("a",)),
            # A reference to the failed step's output fails this step (its policy: continue).
            step("c", "text-transform", "uppercase", {"text": ref("steps.a.output.value")},
                 after=("a",), on_failure=CONTINUE)))
        f = (await watch_to_end(alice, failing.workflow.id))[-1]
        g = (await watch_to_end(alice, going_on.workflow.id))[-1]
    assert state_name(f.state) == "FAILED"
    assert f.reason.startswith("step a failed")
    assert {s.name: s.state for s in f.steps} == {"a": "FAILED", "b": "SKIPPED"}
    assert state_name(g.state) == "SUCCEEDED"
    assert "failed and continued: a, c" in g.reason
    gs = steps_by_name(g)
    assert (gs["a"].state, gs["b"].state, gs["c"].state) == ("FAILED", "SUCCEEDED", "FAILED")
    assert "did not succeed" in gs["c"].reason and gs["c"].run_id == ""


def gated() -> wf.WorkflowSpec:
    return spec(
        step("fetch", "text-transform", "uppercase", {"text": "release notes"}),
        step("review", gate=True, description="check the text before it is published",
             after=("fetch",)),
        step("publish", "text-transform", "reverse", {"text": ref("steps.fetch.output.text")},
             after=("review",)))


async def _gate_open(client: object, workflow_id: str) -> wf.Workflow:
    async def read() -> wf.Workflow:
        return await get_workflow(client, workflow_id)  # type: ignore[arg-type]

    return await assert_eventually(
        read, lambda w: steps_by_name(w)["review"].state == "PENDING_APPROVAL", timeout=120,
        what="the gate open")


async def test_gate_approved_then_rejected(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object
) -> None:
    await register(pg_plane.admin, SAMPLES / "text-transform")
    alice = await pg_plane.key("alice", "submitter")
    bob = await pg_plane.key("bob", "approver")
    async with running_executor(pg_plane.url, podman_runtime, slots=2):
        ok = (await submit_workflow(alice, gated())).workflow
        no = (await submit_workflow(alice, gated())).workflow
        for w in (ok, no):
            await _gate_open(alice, w.id)
            at_gate = await get_workflow(bob, w.id)  # bob sees it once it asks for approval
            # The approver sees the outputs so far, and the gate's approval is open.
            assert json.loads(steps_by_name(at_gate)["fetch"].output_json) == {"text": "RELEASE NOTES"}
            assert steps_by_name(at_gate)["publish"].state == "WAITING"
            gate = [a for a in at_gate.approvals if a.step == "review"]
            assert len(gate) == 1 and gate[0].required == 1
        await approve_workflow(bob, ok.id, "review", "reads well")
        await reject_workflow(bob, no.id, "review", "typo in it")
        done_ok = (await watch_to_end(alice, ok.id))[-1]
        done_no = (await watch_to_end(alice, no.id))[-1]
    assert state_name(done_ok.state) == "SUCCEEDED"
    assert steps_by_name(done_ok)["review"].reason == "approved by bob"
    assert json.loads(steps_by_name(done_ok)["publish"].output_json) == {"text": "SETON ESAELER"}
    assert state_name(done_no.state) == "REJECTED"
    assert "rejected by bob: typo in it" in done_no.reason
    assert steps_by_name(done_no)["publish"].state == "SKIPPED"


async def test_plan_needs_a_quorum_of_two_and_refuses_self_approval(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object
) -> None:
    admin = pg_plane.admin
    await register(admin, SAMPLES / "text-transform", **{"risk: low": "risk: critical"})
    await register(admin, SAMPLES / "text-stats")
    alice = await pg_plane.key("alice", "submitter")
    alice_approver = await pg_plane.key("alice", "approver")  # the same person
    bob = await pg_plane.key("bob", "approver")
    carol = await pg_plane.key("carol", "approver")
    plan = spec(step("stats", "text-stats", "stats", {"text": "a b c"}),
                step("shout", "text-transform", "uppercase", {"text": "hi"}, after=("stats",)))
    async with running_executor(pg_plane.url, podman_runtime, slots=2):
        w = (await submit_workflow(alice, plan)).workflow
        assert state_name(w.state) == "PENDING_APPROVAL"
        assert w.reason == "plan of 2 run(s) needs 2 approvals (highest risk critical)"
        risks = {s.name: s.effective_risk for s in w.steps}
        assert risks["shout"] > risks["stats"]
        assert steps_by_name(w)["shout"].version == "1.0.0"  # pinned at submit
        assert [(a.step, a.required) for a in w.approvals] == [("", 2)]
        err = await expect_code(approve_workflow(alice_approver, w.id), grpc.StatusCode.PERMISSION_DENIED)
        assert "cannot decide" in (err.details() or "")
        await expect_code(approve_workflow(bob, w.id, plan_digest="0" * 64),
                          grpc.StatusCode.FAILED_PRECONDITION)
        one = await approve_workflow(bob, w.id, plan_digest=w.plan_digest)
        assert state_name(one.workflow.state) == "PENDING_APPROVAL" and one.approval.approvals == 1
        await expect_code(approve_workflow(bob, w.id), grpc.StatusCode.FAILED_PRECONDITION)
        # Nothing ran before the quorum.
        assert all(s.run_id == "" for s in one.workflow.steps)
        two = await approve_workflow(carol, w.id)
        assert state_name(two.workflow.state) == "RUNNING"
        assert two.workflow.reason == "plan approved by bob, carol"
        done = (await watch_to_end(alice, w.id))[-1]
    assert state_name(done.state) == "SUCCEEDED"


async def test_plan_and_gate_expire(
    pg_url: str, podman_runtime: PodmanRuntime, e2e_ready: object
) -> None:
    clock = ManualClock()
    plane = await start_plane(pg_url, clock=clock)
    try:
        admin = plane.admin
        await register(admin, SAMPLES / "text-transform")
        await register(admin, SAMPLES / "url-fetch")  # high risk: its plan asks for approval
        alice = await plane.key("alice", "submitter")
        async with running_executor(plane.url, podman_runtime, slots=2):
            pending = (await submit_workflow(alice, spec(step(
                "f", "url-fetch", "fetch", {"url": "http://127.0.0.1:9/"}, network=True)))).workflow
            gated_wf = (await submit_workflow(alice, gated())).workflow
            await _gate_open(alice, gated_wf.id)
            # Past both deadlines (the gate opened by the executor's clock, a little later);
            # the control plane's sweeper expires them.
            clock.advance(3700)
            p = (await watch_to_end(alice, pending.id))[-1]
            g = (await watch_to_end(alice, gated_wf.id))[-1]
    finally:
        await plane.close()
    assert state_name(p.state) == "EXPIRED" and p.reason.startswith("no decision before")
    assert p.steps[0].state == "SKIPPED" and p.steps[0].run_id == ""
    assert state_name(g.state) == "EXPIRED" and g.reason.startswith("step review expired")
    assert steps_by_name(g)["publish"].state == "SKIPPED"


async def test_cancel_mid_flight_stops_running_steps_and_skips_the_rest(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object
) -> None:
    admin = pg_plane.admin
    await register(admin, MISBEHAVE, **{"risk: critical": "risk: low"})
    alice = await pg_plane.key("alice", "submitter")
    plan = spec(
        step("slow", "misbehave", "spin", {}, limits={"timeout_seconds": 30}),
        step("quick", "misbehave", "ok", {}),
        step("after", "misbehave", "ok", {}, after=("slow", "quick")))
    async with running_executor(pg_plane.url, podman_runtime, slots=2):
        w = (await submit_workflow(alice, plan)).workflow

        async def read() -> wf.Workflow:
            return await get_workflow(alice, w.id)

        await assert_eventually(
            read, lambda x: steps_by_name(x)["slow"].state == "RUNNING"
            and steps_by_name(x)["quick"].state == "SUCCEEDED", timeout=120,
            what="slow RUNNING and quick done")
        resp = await alice.workflows.CancelWorkflow(
            wfs.CancelWorkflowRequest(workflow_id=w.id, reason="enough"), metadata=alice.md)
        assert state_name(resp.workflow.state) == "CANCELLED"
        await expect_code(alice.workflows.CancelWorkflow(
            wfs.CancelWorkflowRequest(workflow_id=w.id), metadata=alice.md),
            grpc.StatusCode.FAILED_PRECONDITION)
        slow_run = steps_by_name(resp.workflow)["slow"].run_id

        async def slow_state() -> str:
            r = await alice.runs.GetRun(rs.GetRunRequest(run_id=slow_run), metadata=alice.md)
            return RunState.Name(r.run.state)

        await assert_eventually(slow_state, lambda s: s == "RUN_STATE_CANCELLED", timeout=60,
                                what="the running step cancelled by its executor")
        final = await get_workflow(alice, w.id)
    assert final.reason == "cancelled by alice: enough"
    states = {s.name: s.state for s in final.steps}
    assert states == {"slow": "CANCELLED", "quick": "SUCCEEDED", "after": "SKIPPED"}
