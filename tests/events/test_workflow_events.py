"""Workflow state changes leave through the outbox and the relay, beside run events, on both
dialects: each once, in per-workflow order, with their own schema header."""

from __future__ import annotations

import uuid
from datetime import timedelta

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from airlock.v1 import workflow_pb2 as wf_pb
from airlock.v1 import workflow_service_pb2 as wfs
from server.domain.states import RunState
from server.wire import workflow_event_codec
from tests.conftest import start_plane
from tests.events.conftest import Names, echo_world, relay_settings, running_relay
from tests.helpers.wait import assert_eventually
from tests.helpers.workflows import spec, step, submit_workflow

pytestmark = [pytest.mark.nats]


async def _unpublished_workflow_events(store: object) -> int:
    async with store.read() as tx:  # type: ignore[attr-defined]
        return len(await tx.workflows.unpublished(1000))


async def test_workflow_events_reach_nats_once_in_order(db_url: str, nats_url: str,
                                                        names: Names) -> None:
    plane = await start_plane(db_url)
    try:
        _, alice = await echo_world(plane)
        done = (await submit_workflow(alice, spec(step("a", "echo", "echo", {"text": "x"}),
                                                  name="nightly"))).workflow
        cancelled = (await submit_workflow(alice, spec(step("a", "echo", "echo", {"text": "y"}),
                                                       name="adhoc"))).workflow
        await alice.workflows.CancelWorkflow(wfs.CancelWorkflowRequest(
            workflow_id=cancelled.id, reason="not today"), metadata=alice.md)
        # An executor's outcome, as the executor records it: the workflow ends in the same
        # transaction as its last step's run.
        store = plane.cp.store
        now = plane.cp.clock()
        async with store.transaction() as tx:
            run = await tx.runs.get(done.steps[0].run_id, lock=True)
            assert run is not None
            run = await tx.runs.lease(run, executor_id="ex-1", until=now + timedelta(seconds=30),
                                      now=now)
            await tx.runs.transition(run, RunState.SUCCEEDED, reason="done", actor="ex-1", now=now)
            ended = await tx.workflows.get(done.id)
        assert ended is not None and ended.state.value == "SUCCEEDED"
        async with running_relay(relay_settings(db_url, nats_url, names,
                                                relay_poll_seconds=0.2)) as rr:
            await assert_eventually(lambda: _unpublished_workflow_events(rr.store),
                                    lambda n: n == 0, timeout=20,
                                    what="every workflow event published")
        nc = await nats.connect(nats_url)
        try:
            sub = await nc.jetstream().pull_subscribe(
                f"{names.prefix}.{workflow_event_codec.SUBJECT_TOKEN}.>",
                durable=f"wf_{uuid.uuid4().hex[:8]}", stream=names.stream,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL,
                                      ack_policy=AckPolicy.EXPLICIT))
            msgs = await sub.fetch(10, timeout=5)
        finally:
            await nc.close()
    finally:
        await plane.close()
    got = [(m.subject, m.headers, workflow_event_codec.decode(m.data)) for m in msgs]
    by_wf: dict[str, list[tuple[int, str]]] = {}
    for subject, headers, p in got:
        assert headers is not None
        assert headers["Airlock-Schema"] == "airlock.v1.WorkflowEventPayload/1"
        assert headers["Nats-Msg-Id"] == p.event_id == f"{p.workflow_id}.{p.sequence}"
        state = wf_pb.WorkflowState.Name(p.state)
        assert subject.endswith(f".{p.name}.{state.removeprefix('WORKFLOW_STATE_').lower()}")
        by_wf.setdefault(p.workflow_id, []).append((p.sequence, state))
    assert by_wf == {
        done.id: [(1, "WORKFLOW_STATE_RUNNING"), (2, "WORKFLOW_STATE_SUCCEEDED")],
        cancelled.id: [(1, "WORKFLOW_STATE_RUNNING"), (2, "WORKFLOW_STATE_CANCELLED")],
    }
