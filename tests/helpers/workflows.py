"""Building and driving workflows through the real gRPC API in tests."""

from __future__ import annotations

import json
from typing import Any

from airlock.v1 import workflow_pb2 as wf
from airlock.v1 import workflow_service_pb2 as wfs
from tests.helpers.client import Client

TERMINAL = {wf.WorkflowState.Value(f"WORKFLOW_STATE_{s}")
            for s in ("SUCCEEDED", "FAILED", "CANCELLED", "REJECTED", "EXPIRED")}


def step(name: str, agent: str = "", capability: str = "", input: Any = None,
         *, after: tuple[str, ...] = (), **fields: Any) -> wf.StepSpec:
    """An agent step (or, with ``gate=True``, a gate) for a spec."""
    text = json.dumps(input) if input is not None else ""
    return wf.StepSpec(name=name, agent=agent, capability=capability, input_json=text,
                       depends_on=list(after), **fields)


def spec(*steps: wf.StepSpec, name: str = "flow", **fields: Any) -> wf.WorkflowSpec:
    return wf.WorkflowSpec(name=name, steps=list(steps), **fields)


def ref(path: str) -> dict[str, str]:
    return {"$from": path}


async def submit_workflow(client: Client, s: wf.WorkflowSpec, **fields: Any
                          ) -> wfs.SubmitWorkflowResponse:
    return await client.workflows.SubmitWorkflow(
        wfs.SubmitWorkflowRequest(spec=s, **fields), metadata=client.md)


async def get_workflow(client: Client, workflow_id: str) -> wf.Workflow:
    return (await client.workflows.GetWorkflow(
        wfs.GetWorkflowRequest(workflow_id=workflow_id), metadata=client.md)).workflow


async def approve_workflow(client: Client, workflow_id: str, step: str = "", reason: str = "ok",
                           **fields: Any) -> wfs.ApproveWorkflowResponse:
    return await client.workflows.ApproveWorkflow(wfs.ApproveWorkflowRequest(
        workflow_id=workflow_id, step=step, reason=reason, **fields), metadata=client.md)


async def reject_workflow(client: Client, workflow_id: str, step: str = "",
                          reason: str = "no") -> wfs.RejectWorkflowResponse:
    return await client.workflows.RejectWorkflow(wfs.RejectWorkflowRequest(
        workflow_id=workflow_id, step=step, reason=reason), metadata=client.md)


async def watch_to_end(client: Client, workflow_id: str, timeout: float = 180
                       ) -> list[wf.Workflow]:
    """Every snapshot WatchWorkflow sends until the workflow ends."""
    seen = []
    async for msg in client.workflows.WatchWorkflow(
            wfs.WatchWorkflowRequest(workflow_id=workflow_id), metadata=client.md,
            timeout=timeout):
        seen.append(msg.workflow)
    assert seen and seen[-1].state in TERMINAL, seen[-1] if seen else "nothing"
    return seen


def state_name(value: int) -> str:
    return wf.WorkflowState.Name(value).removeprefix("WORKFLOW_STATE_")


def steps_by_name(w: wf.Workflow) -> dict[str, wf.WorkflowStep]:
    return {s.name: s for s in w.steps}
