"""Workflows: submit (validate, plan, risk-assess), read, watch, cancel, and decide plans and gates.

A workflow's steps advance in the store (``server/store/workflows.py``), in the transactions
that change them; this service opens those transactions for the API's requests and for the
sweeper (expired approvals, passed deadlines).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agents.limits import LimitsRefused, resolve_limits
from agents.manifest import CAPABILITY_RE, NAME_RE, SECRET_RE, VERSION_RE, Risk
from server.domain.clock import Clock, utcnow
from server.domain.errors import (
    AgentNotFound,
    AlreadyDecided,
    ApprovalClosed,
    IdempotencyConflict,
    InvalidArgument,
    NoLiveVersion,
    SelfApprovalRefused,
    VersionDeprecated,
)
from server.domain.models import Page
from server.domain.policy import Policy, assess
from server.domain.principal import Principal, Scope, scope_of, sees_run
from server.domain.workflow_models import PlannedStep, Workflow, WorkflowApproval
from server.domain.workflows import (
    DEFAULT_DEADLINE_SECONDS,
    STEP_NAME_RE,
    WORKFLOW_ID_RE,
    FailurePolicy,
    PlanChanged,
    StepSpec,
    WorkflowApprovalNotFound,
    WorkflowEnded,
    WorkflowNotFound,
    WorkflowSpec,
    WorkflowState,
    check_spec,
    has_references,
)
from server.ids import ulid
from server.services.input_check import check_input_bounded
from server.services.runs import IDEMPOTENCY_RE
from server.services.validation import Paging, check, parse_json, require
from server.store import Duplicate, Store, Tx
from server.store.notify import RUN_EVENTS

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StepRequest:
    """One step as the API carries it (its input as JSON text)."""

    name: str
    agent: str = ""
    version: str = ""
    capability: str = ""
    input_json: str = ""
    limits: dict[str, float] | None = None
    network: bool = False
    secrets: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    gate: bool = False
    gate_approvals: int = 0
    description: str = ""
    on_failure: FailurePolicy = FailurePolicy.FAIL_WORKFLOW


@dataclass(frozen=True, slots=True)
class SubmitWorkflowRequest:
    name: str
    steps: tuple[StepRequest, ...]
    deadline_seconds: float = 0.0
    idempotency_key: str = ""
    traceparent: str = ""


@dataclass(frozen=True, slots=True)
class ListWorkflowsRequest:
    page_size: int = 0
    page_token: str = ""
    states: tuple[WorkflowState, ...] = ()


@dataclass(frozen=True, slots=True)
class DecideWorkflowRequest:
    """Approve or reject a workflow's plan (``step`` empty) or one of its gates."""

    workflow_id: str
    step: str = ""
    reason: str = ""
    plan_digest: str = ""


def _digest(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


class WorkflowService:
    def __init__(self, store: Store, policy: Policy, *, clock: Clock = utcnow,
                 max_input_bytes: int = 256 * 1024, max_attempts: int = 3,
                 watch_poll_seconds: float = 1.0) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.max_input_bytes = max_input_bytes
        self.max_attempts = max_attempts
        self.watch_poll_seconds = watch_poll_seconds

    # -- submit ------------------------------------------------------------------------------

    def _spec(self, req: SubmitWorkflowRequest) -> WorkflowSpec:
        steps = []
        for i, s in enumerate(req.steps):
            f = f"spec.steps[{i}]"
            if not s.gate:
                require(f"{f}.agent", s.agent, pattern=NAME_RE, max_len=63)
                require(f"{f}.capability", s.capability, pattern=CAPABILITY_RE, max_len=63)
            check(f"{f}.version", s.version, pattern=VERSION_RE, max_len=64)
            check(f"{f}.name", s.name, pattern=STEP_NAME_RE, max_len=63)
            for j, name in enumerate(s.secrets):
                require(f"{f}.secrets[{j}]", name, pattern=SECRET_RE, max_len=63)
            if len(set(s.secrets)) != len(s.secrets):
                raise InvalidArgument(f"{f}.secrets", "names must be unique")
            payload = (parse_json(f"{f}.input_json", s.input_json, max_bytes=self.max_input_bytes)
                       if s.input_json else None)
            if not s.gate and payload is None:
                raise InvalidArgument(f"{f}.input_json", "is required (JSON text)")
            steps.append(StepSpec(
                name=s.name, agent=s.agent, version=s.version, capability=s.capability,
                input=payload, limits=s.limits, network=s.network, secrets=s.secrets,
                depends_on=s.depends_on, gate=s.gate, gate_approvals=s.gate_approvals,
                description=s.description, on_failure=s.on_failure))
        return WorkflowSpec(name=req.name, steps=tuple(steps),
                            deadline_seconds=req.deadline_seconds)

    async def _plan_step(self, tx: Tx, i: int, s: StepSpec, gate_expiry: timedelta) -> PlannedStep:
        f = f"spec.steps[{i}]"
        common: dict[str, Any] = dict(name=s.name, position=i, gate=s.gate,
                                      depends_on=s.depends_on, on_failure=s.on_failure,
                                      description=s.description)
        if s.gate:
            return PlannedStep(**common, gate_approvals=max(1, s.gate_approvals),
                               gate_expires_seconds=gate_expiry.total_seconds(),
                               risk_reasons=("a gate: people approve when it is reached",))
        version = await tx.registry.get_version(s.agent, s.version)
        if version is None:
            if not s.version and await tx.registry.get_agent(s.agent):
                raise NoLiveVersion(s.agent)
            raise AgentNotFound(s.agent, s.version or None)
        if version.deprecated:
            raise VersionDeprecated(s.agent, version.version)
        m = version.manifest
        cap = m.capability(s.capability)
        if cap is None:
            raise InvalidArgument(f"{f}.capability", f"{s.agent}@{version.version} has no "
                                  f"capability {s.capability!r}; it has "
                                  f"{', '.join(c.name for c in m.capabilities)}")
        if not has_references(s.input):  # a static input is checked now, the rest when ready
            try:
                await check_input_bounded(cap, s.input)
            except InvalidArgument as e:
                raise InvalidArgument(f"{f}.input_json", e.problem) from None
        if s.network and not m.permissions.network:
            raise InvalidArgument(f"{f}.network", f"{s.agent}@{version.version} does not permit "
                                  "network egress")
        for j, name in enumerate(s.secrets):
            if name not in m.permissions.secrets:
                raise InvalidArgument(f"{f}.secrets[{j}]", f"{s.agent}@{version.version} does "
                                      f"not declare secret {name!r}")
        try:
            limits, default = resolve_limits(s.limits, m.limits.default, m.limits.max)
        except LimitsRefused as e:
            raise InvalidArgument(f"{f}.limits.{e.field}", e.problem) from None
        risk = assess(version.risk, network=s.network, secrets=s.secrets, limits=limits,
                      default=default)
        image = (f"{version.image}@{version.image_digest}"
                 if version.image_digest and "@" not in version.image else version.image)
        return PlannedStep(
            **common, agent=version.agent, version=version.version, capability=cap.name,
            image=image, entrypoint=tuple(m.entrypoint) if m.entrypoint else None,
            input_schema=cap.input_schema, output_schema=cap.output_schema,
            input_template=s.input, limits=limits, network=s.network, secrets=s.secrets,
            risk=risk.risk, risk_reasons=risk.reasons)

    async def submit(self, who: Principal, req: SubmitWorkflowRequest) -> tuple[Workflow, bool]:
        """Validate, plan and store a workflow (or return the one with the same idempotency
        key). -> (workflow, deduplicated)."""
        check("idempotency_key", req.idempotency_key, pattern=IDEMPOTENCY_RE, max_len=200)
        check("traceparent", req.traceparent, max_len=100)
        spec = self._spec(req)
        check_spec(spec)
        digest = _digest({"name": spec.name, "deadline_seconds": spec.deadline_seconds,
                          "steps": [_step_doc(s) for s in spec.steps]})
        if req.idempotency_key:
            async with self.store.read() as tx:
                existing = await tx.workflows.find_by_idempotency_key(who.owner,
                                                                      req.idempotency_key)
            if existing is not None:
                return self._dedupe(existing, req.idempotency_key, digest)
        gate_expiry = self.policy.rule_for(Risk.HIGH).expires_after
        async with self.store.read() as tx:
            plan = [await self._plan_step(tx, i, s, gate_expiry) for i, s in enumerate(spec.steps)]
        risk = max(p.risk for p in plan)
        rule = self.policy.rule_for(risk)
        plan_digest = _digest([p.plan_doc() for p in plan])
        now = self.clock()
        pending = rule.approvals > 0
        agents = sum(1 for p in plan if not p.gate)
        reason = (f"plan of {agents} run(s) needs {rule.approvals} approval"
                  f"{'s' if rule.approvals > 1 else ''} (highest risk {risk.label})" if pending
                  else f"plan auto-approved (highest risk {risk.label})")
        wf = Workflow(
            id=f"wf_{ulid().lower()}", name=spec.name,
            state=WorkflowState.PENDING_APPROVAL if pending else WorkflowState.RUNNING,
            reason=reason, submitter=who.owner, submitter_key_id=who.key_id,
            idempotency_key=req.idempotency_key or None, request_hash=digest, risk=risk,
            plan_digest=plan_digest, created_at=now, updated_at=now, finished_at=None,
            deadline_at=now + timedelta(seconds=spec.deadline_seconds or DEFAULT_DEADLINE_SECONDS),
            version=0, max_attempts=self.max_attempts, traceparent=req.traceparent)
        try:
            async with self.store.transaction() as tx:
                await tx.workflows.insert(wf, plan, actor=who.owner)
                if pending:
                    await tx.workflows.open_approval(wf.id, "", required=rule.approvals, now=now,
                                                     expires_at=now + rule.expires_after)
                else:
                    await tx.workflows.advance(wf, actor=who.owner, now=now)
                await tx.audit.record(actor=who.owner, action="workflow.submit", target=wf.id,
                                      now=now, details={"name": spec.name, "steps": len(plan),
                                                        "risk": risk.label,
                                                        "plan_digest": plan_digest,
                                                        "state": wf.state.value})
                stored = await tx.workflows.get(wf.id)
        except Duplicate:
            async with self.store.read() as tx:
                existing = await tx.workflows.find_by_idempotency_key(who.owner,
                                                                      req.idempotency_key)
            if existing is None:
                raise
            return self._dedupe(existing, req.idempotency_key, digest)
        assert stored is not None
        return stored, False

    @staticmethod
    def _dedupe(existing: Workflow, key: str, digest: str) -> tuple[Workflow, bool]:
        if existing.request_hash != digest:
            raise IdempotencyConflict(key, existing.id)
        return existing, True

    # -- reads -------------------------------------------------------------------------------

    @staticmethod
    async def _visible(tx: Tx, operation: str, who: Principal, wf: Workflow) -> bool:
        if sees_run(operation, who, submitter=wf.submitter, asked_approval=False):
            return True
        return (scope_of(operation, who) is Scope.DECIDE
                and await tx.workflows.asked_approval(wf.id))

    async def get(self, who: Principal, workflow_id: str, *,
                  operation: str = "WorkflowService.GetWorkflow") -> Workflow:
        require("workflow_id", workflow_id, pattern=WORKFLOW_ID_RE, max_len=40)
        async with self.store.read() as tx:
            wf = await tx.workflows.get(workflow_id)
            if wf is None or not await self._visible(tx, operation, who, wf):
                raise WorkflowNotFound(workflow_id)
        return wf

    async def list(self, who: Principal, req: ListWorkflowsRequest) -> Page[Workflow]:
        paging = Paging.of(req.page_size, req.page_token, {
            "list": "workflows", "states": [s.value for s in req.states]})
        scope = scope_of("WorkflowService.ListWorkflows", who)
        async with self.store.read() as tx:
            items = await tx.workflows.find(
                states=req.states, before_id=paging.after, limit=paging.fetch,
                visible_to="" if scope is Scope.ALL else who.owner,
                or_asked_approval=scope is Scope.DECIDE)
        return paging.page(items, key=lambda w: w.id)

    async def watch(self, who: Principal, workflow_id: str) -> AsyncIterator[Workflow]:
        """The workflow now, then on every change of it or of a step; ends once it ended."""
        wf = await self.get(who, workflow_id, operation="WorkflowService.WatchWorkflow")
        notifier = self.store.notifier
        last: tuple[Any, ...] = ()
        while True:
            token = notifier.token(RUN_EVENTS, workflow_id)
            async with self.store.read() as tx:
                fresh = await tx.workflows.get(workflow_id)
            wf = fresh or wf
            mark = (wf.version, tuple(s.state for s in wf.steps))
            if mark != last:
                last = mark
                yield wf
            if wf.state.terminal:
                return
            await notifier.wait(token, self.watch_poll_seconds)

    # -- changes -----------------------------------------------------------------------------

    async def cancel(self, who: Principal, workflow_id: str, reason: str = "") -> Workflow:
        require("workflow_id", workflow_id, pattern=WORKFLOW_ID_RE, max_len=40)
        check("reason", reason, max_len=2000)
        now = self.clock()
        why = f"cancelled by {who.owner}" + (f": {reason}" if reason else "")
        async with self.store.transaction() as tx:
            wf = await tx.workflows.lock(workflow_id)
            if wf is None or not await self._visible(tx, "WorkflowService.CancelWorkflow", who, wf):
                raise WorkflowNotFound(workflow_id)
            if wf.state.terminal:
                raise WorkflowEnded(workflow_id, wf.state.value)
            await tx.workflows.finish(wf, WorkflowState.CANCELLED, reason=why, actor=who.owner,
                                      now=now)
            await tx.audit.record(actor=who.owner, action="workflow.cancel", target=workflow_id,
                                  now=now, details={"reason": reason})
            done = await tx.workflows.get(workflow_id)
        assert done is not None
        return done

    async def approve(self, who: Principal, req: DecideWorkflowRequest
                      ) -> tuple[Workflow, WorkflowApproval]:
        return await self._decide(who, req, "approve")

    async def reject(self, who: Principal, req: DecideWorkflowRequest
                     ) -> tuple[Workflow, WorkflowApproval]:
        if not req.reason.strip():
            raise InvalidArgument("reason", "is required to reject")
        return await self._decide(who, req, "reject")

    async def _decide(self, who: Principal, req: DecideWorkflowRequest, verdict: str
                      ) -> tuple[Workflow, WorkflowApproval]:
        wid, step = req.workflow_id, req.step
        require("workflow_id", wid, pattern=WORKFLOW_ID_RE, max_len=40)
        check("step", step, pattern=STEP_NAME_RE, max_len=63)
        check("reason", req.reason, max_len=2000)
        check("plan_digest", req.plan_digest, pattern=r"^[0-9a-f]{64}$", max_len=64)
        op = f"WorkflowService.{verdict.title()}Workflow"
        now = self.clock()
        expired = False
        async with self.store.transaction() as tx:
            # Lock order: the workflow, then its approval (as the store advances it).
            wf = await tx.workflows.lock(wid)
            if wf is None or not sees_run(op, who, submitter=wf.submitter, asked_approval=True):
                raise WorkflowNotFound(wid)
            a = await tx.workflows.approval(wid, step, lock=True)
            if a is None:
                raise WorkflowApprovalNotFound(wid, step)
            subject = f"{wid}/{step}" if step else wid
            if a.status == "pending" and now >= a.expires_at:
                await self._expire(tx, wf, step, now)  # committed below, then refused
                expired = True
            elif a.status != "pending":
                raise ApprovalClosed(subject, a.status)
            elif req.plan_digest and req.plan_digest != wf.plan_digest:
                raise PlanChanged(wid)
            elif wf.submitter == who.owner:
                log.warning("self-approval refused: %s on workflow %s", who.owner, subject)
                raise SelfApprovalRefused(subject, who.owner)
            elif not await tx.workflows.add_decision(wid, step, approver=who.owner,
                                                     key_id=who.key_id, verdict=verdict,
                                                     reason=req.reason, now=now):
                raise AlreadyDecided(subject, who.owner)
            else:
                await tx.audit.record(actor=who.owner, action=f"workflow.{verdict}",
                                      target=subject, now=now,
                                      details={"reason": req.reason, "plan_digest": wf.plan_digest})
                a = await tx.workflows.approval(wid, step)
                assert a is not None
                if verdict == "reject":
                    why = f"rejected by {who.owner}: {req.reason}"
                    await tx.workflows.close_approval(wid, step, "rejected", now)
                    if step:
                        await tx.workflows.gate_closed(wf, step, state="REJECTED", reason=why,
                                                       actor=who.owner, now=now)
                    else:
                        await tx.workflows.finish(wf, WorkflowState.REJECTED, reason=why,
                                                  actor=who.owner, now=now)
                elif a.approvals >= a.required:
                    approvers = ", ".join(d.approver for d in a.decisions if d.verdict == "approve")
                    await tx.workflows.close_approval(wid, step, "approved", now)
                    if step:
                        await tx.workflows.gate_closed(wf, step, state="SUCCEEDED",
                                                       reason=f"approved by {approvers}",
                                                       actor=who.owner, now=now)
                    else:
                        await tx.workflows.set_state(wf, WorkflowState.RUNNING,
                                                     reason=f"plan approved by {approvers}",
                                                     actor=who.owner, now=now)
                        running = await tx.workflows.lock(wid)
                        assert running is not None
                        await tx.workflows.advance(running, actor=who.owner, now=now)
            done = await tx.workflows.get(wid)
            closed = await tx.workflows.approval(wid, step)
        if expired:
            raise ApprovalClosed(f"{wid}/{step}" if step else wid, "expired")
        assert done is not None and closed is not None
        return done, closed

    @staticmethod
    async def _expire(tx: Tx, wf: Workflow, step: str, now: datetime) -> None:
        a = await tx.workflows.approval(wf.id, step)
        assert a is not None
        why = f"no decision before {a.expires_at.isoformat()}"
        await tx.workflows.close_approval(wf.id, step, "expired", now)
        if step:
            await tx.workflows.gate_closed(wf, step, state="EXPIRED", reason=why, actor="system",
                                           now=now)
        else:
            await tx.workflows.finish(wf, WorkflowState.EXPIRED, reason=why, actor="system",
                                      now=now)
        await tx.audit.record(actor="system", action="workflow.approval.expire",
                              target=f"{wf.id}/{step}" if step else wf.id, now=now,
                              details={"expires_at": a.expires_at.isoformat()})

    async def sweep(self) -> int:
        """Expire overdue approvals and end workflows past their deadline (FAILED); returns
        how many it closed. Safe to run from several processes (each takes the row lock)."""
        total = 0
        now = self.clock()
        async with self.store.read() as tx:
            due = await tx.workflows.due_approvals(now)
            overdue = await tx.workflows.overdue(now)
        for wid, step in due:
            async with self.store.transaction() as tx:
                wf = await tx.workflows.lock(wid)
                a = await tx.workflows.approval(wid, step, lock=True)
                if wf is None or a is None or a.status != "pending" or wf.state.terminal:
                    continue
                await self._expire(tx, wf, step, now)
                total += 1
        for wid in overdue:
            async with self.store.transaction() as tx:
                wf = await tx.workflows.lock(wid)
                if wf is None or wf.state.terminal:
                    continue
                await tx.workflows.finish(wf, WorkflowState.FAILED, actor="system", now=now,
                                          reason=f"deadline {wf.deadline_at.isoformat()} passed")
                total += 1
        return total


def _step_doc(s: StepSpec) -> dict[str, Any]:
    return {"name": s.name, "agent": s.agent, "version": s.version, "capability": s.capability,
            "input": s.input, "limits": s.limits or {}, "network": s.network,
            "secrets": sorted(s.secrets), "depends_on": list(s.depends_on), "gate": s.gate,
            "gate_approvals": s.gate_approvals, "description": s.description,
            "on_failure": s.on_failure.value}
