"""The store: a unit of work (``Tx``) whose methods are named after what the domain wants.

Services open transactions (``async with store.transaction() as tx``); nothing above this
module builds SQL. Every run state change goes through ``Tx.transition`` which checks the
state table, bumps the per-run sequence and writes the ``run_events`` row (the outbox) in the
same transaction.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agents.limits import Limits
from agents.manifest import Manifest, Risk, parse_manifest
from server.domain.models import (
    Agent,
    AgentVersion,
    ApiKey,
    Approval,
    Decision,
    ExecutorInfo,
    Run,
    RunEvent,
    RunResult,
)
from server.domain.principal import Role
from server.domain.states import RunState, check_transition
from server.store import tables as t
from server.store.notify import APPROVALS, RUN_EVENTS, RUNS_QUEUED, Notifier
from server.telemetry import metrics_api, run_ended


class Duplicate(Exception):
    """A unique constraint refused the row (the caller decides what that means)."""


# --- page tokens (opaque to clients) -----------------------------------------------------------


def encode_token(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=") if value else ""


def decode_token(token: str) -> str:
    """Raises ValueError on a token we did not make."""
    if not token:
        return ""
    try:
        value = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except Exception as e:
        raise ValueError("not a page token from this server") from e
    # Tokens hold ids and names (printable ASCII); anything else, such as a NUL that
    # PostgreSQL refuses in a text parameter, was not made here.
    if not value or len(value) > 200 or not all("\x21" <= ch <= "\x7e" for ch in value):
        raise ValueError("not a page token from this server")
    return value


# --- row mapping --------------------------------------------------------------------------------


_MANIFESTS: dict[str, Manifest] = {}


def _manifest(doc: Any) -> Manifest:
    """Parse a stored manifest, once per distinct document (keyed by its content).

    Parsing re-validates every capability's JSON Schema against the meta-schema, which cost
    milliseconds on every read of a version; a manifest's content never changes, and the
    parsed model is frozen, so equal documents can share one parse.
    """
    key = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    m = _MANIFESTS.get(key)
    if m is None:
        m = parse_manifest(doc)
        if len(_MANIFESTS) >= 1024:
            _MANIFESTS.clear()
        _MANIFESTS[key] = m
    return m


def _version(r: Row[Any]) -> AgentVersion:
    return AgentVersion(
        agent=r.agent_name, version=r.version, image=r.image, image_digest=r.image_digest,
        risk=Risk(r.risk), manifest=_manifest(r.manifest), deprecated=r.deprecated,
        deprecation_reason=r.deprecation_reason, created_at=r.created_at, created_by=r.created_by,
    )


def _make_agent(name: str, description: str, created_at: datetime,
                versions: Sequence[AgentVersion]) -> Agent:
    live = [v.version for v in versions if not v.deprecated]
    return Agent(name=name, description=description, created_at=created_at,
                 versions=tuple(v.version for v in versions),
                 latest_version=live[-1] if live else "")


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
    )


def _event(r: Row[Any]) -> RunEvent:
    return RunEvent(
        id=r.id, run_id=r.run_id, seq=r.seq, state=RunState(r.state),
        previous_state=RunState(r.previous_state) if r.previous_state else None, reason=r.reason,
        attempt=r.attempt, actor=r.actor, agent=r.agent_name, version=r.version,
        capability=r.capability, traceparent=r.traceparent, created_at=r.created_at,
        published_at=r.published_at,
    )


def _key(r: Row[Any]) -> ApiKey:
    return ApiKey(id=r.id, owner=r.owner, role=Role(r.role), created_at=r.created_at,
                  revoked_at=r.revoked_at)


def _executor(r: Row[Any]) -> ExecutorInfo:
    return ExecutorInfo(id=r.id, host=r.host, runtime=r.runtime, slots=r.slots,
                        slots_in_use=r.slots_in_use, started_at=r.started_at,
                        heartbeat_at=r.heartbeat_at, stopped_at=r.stopped_at)


# Columns of `runs` that are not needed to describe a run (kept out of hot reads).
_RUN_HEAVY = {"logs", "output_json", "error_code", "error_message", "logs_truncated"}
_RUN_COLS = [c for c in t.runs.c if c.name not in _RUN_HEAVY]

# Hot statements, built once: building a select of ~35 columns and its cache key on every
# call cost more CPU than the round trip itself. Parameters are bound at execution.
_AV = t.agent_versions
_SELECT_AGENT_AND_VERSIONS = (  # one round trip; version columns are NULL if it has none
    select(t.agents.c.description.label("agent_description"),
           t.agents.c.created_at.label("agent_created_at"), *_AV.c)
    .select_from(t.agents.outerjoin(_AV, _AV.c.agent_name == t.agents.c.name))
    .where(t.agents.c.name == bindparam("name")).order_by(_AV.c.id))
_SELECT_VERSIONS = select(_AV).where(_AV.c.agent_name == bindparam("name")).order_by(_AV.c.id)
_SELECT_VERSION = select(_AV).where(_AV.c.agent_name == bindparam("name"),
                                    _AV.c.version == bindparam("version")).limit(1)
_SELECT_LATEST_VERSION = (select(_AV).where(_AV.c.agent_name == bindparam("name"),
                                            _AV.c.deprecated.is_(False))
                          .order_by(_AV.c.id.desc()).limit(1))
_SELECT_RUN = select(*_RUN_COLS).where(t.runs.c.id == bindparam("run_id"))
_SELECT_RUN_LOCKED = _SELECT_RUN.with_for_update()
_INSERT_RUN = insert(t.runs).returning(*_RUN_COLS)
_INSERT_EVENT = insert(t.run_events)
_INSERT_AUDIT = insert(t.audit_log)
# Advisory lock key of the events relay: the bytes "airlock" + 0x01 as a signed 64-bit int.
OUTBOX_LOCK_KEY = int.from_bytes(b"airlock\x01", "big", signed=True)
_TRY_OUTBOX_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")


class Tx:
    """One database transaction. Obtain it from ``Store.transaction()``."""

    def __init__(self, conn: AsyncConnection, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect
        self.notify: set[str] = set()
        # Runs that entered a terminal state, with that state and reason (metrics and the
        # run span, after the commit).
        self.finished: list[tuple[Run, str, str]] = []

    @property
    def _pg(self) -> bool:
        return self.dialect == "postgresql"

    # -- registry --------------------------------------------------------------------------

    async def get_agent(self, name: str) -> Agent | None:
        found = await self.get_agent_and_versions(name)
        return found[0] if found else None

    async def get_agent_and_versions(self, name: str) -> tuple[Agent, list[AgentVersion]] | None:
        rows = list(await self.conn.execute(_SELECT_AGENT_AND_VERSIONS, {"name": name}))
        if not rows:
            return None
        versions = [_version(r) for r in rows if r.id is not None]
        return _make_agent(name, rows[0].agent_description, rows[0].agent_created_at,
                           versions), versions

    @staticmethod
    def _agent(row: Row[Any], versions: Sequence[AgentVersion]) -> Agent:
        return _make_agent(row.name, row.description, row.created_at, versions)

    async def insert_agent(self, *, name: str, description: str, by: str, now: datetime) -> None:
        await self.conn.execute(
            insert(t.agents).values(name=name, description=description, created_at=now, created_by=by)
        )

    async def update_agent_description(self, name: str, description: str) -> None:
        await self.conn.execute(
            update(t.agents).where(t.agents.c.name == name).values(description=description)
        )

    async def list_versions(self, name: str) -> list[AgentVersion]:
        rows = await self.conn.execute(_SELECT_VERSIONS, {"name": name})
        return [_version(r) for r in rows]

    async def get_version(self, name: str, version: str) -> AgentVersion | None:
        """``version == ""`` means the newest version that is not deprecated."""
        if version:
            q = self.conn.execute(_SELECT_VERSION, {"name": name, "version": version})
        else:
            q = self.conn.execute(_SELECT_LATEST_VERSION, {"name": name})
        row = (await q).first()
        return _version(row) if row else None

    async def insert_version(self, v: AgentVersion) -> None:
        await self.conn.execute(insert(t.agent_versions).values(
            agent_name=v.agent, version=v.version, image=v.image, image_digest=v.image_digest,
            risk=int(v.risk), manifest=v.manifest.to_json(), deprecated=False,
            deprecation_reason="", created_at=v.created_at, created_by=v.created_by,
        ))

    async def deprecate_version(self, name: str, version: str, reason: str) -> None:
        await self.conn.execute(
            update(t.agent_versions)
            .where(t.agent_versions.c.agent_name == name, t.agent_versions.c.version == version)
            .values(deprecated=True, deprecation_reason=reason)
        )

    async def list_agents(self, *, prefix: str, after: str, limit: int) -> list[Agent]:
        q = select(t.agents).order_by(t.agents.c.name).limit(limit)
        if prefix:
            q = q.where(t.agents.c.name.startswith(prefix, autoescape=True))
        if after:
            q = q.where(t.agents.c.name > after)
        rows = list(await self.conn.execute(q))
        if not rows:
            return []
        vrows = await self.conn.execute(
            select(t.agent_versions).where(t.agent_versions.c.agent_name.in_([r.name for r in rows]))
            .order_by(t.agent_versions.c.id)
        )
        by_agent: dict[str, list[AgentVersion]] = {}
        for vr in vrows:
            by_agent.setdefault(vr.agent_name, []).append(_version(vr))
        return [self._agent(r, by_agent.get(r.name, [])) for r in rows]

    # -- runs --------------------------------------------------------------------------------

    async def insert_run(self, values: dict[str, Any]) -> Run:
        """Insert and return the run. Raises ``Duplicate`` when the (submitter, idempotency
        key) pair exists (the transaction stays usable: the insert runs in a savepoint)."""
        try:
            if values.get("idempotency_key") is None:
                # No key, no expected conflict: skip the savepoint's two round trips.
                row = (await self.conn.execute(_INSERT_RUN, values)).one()
            else:
                async with self.conn.begin_nested():
                    row = (await self.conn.execute(_INSERT_RUN, values)).one()
        except IntegrityError as e:
            raise Duplicate(str(e.orig)) from e
        return _run(row)

    async def find_run_by_idempotency_key(self, submitter: str, key: str) -> Run | None:
        row = (await self.conn.execute(
            select(*_RUN_COLS).where(t.runs.c.submitter == submitter, t.runs.c.idempotency_key == key)
        )).first()
        return _run(row) if row else None

    async def get_run(self, run_id: str, *, lock: bool = False) -> Run | None:
        q = _SELECT_RUN_LOCKED if lock and self._pg else _SELECT_RUN
        row = (await self.conn.execute(q, {"run_id": run_id})).first()
        return _run(row) if row else None

    async def get_runs(self, run_ids: Sequence[str]) -> dict[str, Run]:
        if not run_ids:
            return {}
        rows = await self.conn.execute(select(*_RUN_COLS).where(t.runs.c.id.in_(list(run_ids))))
        return {r.id: _run(r) for r in rows}

    async def list_runs(
        self, *, agent: str, states: Sequence[RunState], submitter: str, before_id: str, limit: int
    ) -> list[Run]:
        q = select(*_RUN_COLS).order_by(t.runs.c.id.desc()).limit(limit)
        if agent:
            q = q.where(t.runs.c.agent_name == agent)
        if states:
            q = q.where(t.runs.c.state.in_([s.value for s in states]))
        if submitter:
            q = q.where(t.runs.c.submitter == submitter)
        if before_id:
            q = q.where(t.runs.c.id < before_id)
        return [_run(r) for r in await self.conn.execute(q)]

    async def get_result(self, run_id: str) -> RunResult | None:
        row = (await self.conn.execute(select(t.runs).where(t.runs.c.id == run_id))).first()
        if row is None:
            return None
        return RunResult(run=_run(row), output_json=row.output_json, error_code=row.error_code,
                         error_message=row.error_message, logs=row.logs or b"",
                         logs_truncated=row.logs_truncated)

    async def transition(
        self, run: Run, target: RunState, *, reason: str, actor: str, now: datetime,
        **changes: Any,
    ) -> Run:
        """Move ``run`` (read with ``lock=True`` in this transaction) to ``target``.

        Checks the state table, updates the row (plus ``changes``, column names of ``runs``)
        guarded by the state we read, and appends the run's next event.
        """
        check_transition(run.id, run.state, target)
        seq = run.last_seq + 1
        if target.terminal and "finished_at" not in changes:
            changes["finished_at"] = now
        values = {"state": target.value, "reason": reason, "last_seq": seq, "updated_at": now,
                  **changes}
        res = await self.conn.execute(
            update(t.runs).where(t.runs.c.id == run.id, t.runs.c.state == run.state.value,
                                 t.runs.c.last_seq == run.last_seq).values(**values)
        )
        if res.rowcount != 1:  # another transaction changed it first (SQLite has no FOR UPDATE)
            current = await self.get_run(run.id)
            raise_from = current.state.value if current else "gone"
            from server.domain.errors import IllegalTransition

            raise IllegalTransition(run.id, raise_from, target.value)
        attempt = changes.get("attempt", run.attempt)
        await self.conn.execute(insert(t.run_events).values(
            run_id=run.id, seq=seq, state=target.value, previous_state=run.state.value,
            reason=reason, attempt=attempt, actor=actor, agent_name=run.agent,
            version=run.version, capability=run.capability, traceparent=run.traceparent,
            created_at=now,
        ))
        self.notify.add(RUN_EVENTS)
        if target is RunState.QUEUED:
            self.notify.add(RUNS_QUEUED)
        if target.terminal:
            self.finished.append((run, target.value, reason))
        mapped = {k: v for k, v in changes.items() if k in Run.__dataclass_fields__}
        if "limits" in mapped:
            mapped["limits"] = Limits(**mapped["limits"])
        return replace(run, state=target, reason=reason, last_seq=seq, updated_at=now,
                       attempt=attempt, **{k: v for k, v in mapped.items() if k != "attempt"})

    async def first_event(self, run: Run, *, actor: str, now: datetime) -> None:
        """The submission event (sequence 1) of a freshly inserted run."""
        await self.conn.execute(_INSERT_EVENT, dict(
            run_id=run.id, seq=1, state=run.state.value, previous_state="", reason=run.reason,
            attempt=run.attempt, actor=actor, agent_name=run.agent, version=run.version,
            capability=run.capability, traceparent=run.traceparent, created_at=now,
        ))
        self.notify.add(RUN_EVENTS)
        if run.state is RunState.QUEUED:
            self.notify.add(RUNS_QUEUED)

    async def events_since(self, run_id: str, from_seq: int, limit: int = 500) -> list[RunEvent]:
        rows = await self.conn.execute(
            select(t.run_events).where(t.run_events.c.run_id == run_id, t.run_events.c.seq >= from_seq)
            .order_by(t.run_events.c.seq).limit(limit)
        )
        return [_event(r) for r in rows]

    async def set_cancel_requested(self, run_id: str, now: datetime) -> None:
        await self.conn.execute(
            update(t.runs).where(t.runs.c.id == run_id).values(cancel_requested=True, updated_at=now)
        )
        self.notify.add(RUN_EVENTS)

    # -- approvals ---------------------------------------------------------------------------

    async def insert_approval(self, run_id: str, *, required: int, now: datetime,
                              expires_at: datetime) -> None:
        await self.conn.execute(insert(t.approvals).values(
            run_id=run_id, status="pending", required=required, created_at=now,
            expires_at=expires_at, version=0, updated_at=now))
        self.notify.add(APPROVALS)

    async def get_approval(self, run_id: str, *, lock: bool = False) -> Approval | None:
        q = select(t.approvals).where(t.approvals.c.run_id == run_id)
        if lock and self._pg:
            q = q.with_for_update()
        row = (await self.conn.execute(q)).first()
        if row is None:
            return None
        return (await self._approvals([row]))[0]

    async def _approvals(self, rows: Sequence[Row[Any]]) -> list[Approval]:
        if not rows:
            return []
        drows = await self.conn.execute(
            select(t.approval_decisions).where(t.approval_decisions.c.run_id.in_([r.run_id for r in rows]))
            .order_by(t.approval_decisions.c.id)
        )
        decisions: dict[str, list[Decision]] = {}
        for d in drows:
            decisions.setdefault(d.run_id, []).append(
                Decision(approver=d.approver, verdict=d.verdict, reason=d.reason, decided_at=d.decided_at))
        return [Approval(run_id=r.run_id, status=r.status, required=r.required,
                         created_at=r.created_at, expires_at=r.expires_at, closed_at=r.closed_at,
                         version=r.version, updated_at=r.updated_at,
                         decisions=tuple(decisions.get(r.run_id, ()))) for r in rows]

    async def add_decision(self, run_id: str, *, approver: str, key_id: str, verdict: str,
                           reason: str, now: datetime) -> bool:
        """False if this approver already decided (the unique constraint says so)."""
        try:
            async with self.conn.begin_nested():
                await self.conn.execute(insert(t.approval_decisions).values(
                    run_id=run_id, approver=approver, approver_key_id=key_id, verdict=verdict,
                    reason=reason, decided_at=now))
        except IntegrityError:
            return False
        await self._touch_approval(run_id, now)
        return True

    async def _touch_approval(self, run_id: str, now: datetime, **values: Any) -> None:
        await self.conn.execute(update(t.approvals).where(t.approvals.c.run_id == run_id).values(
            version=t.approvals.c.version + 1, updated_at=now, **values))
        self.notify.add(APPROVALS)

    async def close_approval(self, run_id: str, status: str, now: datetime) -> None:
        await self._touch_approval(run_id, now, status=status, closed_at=now)

    async def list_approvals(
        self, *, statuses: Sequence[str], after_run_id: str, limit: int,
        not_submitted_by: str = "", not_decided_by: str = "",
    ) -> list[Approval]:
        q = (select(t.approvals).join(t.runs, t.runs.c.id == t.approvals.c.run_id)
             .where(t.approvals.c.status.in_(list(statuses)))
             .order_by(t.approvals.c.run_id).limit(limit))
        if after_run_id:
            q = q.where(t.approvals.c.run_id > after_run_id)
        if not_submitted_by:
            q = q.where(t.runs.c.submitter != not_submitted_by)
        if not_decided_by:
            decided = select(t.approval_decisions.c.run_id).where(
                t.approval_decisions.c.approver == not_decided_by)
            q = q.where(t.approvals.c.run_id.not_in(decided))
        return await self._approvals(list(await self.conn.execute(q)))

    async def approvals_updated_since(self, since: datetime) -> list[Approval]:
        rows = await self.conn.execute(
            select(t.approvals).where(t.approvals.c.updated_at >= since).order_by(t.approvals.c.updated_at))
        return await self._approvals(list(rows))

    async def due_approvals(self, now: datetime, limit: int = 100) -> list[str]:
        q = (select(t.approvals.c.run_id)
             .where(t.approvals.c.status == "pending", t.approvals.c.expires_at <= now)
             .order_by(t.approvals.c.expires_at).limit(limit))
        if self._pg:
            q = q.with_for_update(skip_locked=True)
        return [r.run_id for r in await self.conn.execute(q)]

    # -- keys --------------------------------------------------------------------------------

    async def insert_key(self, *, key_id: str, owner: str, role: Role, secret_hash: str,
                         now: datetime) -> ApiKey:
        await self.conn.execute(insert(t.api_keys).values(
            id=key_id, owner=owner, role=role.value, secret_hash=secret_hash, created_at=now))
        return ApiKey(id=key_id, owner=owner, role=role, created_at=now, revoked_at=None)

    async def get_key_with_hash(self, key_id: str) -> tuple[ApiKey, str] | None:
        row = (await self.conn.execute(select(t.api_keys).where(t.api_keys.c.id == key_id))).first()
        return (_key(row), row.secret_hash) if row else None

    async def list_keys(self) -> list[ApiKey]:
        return [_key(r) for r in await self.conn.execute(select(t.api_keys).order_by(t.api_keys.c.created_at))]

    async def revoke_key(self, key_id: str, now: datetime) -> None:
        await self.conn.execute(update(t.api_keys).where(t.api_keys.c.id == key_id,
                                                         t.api_keys.c.revoked_at.is_(None))
                                .values(revoked_at=now))

    async def count_active_admin_keys(self) -> int:
        return (await self.conn.execute(select(func.count()).select_from(t.api_keys).where(
            t.api_keys.c.role == Role.ADMIN.value, t.api_keys.c.revoked_at.is_(None)))).scalar_one()

    # -- audit -------------------------------------------------------------------------------

    async def audit(self, *, actor: str, action: str, target: str, now: datetime,
                    details: dict[str, Any] | None = None) -> None:
        await self.conn.execute(_INSERT_AUDIT, dict(
            at=now, actor=actor, action=action, target=target, details=details or {}))

    async def audit_entries(self, target: str | None = None) -> list[dict[str, Any]]:
        q = select(t.audit_log).order_by(t.audit_log.c.id)
        if target is not None:
            q = q.where(t.audit_log.c.target == target)
        return [dict(r._mapping) for r in await self.conn.execute(q)]

    # -- executors & leasing -----------------------------------------------------------------

    async def upsert_executor(self, info: ExecutorInfo) -> None:
        await self.conn.execute(delete(t.executors).where(t.executors.c.id == info.id))
        await self.conn.execute(insert(t.executors).values(
            id=info.id, host=info.host, runtime=info.runtime, slots=info.slots,
            slots_in_use=info.slots_in_use, started_at=info.started_at,
            heartbeat_at=info.heartbeat_at, stopped_at=info.stopped_at))

    async def executor_heartbeat(self, executor_id: str, *, slots_in_use: int, now: datetime,
                                 stopped: bool = False) -> None:
        values: dict[str, Any] = {"slots_in_use": slots_in_use, "heartbeat_at": now}
        if stopped:
            values["stopped_at"] = now
        await self.conn.execute(update(t.executors).where(t.executors.c.id == executor_id).values(**values))

    async def list_executors(self) -> list[ExecutorInfo]:
        rows = await self.conn.execute(select(t.executors).order_by(t.executors.c.id))
        return [_executor(r) for r in rows]

    async def drop_executors(self, *, stopped_before: datetime, heartbeat_before: datetime) -> int:
        """Delete executors that stopped before ``stopped_before``, or that never stopped but
        last heartbeat before ``heartbeat_before`` (lost); return how many."""
        e = t.executors.c
        result = await self.conn.execute(delete(t.executors).where(or_(
            and_(e.stopped_at.is_not(None), e.stopped_at < stopped_before),
            and_(e.stopped_at.is_(None), e.heartbeat_at < heartbeat_before))))
        return int(result.rowcount or 0)

    async def claim_queued(self, limit: int, *, network: bool | None = None) -> list[Run]:
        """Lock up to ``limit`` queued runs, oldest first, skipping rows others hold.

        ``network``: None takes any run; True only runs granted egress; False only others.
        """
        q = (select(*_RUN_COLS).where(t.runs.c.state == RunState.QUEUED.value)
             .order_by(t.runs.c.id).limit(limit))
        if network is not None:
            q = q.where(t.runs.c.network.is_(network))
        if self._pg:
            q = q.with_for_update(skip_locked=True)
        return [_run(r) for r in await self.conn.execute(q)]

    async def extend_leases(self, executor_id: str, run_ids: Sequence[str], until: datetime) -> list[str]:
        """Extend our leases; return the ids we still hold (RUNNING and ours)."""
        if not run_ids:
            return []
        await self.conn.execute(update(t.runs).where(
            t.runs.c.id.in_(list(run_ids)), t.runs.c.lease_owner == executor_id,
            t.runs.c.state == RunState.RUNNING.value).values(lease_expires_at=until))
        rows = await self.conn.execute(select(t.runs.c.id, t.runs.c.cancel_requested).where(
            t.runs.c.id.in_(list(run_ids)), t.runs.c.lease_owner == executor_id,
            t.runs.c.state == RunState.RUNNING.value))
        return [r.id for r in rows]

    async def cancel_requested_among(self, run_ids: Sequence[str]) -> set[str]:
        if not run_ids:
            return set()
        rows = await self.conn.execute(select(t.runs.c.id).where(
            t.runs.c.id.in_(list(run_ids)),
            or_(t.runs.c.cancel_requested.is_(True), t.runs.c.state != RunState.RUNNING.value)))
        return {r.id for r in rows}

    async def lapsed_runs(self, now: datetime, limit: int = 100) -> list[Run]:
        q = (select(*_RUN_COLS).where(t.runs.c.state == RunState.RUNNING.value,
                                      t.runs.c.lease_expires_at < now)
             .order_by(t.runs.c.lease_expires_at).limit(limit))
        if self._pg:
            q = q.with_for_update(skip_locked=True)
        return [_run(r) for r in await self.conn.execute(q)]

    async def save_result(self, run_id: str, **values: Any) -> None:
        await self.conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(**values))

    # -- outbox (events relay) ---------------------------------------------------------------

    async def unpublished_events(self, limit: int) -> list[RunEvent]:
        q = (select(t.run_events).where(t.run_events.c.published_at.is_(None))
             .order_by(t.run_events.c.id).limit(limit))
        if self._pg:
            q = q.with_for_update(skip_locked=True)
        return [_event(r) for r in await self.conn.execute(q)]

    async def try_lock_outbox(self) -> bool:
        """Take the relay's lock until this transaction ends; False if another relay holds it.

        PostgreSQL: a transaction-level advisory lock, so relays on several hosts publish one
        batch at a time, in id order (per-run order survives). SQLite: one relay process is
        supported, so always True.
        """
        if not self._pg:
            return True
        res = await self.conn.execute(_TRY_OUTBOX_LOCK, {"key": OUTBOX_LOCK_KEY})
        return bool(res.scalar_one())

    async def mark_published(self, event_ids: Sequence[int], now: datetime) -> None:
        if event_ids:
            await self.conn.execute(update(t.run_events).where(
                t.run_events.c.id.in_(list(event_ids))).values(published_at=now))

    async def count(self, table: str, **where: Any) -> int:
        tbl = t.metadata.tables[table]
        cond = and_(*(tbl.c[k] == v for k, v in where.items())) if where else text("1=1")
        return (await self.conn.execute(select(func.count()).select_from(tbl).where(cond))).scalar_one()


@functools.cache
def _notify_stmt(n: int) -> Any:
    return text("SELECT " + ", ".join(f"pg_notify(:c{i}, '')" for i in range(n)))


class Store:
    """Owns the engine; hands out transactions and read-only sessions."""

    def __init__(self, engine: AsyncEngine, notifier: Notifier | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.notifier = notifier or Notifier()
        # SQLite has one writer; serialising writers in-process avoids "database is locked"
        # and lost-update races that FOR UPDATE would prevent on PostgreSQL.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self._read_engine = (engine.execution_options(isolation_level="AUTOCOMMIT")
                             if self.dialect == "postgresql" else engine)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        lock = self._write_lock or contextlib.nullcontext()
        async with lock:
            async with self.engine.connect() as conn:
                if self.dialect == "sqlite":
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    await conn.begin()
                tx = Tx(conn, self.dialect)
                try:
                    yield tx
                    if tx.notify and self.dialect == "postgresql":
                        chans = sorted(tx.notify)  # one round trip for all channels
                        await conn.execute(_notify_stmt(len(chans)),
                                           {f"c{i}": ch for i, ch in enumerate(chans)})
                    await conn.commit()
                except BaseException:
                    await conn.rollback()
                    raise
        for ch in tx.notify:
            self.notifier.publish(ch)
        if tx.finished:
            m = metrics_api()
            for run, state, reason in tx.finished:
                m.run_finished(state)
                run_ended(run_id=run.id, traceparent=run.traceparent, agent=run.agent,
                          capability=run.capability, attempt=run.attempt,
                          created_at=run.created_at, state=state, reason=reason)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        """A read-only unit of work (no writer lock on SQLite).

        On PostgreSQL it runs in autocommit: under READ COMMITTED every statement takes its
        own snapshot anyway, so BEGIN/ROLLBACK only added two round trips per read.
        """
        async with self._read_engine.connect() as conn:
            yield Tx(conn, self.dialect)
            await conn.rollback()

    async def dispose(self) -> None:
        await self.engine.dispose()
