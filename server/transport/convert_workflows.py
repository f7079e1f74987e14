"""Workflow records <-> protobuf messages (``airlock.v1.Workflow`` and its parts)."""

from __future__ import annotations

import json
from typing import cast

from airlock.v1 import approval_pb2, workflow_pb2, workflow_service_pb2
from server.domain.errors import InvalidArgument
from server.domain.workflow_models import Workflow, WorkflowApproval, WorkflowStep
from server.domain.workflows import FailurePolicy, WorkflowState
from server.services.workflows import StepRequest, SubmitWorkflowRequest
from server.transport.convert import limits_from_pb, limits_pb, risk_pb
from server.wire.timestamps import ts

_STATES = {s: getattr(workflow_pb2, f"WORKFLOW_STATE_{s.value}") for s in WorkflowState}
_STATE_OF = {v: k for k, v in _STATES.items()}
_POLICIES = {FailurePolicy.FAIL_WORKFLOW: workflow_pb2.FAILURE_POLICY_FAIL_WORKFLOW,
             FailurePolicy.CONTINUE: workflow_pb2.FAILURE_POLICY_CONTINUE}
_POLICY_OF = {**{v: k for k, v in _POLICIES.items()},
              workflow_pb2.FAILURE_POLICY_UNSPECIFIED: FailurePolicy.FAIL_WORKFLOW}
_STATUS = {"pending": 1, "approved": 2, "rejected": 3, "expired": 4, "cancelled": 5}


def state_pb(s: WorkflowState) -> workflow_pb2.WorkflowState:
    return cast(workflow_pb2.WorkflowState, _STATES[s])


def state_from_pb(field: str, value: int) -> WorkflowState:
    if value not in _STATE_OF:
        raise InvalidArgument(field, f"unknown workflow state {value}")
    return _STATE_OF[value]


def submit_from_pb(req: workflow_service_pb2.SubmitWorkflowRequest, traceparent: str
                   ) -> SubmitWorkflowRequest:
    steps = []
    for i, s in enumerate(req.spec.steps):
        if s.on_failure not in _POLICY_OF:
            raise InvalidArgument(f"spec.steps[{i}].on_failure", f"unknown policy {s.on_failure}")
        steps.append(StepRequest(
            name=s.name, agent=s.agent, version=s.version, capability=s.capability,
            input_json=s.input_json, limits=limits_from_pb(s.limits), network=s.network,
            secrets=tuple(s.secrets), depends_on=tuple(s.depends_on), gate=s.gate,
            gate_approvals=s.gate_approvals, description=s.description,
            on_failure=_POLICY_OF[s.on_failure]))
    return SubmitWorkflowRequest(name=req.spec.name, steps=tuple(steps),
                                 deadline_seconds=req.spec.deadline_seconds,
                                 idempotency_key=req.idempotency_key, traceparent=traceparent)


def step_pb(s: WorkflowStep) -> workflow_pb2.WorkflowStep:
    p = s.plan
    return workflow_pb2.WorkflowStep(
        name=p.name, state=s.state, reason=s.reason, agent=p.agent, version=p.version,
        capability=p.capability, image=p.image, effective_risk=risk_pb(p.risk),
        risk_reasons=list(p.risk_reasons), limits=limits_pb(p.limits) if p.limits else None,
        network=p.network, secrets=list(p.secrets), depends_on=list(p.depends_on), gate=p.gate,
        on_failure=_POLICIES[p.on_failure],
        input_json=json.dumps(p.input_template, ensure_ascii=False) if not p.gate else "",
        run_id=s.run_id or "", output_json=s.output_json or "", description=p.description,
        start_time=ts(s.started_at), finish_time=ts(s.finished_at))


def approval_pb(a: WorkflowApproval) -> workflow_pb2.WorkflowApproval:
    return workflow_pb2.WorkflowApproval(
        workflow_id=a.workflow_id, step=a.step,
        status=cast(approval_pb2.ApprovalStatus, _STATUS[a.status]), required=a.required,
        approvals=a.approvals,
        decisions=[approval_pb2.Decision(
            approver=d.approver, verdict=approval_pb2.VERDICT_APPROVE if d.verdict == "approve"
            else approval_pb2.VERDICT_REJECT, reason=d.reason, decide_time=ts(d.decided_at))
            for d in a.decisions],
        create_time=ts(a.created_at), expire_time=ts(a.expires_at))


def workflow_pb(w: Workflow) -> workflow_pb2.Workflow:
    return workflow_pb2.Workflow(
        id=w.id, name=w.name, state=state_pb(w.state), reason=w.reason, submitter=w.submitter,
        idempotency_key=w.idempotency_key or "", risk=risk_pb(w.risk), plan_digest=w.plan_digest,
        steps=[step_pb(s) for s in w.steps], approvals=[approval_pb(a) for a in w.approvals],
        create_time=ts(w.created_at), update_time=ts(w.updated_at),
        finish_time=ts(w.finished_at), deadline_time=ts(w.deadline_at), version=w.version)
