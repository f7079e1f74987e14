"""Runs: submission, reads, and every change of a run's state.

``transition`` is the one place a run's state changes: it checks the state table, updates the
row guarded by the state and sequence it was read with, and appends the run's next event
(the outbox) in the same transaction. The executor's operations (``lease``,
``record_outcome``, ``requeue``, ``fail_lost``) are built on it and say what they mean
instead of naming columns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from agents.limits import Limits
from agents.manifest import Risk
from server.domain.digests import logs_digest, output_digest, with_digests
from server.domain.errors import IllegalTransition
from server.domain.models import AttemptResult, NewRun, Run, RunResult
from server.domain.states import OUTCOME_STATES, RunState, check_transition
from server.store import tables as t
from server.store.base import Duplicate, Repository, Unit
from server.store.events import EventRepository
from server.store.notify import RUN_EVENTS

_R = t.runs
# Columns of `runs` that are not needed to describe a run (kept out of hot reads).
_RUN_HEAVY = {"logs", "output_json", "error_code", "error_message", "logs_truncated"}
_RUN_COLS = [c for c in _R.c if c.name not in _RUN_HEAVY]

# Hot statements, built once: building a select of ~35 columns and its cache key on every
# call cost more CPU than the round trip itself. Parameters are bound at execution.
_SELECT_RUN = select(*_RUN_COLS).where(_R.c.id == bindparam("run_id"))
_SELECT_RUN_LOCKED = _SELECT_RUN.with_for_update()
_INSERT_RUN = insert(_R).returning(*_RUN_COLS)


class _Changes(TypedDict, total=False):
    """Columns a transition may set besides the state (names of ``runs`` and of ``Run``)."""

    attempt: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    started_at: datetime
    finished_at: datetime | None
    executor_id: str
    cancel_requested: bool
    # The attempt's result (columns only: ``Run`` does not carry them).
    output_json: str | None
    error_code: str
    error_message: str
    exit_code: int | None
    logs: bytes
    logs_truncated: bool
    peak_memory_bytes: int | None
    duration_seconds: float | None
    cpu_seconds: float | None
    output_bytes: int | None
    log_bytes: int | None
    output_sha256: str
    logs_sha256: str


_RESULT_ONLY = frozenset({"output_json", "error_code", "error_message", "logs", "logs_truncated"})
_RELEASE: _Changes = {"lease_owner": None, "lease_expires_at": None}


def _run(r: Row[Any]) -> Run:
    return Run(
        id=r.id, agent=r.agent_name, version=r.version, capability=r.capability,
        state=RunState(r.state), reason=r.reason, effective_risk=Risk(r.effective_risk),
        risk_reasons=tuple(r.risk_reasons), submitter=r.submitter,
        submitter_key_id=r.submitter_key_id, idempotency_key=r.idempotency_key,
        request_hash=r.request_hash, input_json=r.input_json, network=r.network,
        secrets=tuple(r.secrets), limits=Limits(**r.limits), image=r.image,
        entrypoint=tuple(r.entrypoint) if r.entrypoint is not None else None,
        output_schema=r.output_schema, attempt=r.attempt, max_attempts=r.max_attempts,
        last_seq=r.last_seq, traceparent=r.traceparent, created_at=r.created_at,
        updated_at=r.updated_at, started_at=r.started_at, finished_at=r.finished_at,
        cancel_requested=r.cancel_requested, lease_owner=r.lease_owner,
        lease_expires_at=r.lease_expires_at, executor_id=r.executor_id, exit_code=r.exit_code,
        peak_memory_bytes=r.peak_memory_bytes, duration_seconds=r.duration_seconds,
        cpu_seconds=r.cpu_seconds, output_bytes=r.output_bytes, log_bytes=r.log_bytes,
        workflow_id=r.workflow_id, workflow_step=r.workflow_step,
        input_sha256=r.input_sha256, action_digest=r.action_digest,
        output_sha256=r.output_sha256, logs_sha256=r.logs_sha256, chain_seq=r.chain_seq,
        chain_head=r.chain_head,
    )


def _run_of_new(new: NewRun) -> Run:
    """``new`` as the run it becomes (what its first event is linked from)."""
    return Run(
        id=new.id, agent=new.agent, version=new.version, capability=new.capability,
        state=new.state, reason=new.reason, effective_risk=new.effective_risk,
        risk_reasons=new.risk_reasons, submitter=new.submitter,
        submitter_key_id=new.submitter_key_id, idempotency_key=new.idempotency_key,
        request_hash=new.request_hash, input_json=new.input_json, network=new.network,
        secrets=new.secrets, limits=new.limits, image=new.image, entrypoint=new.entrypoint,
        output_schema=new.output_schema, attempt=0, max_attempts=new.max_attempts, last_seq=0,
        traceparent=new.traceparent, created_at=new.created_at, updated_at=new.created_at,
        started_at=None, finished_at=None, cancel_requested=False, lease_owner=None,
        lease_expires_at=None, executor_id=None, exit_code=None, peak_memory_bytes=None,
        duration_seconds=None, input_sha256=new.input_sha256, action_digest=new.action_digest,
        workflow_id=new.workflow_id, workflow_step=new.workflow_step)


def _insert_params(new: NewRun) -> dict[str, Any]:
    return dict(
        id=new.id, agent_name=new.agent, version=new.version, capability=new.capability,
        state=new.state.value, reason=new.reason, effective_risk=int(new.effective_risk),
        risk_reasons=list(new.risk_reasons), submitter=new.submitter,
        submitter_key_id=new.submitter_key_id, idempotency_key=new.idempotency_key,
        request_hash=new.request_hash, input_json=new.input_json, network=new.network,
        secrets=list(new.secrets), limits=new.limits.as_dict(), image=new.image,
        entrypoint=list(new.entrypoint) if new.entrypoint is not None else None,
        output_schema=new.output_schema, attempt=0, max_attempts=new.max_attempts, last_seq=1,
        traceparent=new.traceparent, created_at=new.created_at, updated_at=new.created_at,
        cancel_requested=False, workflow_id=new.workflow_id, workflow_step=new.workflow_step,
        input_sha256=new.input_sha256, action_digest=new.action_digest,
    )


def _result_changes(result: AttemptResult) -> _Changes:
    return {"output_json": result.output_json, "error_code": result.error_code,
            "error_message": result.error_message, "exit_code": result.exit_code,
            "logs": result.logs, "logs_truncated": result.logs_truncated,
            "peak_memory_bytes": result.peak_memory_bytes,
            "duration_seconds": result.duration_seconds, "cpu_seconds": result.cpu_seconds,
            "output_bytes": result.output_bytes, "log_bytes": result.log_bytes,
            "output_sha256": output_digest(result.output_json),
            "logs_sha256": logs_digest(result.logs)}


# What an event attests when its change stored an attempt's result.
_ATTESTED = ("output_sha256", "logs_sha256")


# Called in the transaction that ended a workflow step's run (run, its end state, reason, now).
StepEnded = Callable[[Run, RunState, str, datetime], Awaitable[None]]


class RunRepository(Repository):
    """``runs`` (and, through ``transition``, their events)."""

    __slots__ = ("_events", "step_ended")

    def __init__(self, unit: Unit, events: EventRepository) -> None:
        super().__init__(unit)
        self._events = events
        # Set by the unit of work: advances the run's workflow (``WorkflowRepository``).
        self.step_ended: StepEnded | None = None

    # -- submission and reads ----------------------------------------------------------------

    async def insert(self, new: NewRun, *, actor: str) -> Run:
        """Store a submitted run and its first event (sequence 1).

        Raises ``Duplicate`` when the (submitter, idempotency key) pair exists; the transaction
        stays usable (with a key, the insert runs in a savepoint).
        """
        new = with_digests(new)  # a workflow's step comes without them
        params = _insert_params(new)
        # The submit event is linked first, so the run row is written with its chain head.
        blank = _run_of_new(new)
        event = self._events.prepare(
            blank, seq=1, state=new.state, previous=None, reason=new.reason, attempt=0,
            actor=actor, now=new.created_at,
            attest={"input_sha256": new.input_sha256, "action_digest": new.action_digest})
        params.update(chain_seq=event.chain_seq, chain_head=event.hash)
        try:
            if new.idempotency_key is None:
                # No key, no expected conflict: skip the savepoint's two round trips.
                row = (await self._conn.execute(_INSERT_RUN, params)).one()
            else:
                async with self._conn.begin_nested():
                    row = (await self._conn.execute(_INSERT_RUN, params)).one()
        except IntegrityError as e:
            raise Duplicate(str(e.orig)) from e
        run = _run(row)
        await self._events.insert(event, head_stored=True, workflow_id=run.workflow_id)
        return run

    async def get(self, run_id: str, *, lock: bool = False) -> Run | None:
        """The run, or None. ``lock``: hold it until the transaction ends (PostgreSQL)."""
        q = _SELECT_RUN_LOCKED if lock and self._unit.pg else _SELECT_RUN
        row = (await self._conn.execute(q, {"run_id": run_id})).first()
        return _run(row) if row else None

    async def get_many(self, run_ids: Sequence[str]) -> dict[str, Run]:
        if not run_ids:
            return {}
        rows = await self._conn.execute(select(*_RUN_COLS).where(_R.c.id.in_(list(run_ids))))
        return {r.id: _run(r) for r in rows}

    async def find_by_idempotency_key(self, submitter: str, key: str) -> Run | None:
        row = (await self._conn.execute(
            select(*_RUN_COLS).where(_R.c.submitter == submitter, _R.c.idempotency_key == key)
        )).first()
        return _run(row) if row else None

    async def find(self, *, agent: str = "", states: Sequence[RunState] = (),
                   submitter: str = "", before_id: str = "", limit: int,
                   visible_to: str = "", or_asked_approval: bool = False) -> list[Run]:
        """Newest first; empty filters match everything.

        ``visible_to``: only runs that owner submitted, and (``or_asked_approval``) runs that
        asked for approval (a read scope, ``server.domain.principal.Scope``).
        """
        q = select(*_RUN_COLS).order_by(_R.c.id.desc()).limit(limit)
        if visible_to:
            own = _R.c.submitter == visible_to
            if or_asked_approval:
                asked = select(t.approvals.c.run_id).where(t.approvals.c.run_id == _R.c.id).exists()
                q = q.where(or_(own, asked))
            else:
                q = q.where(own)
        if agent:
            q = q.where(_R.c.agent_name == agent)
        if states:
            q = q.where(_R.c.state.in_([s.value for s in states]))
        if submitter:
            q = q.where(_R.c.submitter == submitter)
        if before_id:
            q = q.where(_R.c.id < before_id)
        return [_run(r) for r in await self._conn.execute(q)]

    async def result(self, run_id: str) -> RunResult | None:
        """The run with its last attempt's output, error and logs."""
        row = (await self._conn.execute(select(_R).where(_R.c.id == run_id))).first()
        if row is None:
            return None
        return RunResult(run=_run(row), output_json=row.output_json, error_code=row.error_code,
                         error_message=row.error_message, logs=row.logs or b"",
                         logs_truncated=row.logs_truncated)

    async def page_for_audit(self, after_id: str, limit: int, *, only: str = "") -> list[RunResult]:
        """Runs after ``after_id`` in id order (or only run ``only``), with output and logs
        (verification)."""
        q = select(_R).where(_R.c.id > after_id).order_by(_R.c.id).limit(limit)
        if only:
            q = q.where(_R.c.id == only)
        rows = await self._conn.execute(q)
        return [RunResult(run=_run(r), output_json=r.output_json, error_code=r.error_code,
                          error_message=r.error_message, logs=r.logs or b"",
                          logs_truncated=r.logs_truncated) for r in rows]

    async def chain_heads(self) -> list[tuple[str, int, str]]:
        """(chain, position, hash) of every run's chain head, in run id order."""
        rows = await self._conn.execute(
            select(_R.c.id, _R.c.chain_seq, _R.c.chain_head).order_by(_R.c.id))
        return [(f"run:{r.id}", r.chain_seq, r.chain_head) for r in rows]

    async def store_chain_head(self, run_id: str, seq: int, head: str) -> None:
        await self._conn.execute(update(_R).where(_R.c.id == run_id)
                                 .values(chain_seq=seq, chain_head=head))

    async def count(self, state: RunState | None = None) -> int:
        """How many runs there are (in ``state``): the queue depth for QUEUED."""
        q = select(func.count()).select_from(_R)
        if state is not None:
            q = q.where(_R.c.state == state.value)
        return int((await self._conn.execute(q)).scalar_one())

    # -- state changes -----------------------------------------------------------------------

    async def transition(self, run: Run, target: RunState, *, reason: str, actor: str,
                         now: datetime) -> Run:
        """Move ``run`` (read with ``lock=True`` in this transaction) to ``target``."""
        return await self._transition(run, target, reason=reason, actor=actor, now=now)

    async def _transition(self, run: Run, target: RunState, *, reason: str, actor: str,
                          now: datetime, changes: _Changes | None = None) -> Run:
        """The one place a run's state changes.

        Checks the state table, updates the row (plus ``changes``) guarded by the state and
        sequence we read, and appends the run's next event.
        """
        check_transition(run.id, run.state, target)
        seq = run.last_seq + 1
        extra: dict[str, Any] = dict(changes or {})
        if target.terminal and "finished_at" not in extra:
            extra["finished_at"] = now
        attempt = extra.get("attempt", run.attempt)
        event = self._events.prepare(run, seq=seq, state=target, previous=run.state,
                                     reason=reason, attempt=attempt, actor=actor, now=now,
                                     attest={k: extra[k] for k in _ATTESTED if k in extra})
        res = await self._conn.execute(
            update(_R).where(_R.c.id == run.id, _R.c.state == run.state.value,
                             _R.c.last_seq == run.last_seq)
            .values(state=target.value, reason=reason, last_seq=seq, updated_at=now,
                    chain_seq=event.chain_seq, chain_head=event.hash, **extra))
        if res.rowcount != 1:  # another transaction changed it first (SQLite has no FOR UPDATE)
            current = await self.get(run.id)
            raise IllegalTransition(run.id, current.state.value if current else "gone",
                                    target.value)
        await self._events.insert(event, head_stored=True, workflow_id=run.workflow_id)
        moved = {k: v for k, v in extra.items() if k not in _RESULT_ONLY}
        after = replace(run, state=target, reason=reason, last_seq=seq, updated_at=now,
                        chain_seq=event.chain_seq, chain_head=event.hash, **moved)
        if target.terminal:
            self._unit.finished.append((after, target.value, reason))
        if target.terminal and run.workflow_id and self.step_ended is not None:
            # The steps this one unblocks are queued in this same transaction: no step
            # starts twice or never, whoever (executor, cancel, lapse recovery) ended it.
            await self.step_ended(after, target, reason, now)
        return after

    async def request_cancel(self, run_id: str, now: datetime) -> None:
        """Ask the executor holding a RUNNING run to stop it (it records CANCELLED)."""
        await self._conn.execute(
            update(_R).where(_R.c.id == run_id).values(cancel_requested=True, updated_at=now))
        self._unit.notify.add(RUN_EVENTS)

    # -- the executor's side -----------------------------------------------------------------

    async def next_queued(self, limit: int, *, network: bool | None = None) -> list[Run]:
        """Lock up to ``limit`` queued runs, oldest first, skipping rows others hold.

        ``network``: None takes any run; True only runs granted egress; False only others.
        """
        q = (select(*_RUN_COLS).where(_R.c.state == RunState.QUEUED.value)
             .order_by(_R.c.id).limit(limit))
        if network is not None:
            q = q.where(_R.c.network.is_(network))
        if self._unit.pg:
            q = q.with_for_update(skip_locked=True)
        return [_run(r) for r in await self._conn.execute(q)]

    async def lease(self, run: Run, *, executor_id: str, until: datetime, now: datetime) -> Run:
        """Start ``run``'s next attempt on ``executor_id``, leased until ``until`` (RUNNING)."""
        attempt = run.attempt + 1
        return await self._transition(
            run, RunState.RUNNING, reason=f"running on {executor_id} (attempt {attempt})",
            actor=executor_id, now=now,
            changes={"attempt": attempt, "lease_owner": executor_id, "lease_expires_at": until,
                     "started_at": now, "executor_id": executor_id, "cancel_requested": False})

    async def record_outcome(self, run: Run, state: RunState, *, reason: str,
                             result: AttemptResult, actor: str, now: datetime) -> Run:
        """Store the attempt's result, end the run in outcome ``state``, release the lease."""
        if state not in OUTCOME_STATES:
            raise ValueError(f"{state} is not a run outcome")
        return await self._transition(run, state, reason=reason, actor=actor, now=now,
                                      changes={**_result_changes(result), **_RELEASE})

    async def requeue(self, run: Run, *, reason: str, actor: str, now: datetime,
                      result: AttemptResult | None = None) -> Run:
        """Put a RUNNING run back in the queue (its executor stopped or lost the lease),
        releasing the lease; ``result``: what the interrupted attempt left, if anything."""
        changes: _Changes = {**_RELEASE, "finished_at": None}
        if result is not None:
            changes.update(_result_changes(result))
        return await self._transition(run, RunState.QUEUED, reason=reason, actor=actor, now=now,
                                      changes=changes)

    async def fail_lost(self, run: Run, *, reason: str, actor: str, now: datetime) -> Run:
        """FAILED with error code LOST: its lease lapsed with no attempts left."""
        return await self._transition(run, RunState.FAILED, reason=reason, actor=actor, now=now,
                                      changes={**_RELEASE, "error_code": "LOST"})

    async def extend_leases(self, executor_id: str, run_ids: Sequence[str],
                            until: datetime) -> list[str]:
        """Extend our leases; return the ids we still hold (RUNNING and ours)."""
        if not run_ids:
            return []
        ours = (_R.c.id.in_(list(run_ids)), _R.c.lease_owner == executor_id,
                _R.c.state == RunState.RUNNING.value)
        await self._conn.execute(update(_R).where(*ours).values(lease_expires_at=until))
        rows = await self._conn.execute(select(_R.c.id).where(*ours))
        return [r.id for r in rows]

    async def to_stop(self, run_ids: Sequence[str]) -> set[str]:
        """Which of ``run_ids`` should stop: cancel requested, no longer RUNNING, or a step
        of a workflow that has ended (its cancel found the run being leased, so could not
        ask it directly)."""
        if not run_ids:
            return set()
        w = t.workflows
        ended = (select(w.c.id).where(w.c.id == _R.c.workflow_id,
                                      w.c.state.not_in(["RUNNING", "PENDING_APPROVAL"]))
                 .exists())
        rows = await self._conn.execute(select(_R.c.id).where(
            _R.c.id.in_(list(run_ids)),
            or_(_R.c.cancel_requested.is_(True), _R.c.state != RunState.RUNNING.value,
                _R.c.workflow_id.is_not(None) & ended)))
        return {r.id for r in rows}

    async def lapsed(self, now: datetime, limit: int = 100) -> list[Run]:
        """RUNNING runs whose lease expired before ``now``, locked (skipping held rows)."""
        q = (select(*_RUN_COLS).where(_R.c.state == RunState.RUNNING.value,
                                      _R.c.lease_expires_at < now)
             .order_by(_R.c.lease_expires_at).limit(limit))
        if self._unit.pg:
            q = q.with_for_update(skip_locked=True)
        return [_run(r) for r in await self._conn.execute(q)]
