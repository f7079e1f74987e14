"""Workflows: their planned steps, approvals, events, and how they advance.

A workflow advances only inside transactions that changed one of its parts, holding its row
lock (``FOR UPDATE`` on PostgreSQL; SQLite has one writer): the transaction that ended a
step's run (``step_ended``, called by ``RunRepository``), a decision on its plan or a gate,
its cancel, expiry or deadline. Each computes the next moves from every step's state
(``server.domain.workflows.next_moves``) and applies them at once: ready steps become runs
(``QUEUED``) or open gates; an end closes the workflow and cancels what is still active. Two
steps ending at once on two executors serialise on the row, and the second sees the first's
result, so a step is started exactly once.

Lock order, everywhere: a step's run, then the workflow, then its approvals. Cancelling the
other active runs of a workflow that ends skips runs another transaction holds (they are
ending, or being leased: the executor then finds them in ``RunRepository.to_stop``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from agents.limits import Limits
from agents.manifest import Risk
from agents.schemas import UnsupportedPattern, first_error
from server.domain.models import Decision, NewRun, Run
from server.domain.states import RunState
from server.domain.workflow_models import (
    PlannedStep,
    Workflow,
    WorkflowApproval,
    WorkflowEvent,
    WorkflowStep,
)
from server.domain.workflows import (
    PENDING_APPROVAL,
    QUEUED,
    SKIPPED,
    STEP_TERMINAL,
    SUCCEEDED,
    WAITING,
    FailurePolicy,
    StepStatus,
    UnresolvedReference,
    WorkflowState,
    next_moves,
    resolve,
    topological_order,
)
from server.ids import new_run_id
from server.store import tables as t
from server.store.base import Duplicate, Repository, Unit
from server.store.notify import APPROVALS, RUN_EVENTS
from server.store.runs import RunRepository

_W, _S, _A, _D, _E = (t.workflows, t.workflow_steps, t.workflow_approvals,
                      t.workflow_decisions, t.workflow_events)
_R = t.runs
_ACTIVE_RUN = (RunState.PENDING_APPROVAL.value, RunState.QUEUED.value, RunState.RUNNING.value)


def _planned(r: Row[Any]) -> PlannedStep:
    return PlannedStep(
        name=r.name, position=r.position, gate=r.gate, depends_on=tuple(r.depends_on),
        on_failure=FailurePolicy(r.on_failure), description=r.description,
        gate_approvals=r.gate_approvals, gate_expires_seconds=r.gate_expires_seconds,
        agent=r.agent_name, version=r.version, capability=r.capability, image=r.image,
        entrypoint=tuple(r.entrypoint) if r.entrypoint is not None else None,
        input_schema=r.input_schema, output_schema=r.output_schema,
        input_template=json.loads(r.input_template),
        limits=Limits(**r.limits) if r.limits is not None else None, network=r.network,
        secrets=tuple(r.secrets), risk=Risk(r.risk), risk_reasons=tuple(r.risk_reasons))


def _step_params(workflow_id: str, p: PlannedStep) -> dict[str, Any]:
    return dict(
        workflow_id=workflow_id, name=p.name, position=p.position, state=WAITING, reason="",
        gate=p.gate, gate_approvals=p.gate_approvals, gate_expires_seconds=p.gate_expires_seconds,
        description=p.description, depends_on=list(p.depends_on), on_failure=p.on_failure.value,
        agent_name=p.agent, version=p.version, capability=p.capability, image=p.image,
        entrypoint=list(p.entrypoint) if p.entrypoint is not None else None,
        input_schema=p.input_schema, output_schema=p.output_schema,
        input_template=json.dumps(p.input_template, separators=(",", ":"), ensure_ascii=False),
        limits=p.limits.as_dict() if p.limits is not None else None, network=p.network,
        secrets=list(p.secrets), risk=int(p.risk), risk_reasons=list(p.risk_reasons))


def _workflow(r: Row[Any], steps: tuple[WorkflowStep, ...] = (),
              approvals: tuple[WorkflowApproval, ...] = ()) -> Workflow:
    return Workflow(
        id=r.id, name=r.name, state=WorkflowState(r.state), reason=r.reason,
        submitter=r.submitter, submitter_key_id=r.submitter_key_id,
        idempotency_key=r.idempotency_key, request_hash=r.request_hash, risk=Risk(r.risk),
        plan_digest=r.plan_digest, created_at=r.created_at, updated_at=r.updated_at,
        finished_at=r.finished_at, deadline_at=r.deadline_at, version=r.version,
        max_attempts=r.max_attempts, traceparent=r.traceparent, steps=steps,
        approvals=approvals)


def _event(r: Row[Any]) -> WorkflowEvent:
    return WorkflowEvent(
        id=r.id, workflow_id=r.workflow_id, seq=r.seq, state=WorkflowState(r.state),
        previous_state=WorkflowState(r.previous_state) if r.previous_state else None,
        reason=r.reason, actor=r.actor, created_at=r.created_at, published_at=r.published_at,
        name=r.name, traceparent=r.traceparent)


class WorkflowRepository(Repository):
    """``workflows``, ``workflow_steps``, ``workflow_approvals``, ``workflow_decisions`` and
    ``workflow_events``; starts step runs through ``RunRepository``."""

    __slots__ = ("_runs",)

    def __init__(self, unit: Unit, runs: RunRepository) -> None:
        super().__init__(unit)
        self._runs = runs

    # -- submission and reads ----------------------------------------------------------------

    async def insert(self, wf: Workflow, plan: Sequence[PlannedStep], *, actor: str) -> None:
        """Store a submitted workflow, its planned steps and its first event.

        Raises ``Duplicate`` when the (submitter, idempotency key) pair exists (the insert runs
        in a savepoint, so the transaction stays usable).
        """
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(insert(_W).values(
                    id=wf.id, name=wf.name, state=wf.state.value, reason=wf.reason,
                    submitter=wf.submitter, submitter_key_id=wf.submitter_key_id,
                    idempotency_key=wf.idempotency_key, request_hash=wf.request_hash,
                    risk=int(wf.risk), plan_digest=wf.plan_digest, traceparent=wf.traceparent,
                    created_at=wf.created_at, updated_at=wf.created_at, finished_at=None,
                    deadline_at=wf.deadline_at, version=0, last_seq=0,
                    max_attempts=wf.max_attempts))
        except IntegrityError as e:
            raise Duplicate(str(e.orig)) from e
        await self._conn.execute(insert(_S), [_step_params(wf.id, p) for p in plan])
        await self._event(wf.id, wf.state, None, wf.reason, actor, wf.created_at)

    async def get(self, workflow_id: str, *, lock: bool = False) -> Workflow | None:
        """The workflow with its steps (their runs' states and outputs) and approvals."""
        q = select(_W).where(_W.c.id == workflow_id)
        if lock and self._unit.pg:
            q = q.with_for_update()
        row = (await self._conn.execute(q)).first()
        if row is None:
            return None
        return _workflow(row, await self._steps(workflow_id, outputs=True),
                         await self._approvals([workflow_id]))

    async def get_many(self, ids: Sequence[str]) -> list[Workflow]:
        """Several workflows (with steps and approvals), in the order of ``ids``."""
        out = []
        for wid in ids:
            wf = await self.get(wid)
            if wf is not None:
                out.append(wf)
        return out

    async def find_by_idempotency_key(self, submitter: str, key: str) -> Workflow | None:
        row = (await self._conn.execute(select(_W.c.id).where(
            _W.c.submitter == submitter, _W.c.idempotency_key == key))).first()
        return await self.get(row.id) if row else None

    async def find(self, *, states: Sequence[WorkflowState] = (), before_id: str = "",
                   limit: int, visible_to: str = "", or_asked_approval: bool = False
                   ) -> list[Workflow]:
        """Newest first; ``visible_to``/``or_asked_approval`` as ``RunRepository.find``."""
        q = select(_W.c.id).order_by(_W.c.id.desc()).limit(limit)
        if visible_to:
            own = _W.c.submitter == visible_to
            if or_asked_approval:
                asked = select(_A.c.workflow_id).where(_A.c.workflow_id == _W.c.id).exists()
                q = q.where(or_(own, asked))
            else:
                q = q.where(own)
        if states:
            q = q.where(_W.c.state.in_([s.value for s in states]))
        if before_id:
            q = q.where(_W.c.id < before_id)
        return await self.get_many([r.id for r in await self._conn.execute(q)])

    async def asked_approval(self, workflow_id: str) -> bool:
        row = (await self._conn.execute(
            select(_A.c.workflow_id).where(_A.c.workflow_id == workflow_id).limit(1))).first()
        return row is not None

    async def events(self, workflow_id: str) -> list[WorkflowEvent]:
        rows = await self._conn.execute(
            select(_E).where(_E.c.workflow_id == workflow_id).order_by(_E.c.seq))
        return [_event(r) for r in rows]

    async def _steps(self, workflow_id: str, *, outputs: bool = False) -> tuple[WorkflowStep, ...]:
        cols = [*_S.c, _R.c.state.label("run_state"), _R.c.reason.label("run_reason"),
                _R.c.started_at.label("run_started"), _R.c.finished_at.label("run_finished")]
        if outputs:
            cols.append(_R.c.output_json)
        rows = await self._conn.execute(
            select(*cols).select_from(_S.outerjoin(_R, _R.c.id == _S.c.run_id))
            .where(_S.c.workflow_id == workflow_id).order_by(_S.c.position))
        out = []
        for r in rows:
            # A step with a run is in its run's state (QUEUED, RUNNING, its outcome).
            state, reason = r.state, r.reason
            if r.run_id and r.run_state and r.state not in STEP_TERMINAL:
                state, reason = r.run_state, r.run_reason
            out.append(WorkflowStep(
                plan=_planned(r), state=state, reason=reason, run_id=r.run_id,
                started_at=r.run_started or r.started_at,
                finished_at=r.finished_at or (r.run_finished if state in STEP_TERMINAL else None),
                output_json=(r.output_json if outputs and r.run_state == SUCCEEDED else None)))
        return tuple(out)

    # -- approvals ---------------------------------------------------------------------------

    async def _approvals(self, ids: Sequence[str]) -> tuple[WorkflowApproval, ...]:
        rows = list(await self._conn.execute(
            select(_A).where(_A.c.workflow_id.in_(list(ids)))
            .order_by(_A.c.workflow_id, _A.c.created_at, _A.c.step)))
        if not rows:
            return ()
        decisions: dict[tuple[str, str], list[Decision]] = {}
        for d in await self._conn.execute(
                select(_D).where(_D.c.workflow_id.in_(list(ids))).order_by(_D.c.id)):
            decisions.setdefault((d.workflow_id, d.step), []).append(Decision(
                approver=d.approver, verdict=d.verdict, reason=d.reason, decided_at=d.decided_at))
        return tuple(WorkflowApproval(
            workflow_id=r.workflow_id, step=r.step, status=r.status, required=r.required,
            created_at=r.created_at, expires_at=r.expires_at, closed_at=r.closed_at,
            decisions=tuple(decisions.get((r.workflow_id, r.step), ()))) for r in rows)

    async def approval(self, workflow_id: str, step: str, *, lock: bool = False
                       ) -> WorkflowApproval | None:
        q = select(_A.c.step).where(_A.c.workflow_id == workflow_id, _A.c.step == step)
        if lock and self._unit.pg:
            q = q.with_for_update()
        if (await self._conn.execute(q)).first() is None:
            return None
        return next(a for a in await self._approvals([workflow_id]) if a.step == step)

    async def open_approval(self, workflow_id: str, step: str, *, required: int, now: datetime,
                            expires_at: datetime) -> None:
        await self._conn.execute(insert(_A).values(
            workflow_id=workflow_id, step=step, status="pending", required=required,
            created_at=now, expires_at=expires_at, updated_at=now))
        await self._touch(workflow_id, now)
        self._unit.notify.add(APPROVALS)

    async def add_decision(self, workflow_id: str, step: str, *, approver: str, key_id: str,
                           verdict: str, reason: str, now: datetime) -> bool:
        """False if this approver already decided this approval (the unique constraint)."""
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(insert(_D).values(
                    workflow_id=workflow_id, step=step, approver=approver,
                    approver_key_id=key_id, verdict=verdict, reason=reason, decided_at=now))
        except IntegrityError:
            return False
        await self._conn.execute(update(_A).where(_A.c.workflow_id == workflow_id,
                                                  _A.c.step == step).values(updated_at=now))
        await self._touch(workflow_id, now)
        self._unit.notify.add(APPROVALS)
        return True

    async def close_approval(self, workflow_id: str, step: str, status: str, now: datetime) -> None:
        await self._conn.execute(update(_A).where(
            _A.c.workflow_id == workflow_id, _A.c.step == step, _A.c.status == "pending")
            .values(status=status, closed_at=now, updated_at=now))
        await self._touch(workflow_id, now)
        self._unit.notify.add(APPROVALS)

    async def due_approvals(self, now: datetime, limit: int = 100) -> list[tuple[str, str]]:
        """(workflow id, step) of pending approvals past their deadline."""
        q = (select(_A.c.workflow_id, _A.c.step)
             .where(_A.c.status == "pending", _A.c.expires_at <= now)
             .order_by(_A.c.expires_at).limit(limit))
        return [(r.workflow_id, r.step) for r in await self._conn.execute(q)]

    async def overdue(self, now: datetime, limit: int = 100) -> list[str]:
        """Ids of workflows still going past their deadline."""
        q = (select(_W.c.id).where(_W.c.state.in_(["RUNNING", "PENDING_APPROVAL"]),
                                   _W.c.deadline_at <= now)
             .order_by(_W.c.deadline_at).limit(limit))
        return [r.id for r in await self._conn.execute(q)]

    # -- state changes -----------------------------------------------------------------------

    async def _touch(self, workflow_id: str, now: datetime) -> None:
        await self._conn.execute(update(_W).where(_W.c.id == workflow_id)
                                 .values(version=_W.c.version + 1, updated_at=now))
        self._unit.notify_keys.add((RUN_EVENTS, workflow_id))

    async def _event(self, workflow_id: str, state: WorkflowState,
                     previous: WorkflowState | None, reason: str, actor: str,
                     now: datetime) -> None:
        """The workflow's next event (its outbox row), numbered from its ``last_seq``."""
        row = (await self._conn.execute(
            update(_W).where(_W.c.id == workflow_id)
            .values(last_seq=_W.c.last_seq + 1, version=_W.c.version + 1, updated_at=now)
            .returning(_W.c.last_seq, _W.c.name, _W.c.traceparent))).one()
        await self._conn.execute(insert(_E).values(
            workflow_id=workflow_id, seq=row.last_seq, state=state.value,
            previous_state=previous.value if previous else "", reason=reason, actor=actor,
            name=row.name, traceparent=row.traceparent, created_at=now))
        self._unit.notify_keys.add((RUN_EVENTS, workflow_id))

    async def set_state(self, wf: Workflow, state: WorkflowState, *, reason: str, actor: str,
                        now: datetime) -> None:
        """Move the workflow (locked by the caller) to ``state``, with its event."""
        values: dict[str, Any] = {"state": state.value, "reason": reason, "updated_at": now}
        if state.terminal:
            values["finished_at"] = now
        await self._conn.execute(update(_W).where(_W.c.id == wf.id).values(**values))
        await self._event(wf.id, state, wf.state, reason, actor, now)

    async def _set_step(self, workflow_id: str, name: str, now: datetime, **values: Any) -> None:
        """Change a step of a workflow this transaction locked (``_lock`` bumped its version)."""
        if values.get("state") in STEP_TERMINAL:
            values.setdefault("finished_at", now)
        await self._conn.execute(update(_S).where(_S.c.workflow_id == workflow_id,
                                                  _S.c.name == name).values(**values))
        self._unit.notify_keys.add((RUN_EVENTS, workflow_id))

    async def step_ended(self, run: Run, state: RunState, reason: str, now: datetime) -> None:
        """``run`` (a step) ended in ``state``: record it and advance its workflow.

        Called by ``RunRepository`` in the transaction that ended the run.
        """
        assert run.workflow_id and run.workflow_step
        wf = await self._lock(run.workflow_id)
        await self._set_step(run.workflow_id, run.workflow_step, now, state=state.value,
                             reason=reason)
        if wf is not None and wf.state is WorkflowState.RUNNING:
            await self.advance(wf, actor=run.lease_owner or "system", now=now)

    async def gate_closed(self, wf: Workflow, step: str, *, state: str, reason: str,
                          actor: str, now: datetime) -> None:
        """A gate's approval closed: the step is SUCCEEDED, REJECTED or EXPIRED; advance."""
        await self._set_step(wf.id, step, now, state=state, reason=reason)
        await self.advance(wf, actor=actor, now=now)

    async def _lock(self, workflow_id: str) -> Workflow | None:
        """The workflow row, locked until the transaction ends, without its steps.

        One round trip: the UPDATE that bumps its version (every caller is about to change
        it or one of its steps) takes the row lock and returns the row.
        """
        row = (await self._conn.execute(
            update(_W).where(_W.c.id == workflow_id).values(version=_W.c.version + 1)
            .returning(*_W.c))).first()
        if row is None:
            return None
        self._unit.notify_keys.add((RUN_EVENTS, workflow_id))
        return _workflow(row)

    async def lock(self, workflow_id: str) -> Workflow | None:
        """Lock the workflow row (PostgreSQL) and return it with its steps and approvals."""
        if await self._lock(workflow_id) is None:
            return None
        return await self.get(workflow_id)

    async def advance(self, wf: Workflow, *, actor: str, now: datetime) -> None:
        """Apply the next moves of a RUNNING workflow (locked by the caller) until none is left:
        start the ready steps, or end the workflow."""
        while True:
            steps = await self._steps(wf.id, outputs=True)
            order = topological_order({s.name: s.plan.depends_on for s in steps})
            by_name = {s.name: s for s in steps}
            moves = next_moves({s.name: StepStatus(s.state, s.plan.depends_on, s.plan.on_failure,
                                                   s.reason) for s in steps}, order)
            if moves.end is not None:
                await self.finish(wf, moves.end, reason=moves.reason, actor=actor, now=now)
                return
            if not moves.ready:
                return
            failed_at_start = False
            # Step name -> parsed output, for the steps whose run succeeded.
            outputs = {s.name: json.loads(s.output_json) for s in steps if s.output_json}
            for name in moves.ready:
                p = by_name[name].plan
                if p.gate:
                    await self.open_approval(wf.id, name, required=max(1, p.gate_approvals),
                                             now=now,
                                             expires_at=now + timedelta(seconds=p.gate_expires_seconds))
                    await self._set_step(wf.id, name, now, state=PENDING_APPROVAL,
                                         reason="waiting for approval", started_at=now)
                    continue
                problem = ""
                try:
                    payload = resolve(p.input_template, outputs)
                    error = first_error(p.input_schema or {}, payload)
                    if error is not None:
                        problem = (f"resolved input does not match the input schema at "
                                   f"{error.json_path}: {error.message[:500]}")
                except UnresolvedReference as e:
                    problem = f"reference {e}"
                except UnsupportedPattern as e:
                    problem = f"the input schema cannot be applied: {e}"
                if problem:
                    await self._set_step(wf.id, name, now, state="FAILED", reason=problem,
                                         started_at=now)
                    failed_at_start = True
                    continue
                run = await self._start_run(wf, p, payload, now)
                await self._set_step(wf.id, name, now, state=QUEUED, run_id=run.id,
                                     reason="", started_at=now)
            if not failed_at_start:
                return

    async def _start_run(self, wf: Workflow, p: PlannedStep, payload: Any, now: datetime) -> Run:
        assert p.limits is not None and p.output_schema is not None
        return await self._runs.insert(NewRun(
            id=new_run_id(), agent=p.agent, version=p.version, capability=p.capability,
            state=RunState.QUEUED, reason=f"step {p.name} of workflow {wf.id} is ready",
            effective_risk=p.risk, risk_reasons=p.risk_reasons, submitter=wf.submitter,
            submitter_key_id=wf.submitter_key_id, idempotency_key=None,
            request_hash=wf.plan_digest,
            input_json=json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
            network=p.network, secrets=p.secrets, limits=p.limits, image=p.image,
            entrypoint=p.entrypoint, output_schema=p.output_schema,
            max_attempts=wf.max_attempts, traceparent=wf.traceparent, created_at=now,
            workflow_id=wf.id, workflow_step=p.name), actor="system")

    async def finish(self, wf: Workflow, state: WorkflowState, *, reason: str, actor: str,
                     now: datetime) -> None:
        """End the workflow (locked by the caller) in ``state``: close its open approvals,
        skip the steps that never started, cancel the active runs no one else holds."""
        await self.set_state(wf, state, reason=reason, actor=actor, now=now)
        for a in await self._approvals([wf.id]):
            if a.status == "pending":
                await self.close_approval(wf.id, a.step, "cancelled", now)
        why = f"workflow {wf.id} {state.value.lower()}: {reason}"
        await self._conn.execute(update(_S).where(
            _S.c.workflow_id == wf.id, _S.c.state.in_([WAITING, PENDING_APPROVAL]))
            .values(state=SKIPPED, reason=why, finished_at=now))
        q = select(_R.c.id).where(_R.c.workflow_id == wf.id, _R.c.state.in_(_ACTIVE_RUN))
        if self._unit.pg:
            q = q.with_for_update(skip_locked=True)
        for r in list(await self._conn.execute(q)):
            run = await self._runs.get(r.id)
            if run is None or run.state.terminal:
                continue
            if run.state is RunState.RUNNING:
                await self._runs.request_cancel(run.id, now)
            else:
                await self._runs.transition(run, RunState.CANCELLED, reason=why, actor=actor,
                                            now=now)

    # -- outbox ------------------------------------------------------------------------------

    async def unpublished(self, limit: int) -> list[WorkflowEvent]:
        q = select(_E).where(_E.c.published_at.is_(None)).order_by(_E.c.id).limit(limit)
        if self._unit.pg:
            q = q.with_for_update(skip_locked=True)
        return [_event(r) for r in await self._conn.execute(q)]

    async def mark_published(self, event_ids: Sequence[int], now: datetime) -> None:
        if event_ids:
            await self._conn.execute(
                update(_E).where(_E.c.id.in_(list(event_ids))).values(published_at=now))
