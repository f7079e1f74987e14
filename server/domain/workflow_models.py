"""Frozen records of workflows, their planned steps and their approvals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agents.limits import Limits
from agents.manifest import Risk
from server.domain.models import Decision
from server.domain.workflows import FailurePolicy, WorkflowState


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """A step resolved at submit: version, image (with its digest) and risk are pinned."""

    name: str
    position: int
    gate: bool
    depends_on: tuple[str, ...]
    on_failure: FailurePolicy
    description: str = ""
    gate_approvals: int = 0
    gate_expires_seconds: float = 3600.0
    agent: str = ""
    version: str = ""
    capability: str = ""
    image: str = ""
    entrypoint: tuple[str, ...] | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    input_template: Any = None  # the input as submitted, references included
    limits: Limits | None = None
    network: bool = False
    secrets: tuple[str, ...] = ()
    risk: Risk = Risk.LOW
    risk_reasons: tuple[str, ...] = ()

    def plan_doc(self) -> dict[str, Any]:
        """What an approval of the plan is bound to (hashed into the plan digest)."""
        return {"name": self.name, "gate": self.gate, "depends_on": list(self.depends_on),
                "on_failure": self.on_failure.value, "gate_approvals": self.gate_approvals,
                "agent": self.agent, "version": self.version, "capability": self.capability,
                "image": self.image, "input": self.input_template,
                "limits": self.limits.as_dict() if self.limits else None,
                "network": self.network, "secrets": list(self.secrets)}


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    """A planned step and how it is going."""

    plan: PlannedStep
    state: str  # WAITING, PENDING_APPROVAL, SKIPPED, or (with a run) its run's state
    reason: str
    run_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    output_json: str | None = None  # the run's output, when it succeeded

    @property
    def name(self) -> str:
        return self.plan.name


@dataclass(frozen=True, slots=True)
class WorkflowApproval:
    workflow_id: str
    step: str  # "" for the plan
    status: str  # pending | approved | rejected | expired | cancelled
    required: int
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None
    decisions: tuple[Decision, ...]

    @property
    def approvals(self) -> int:
        return sum(1 for d in self.decisions if d.verdict == "approve")


@dataclass(frozen=True, slots=True)
class Workflow:
    id: str
    name: str
    state: WorkflowState
    reason: str
    submitter: str
    submitter_key_id: str
    idempotency_key: str | None
    request_hash: str
    risk: Risk
    plan_digest: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    deadline_at: datetime
    version: int
    max_attempts: int = 3
    traceparent: str = ""
    steps: tuple[WorkflowStep, ...] = ()
    approvals: tuple[WorkflowApproval, ...] = ()

    def step(self, name: str) -> WorkflowStep | None:
        return next((s for s in self.steps if s.name == name), None)


@dataclass(frozen=True, slots=True)
class WorkflowEvent:
    """A change of a workflow's state (its outbox row)."""

    id: int
    workflow_id: str
    seq: int
    state: WorkflowState
    previous_state: WorkflowState | None
    reason: str
    actor: str
    created_at: datetime
    published_at: datetime | None = None
    name: str = ""  # the workflow's
    traceparent: str = ""
