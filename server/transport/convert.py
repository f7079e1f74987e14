"""Domain records <-> protobuf messages. The only module that knows both shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

from google.protobuf.timestamp_pb2 import Timestamp

from agents.limits import Limits
from agents.manifest import LimitsSpec, Risk
from airlock.v1 import admin_service_pb2 as admin_pb
from airlock.v1 import agent_pb2, approval_pb2, run_pb2
from airlock.v1 import audit_service_pb2 as audit_msgs
from airlock.v1 import usage_service_pb2 as us
from server.domain.analytics import Analytics, GroupStats, Percentiles
from server.domain.errors import InvalidArgument
from server.domain.models import (
    Agent,
    AgentVersion,
    ApiKey,
    AuditEntry,
    ExecutorInfo,
    Run,
    RunEvent,
)
from server.domain.principal import Role
from server.domain.quotas import OwnerUsage, Quota
from server.domain.states import RunState
from server.services.approvals import ApprovalView
from server.services.audit import Verification
from server.wire.timestamps import ts

INPUT_PREVIEW_CHARS = 4096

_STATUS = {"pending": 1, "approved": 2, "rejected": 3, "expired": 4, "cancelled": 5}
_STATUS_NAMES = {v: k for k, v in _STATUS.items()}
_ROLES = {Role.ADMIN: 1, Role.SUBMITTER: 2, Role.APPROVER: 3, Role.VIEWER: 4, Role.EXECUTOR: 5}
_ROLE_OF = {v: k for k, v in _ROLES.items()}
_STATES = {s: getattr(run_pb2, f"RUN_STATE_{s.value}") for s in RunState}
_STATE_OF = {v: k for k, v in _STATES.items()}


def risk_pb(r: Risk) -> agent_pb2.Risk:
    return cast(agent_pb2.Risk, int(r))


def state_pb(s: RunState | None) -> run_pb2.RunState:
    return cast(run_pb2.RunState, _STATES[s] if s is not None else run_pb2.RUN_STATE_UNSPECIFIED)


def state_from_pb(field: str, value: int) -> RunState:
    if value not in _STATE_OF:
        raise InvalidArgument(field, f"unknown run state {value}")
    return _STATE_OF[value]


def status_from_pb(field: str, value: int) -> str:
    if value not in _STATUS_NAMES:
        raise InvalidArgument(field, f"unknown approval status {value}")
    return _STATUS_NAMES[value]


def role_pb(r: Role) -> admin_pb.Role:
    return cast(admin_pb.Role, _ROLES[r])


def role_from_pb(field: str, value: int) -> Role:
    if value not in _ROLE_OF:
        raise InvalidArgument(field, "is required (admin, submitter, approver, viewer or executor)")
    return _ROLE_OF[value]


def limits_pb(lim: Limits | LimitsSpec) -> agent_pb2.Limits:
    d = {k: v for k, v in (lim.as_dict() if isinstance(lim, Limits) else lim.model_dump()).items()
         if v is not None}
    return agent_pb2.Limits(**d)  # type: ignore[arg-type]  # ints and floats by field


def limits_from_pb(msg: agent_pb2.Limits) -> dict[str, float]:
    """Only the fields the caller set (zero means unset)."""
    out: dict[str, float] = {}
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        if value != 0:
            out[f.name] = value
    return out


def version_pb(v: AgentVersion) -> agent_pb2.AgentVersion:
    m = v.manifest
    return agent_pb2.AgentVersion(
        agent=v.agent, version=v.version, description=m.description, image=v.image,
        image_digest=v.image_digest, entrypoint=list(m.entrypoint or ()), risk=risk_pb(v.risk),
        network=m.permissions.network, secrets=list(m.permissions.secrets),
        default_limits=limits_pb(m.limits.default), max_limits=limits_pb(m.limits.max),
        capabilities=[agent_pb2.Capability(
            name=c.name, description=c.description,
            input_schema_json=json.dumps(c.input_schema), output_schema_json=json.dumps(c.output_schema))
            for c in m.capabilities],
        deprecated=v.deprecated, deprecation_reason=v.deprecation_reason,
        create_time=ts(v.created_at), created_by=v.created_by,
        manifest_json=json.dumps(m.to_json()),
    )


def agent_pb(a: Agent) -> agent_pb2.Agent:
    return agent_pb2.Agent(name=a.name, description=a.description, latest_version=a.latest_version,
                           versions=list(a.versions), create_time=ts(a.created_at))


def run_pb(r: Run, *, input_preview: int | None = None) -> run_pb2.Run:
    text = r.input_json if input_preview is None else r.input_json[:input_preview]
    return run_pb2.Run(
        id=r.id, agent=r.agent, version=r.version, capability=r.capability, state=state_pb(r.state),
        reason=r.reason, effective_risk=risk_pb(r.effective_risk), risk_reasons=list(r.risk_reasons),
        submitter=r.submitter, idempotency_key=r.idempotency_key or "", network=r.network,
        secrets=list(r.secrets), limits=limits_pb(r.limits), attempt=r.attempt, input_json=text,
        create_time=ts(r.created_at), update_time=ts(r.updated_at), start_time=ts(r.started_at),
        finish_time=ts(r.finished_at), executor_id=r.executor_id or "",
        peak_memory_bytes=r.peak_memory_bytes or 0, duration_seconds=r.duration_seconds or 0.0,
        exit_code=r.exit_code or 0, last_sequence=r.last_seq, cancel_requested=r.cancel_requested,
        cpu_seconds=r.cpu_seconds or 0.0, output_bytes=r.output_bytes or 0,
        log_bytes=r.log_bytes or 0,
        workflow_id=r.workflow_id or "", workflow_step=r.workflow_step or "",
        input_sha256=r.input_sha256, output_sha256=r.output_sha256, logs_sha256=r.logs_sha256,
        action_digest=r.action_digest, chain_sequence=r.chain_seq, chain_head=r.chain_head,
    )


def event_pb(e: RunEvent) -> run_pb2.RunEvent:
    return run_pb2.RunEvent(
        id=e.event_id, run_id=e.run_id, sequence=e.seq, state=state_pb(e.state),
        previous_state=state_pb(e.previous_state), reason=e.reason, attempt=e.attempt,
        actor=e.actor, create_time=ts(e.created_at), agent=e.agent, version=e.version,
        capability=e.capability, chain_sequence=e.chain_seq, prev_hash=e.prev_hash, hash=e.hash,
    )


def approval_pb(v: ApprovalView) -> approval_pb2.Approval:
    a, r = v.approval, v.run
    return approval_pb2.Approval(
        run_id=a.run_id, status=cast(approval_pb2.ApprovalStatus, _STATUS[a.status]), risk=risk_pb(r.effective_risk),
        risk_reasons=list(r.risk_reasons), required=a.required, approvals=a.approvals,
        decisions=[approval_pb2.Decision(
            approver=d.approver, verdict=approval_pb2.VERDICT_APPROVE if d.verdict == "approve"
            else approval_pb2.VERDICT_REJECT, reason=d.reason, decide_time=ts(d.decided_at),
            action_digest=d.action_digest)
            for d in a.decisions],
        create_time=ts(a.created_at), expire_time=ts(a.expires_at),
        run=run_pb(r, input_preview=INPUT_PREVIEW_CHARS),
        input_truncated=len(r.input_json) > INPUT_PREVIEW_CHARS, action_digest=r.action_digest,
    )


def key_pb(k: ApiKey) -> admin_pb.ApiKey:
    return admin_pb.ApiKey(id=k.id, owner=k.owner, role=role_pb(k.role), create_time=ts(k.created_at),
                           revoke_time=ts(k.revoked_at))


def executor_pb(e: ExecutorInfo, state: str) -> admin_pb.Executor:
    """``state``: active, lost or stopped (server.services.admin.ExecutorState)."""
    active = state == "active"
    return admin_pb.Executor(id=e.id, host=e.host, runtime=e.runtime, slots=e.slots,
                             slots_in_use=e.slots_in_use if active else 0,
                             start_time=ts(e.started_at), heartbeat_time=ts(e.heartbeat_at),
                             healthy=active, stop_time=ts(e.stopped_at),
                             state=admin_pb.ExecutorState.Value(f"EXECUTOR_STATE_{state.upper()}"))


def audit_pb(e: AuditEntry) -> audit_msgs.AuditRecord:
    return audit_msgs.AuditRecord(
        id=e.id, time=ts(e.at), actor=e.actor, action=e.action, target=e.target,
        details_json=json_text(e.details), chain=e.chain, chain_sequence=e.chain_seq,
        prev_hash=e.prev_hash, hash=e.hash)


def verification_pb(v: Verification) -> audit_msgs.VerifyAuditTrailResponse:
    out = audit_msgs.VerifyAuditTrailResponse(
        ok=v.problem is None, runs_checked=v.runs, records_checked=v.records,
        chain_digest=v.digest, verify_time=ts(v.at))
    if v.problem is not None:
        out.problem.CopyFrom(audit_msgs.AuditProblem(record=v.problem.record,
                                                   run_id=v.problem.run_id,
                                                   problem=v.problem.problem))
    return out


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def owner_usage_pb(u: OwnerUsage, q: Quota) -> us.OwnerUsage:
    defaults = Limits()
    ceilings = {n: type(getattr(defaults, n))(v) for n, v in q.max_limits}  # int fields stay int
    quota = us.OwnerQuota(max_limits=agent_pb2.Limits(**ceilings))
    if q.runs_in_flight is not None:
        quota.runs_in_flight = q.runs_in_flight
    if q.runs_per_day is not None:
        quota.runs_per_day = q.runs_per_day
    if q.cpu_seconds_per_day is not None:
        quota.cpu_seconds_per_day = q.cpu_seconds_per_day
    return us.OwnerUsage(owner=u.owner, runs_in_flight=u.runs_in_flight, runs_today=u.runs_today,
                         cpu_seconds_today=u.cpu_seconds_today, quota=quota)


def percentiles_pb(p: Percentiles) -> us.Percentiles:
    return us.Percentiles(**{k: v for k, v in (("p50", p.p50), ("p90", p.p90), ("p95", p.p95),
                                               ("p99", p.p99)) if v is not None})


def group_usage_pb(g: GroupStats) -> us.GroupUsage:
    return us.GroupUsage(key=g.key, runs=g.runs, cpu_seconds=g.cpu_seconds,
                         wall_seconds=g.wall_seconds, peak_memory_max_bytes=g.peak_memory_max or 0,
                         peak_memory_avg_bytes=g.peak_memory_avg or 0.0,
                         duration=percentiles_pb(g.duration))


def analytics_pb(a: Analytics) -> us.GetAnalyticsResponse:
    return us.GetAnalyticsResponse(
        start_time=ts(a.start), end_time=ts(a.end), bucket_seconds=a.bucket_seconds,
        total_runs=a.total,
        by_state=[us.StateCount(state=state_pb(RunState(s)), runs=n)
                  for s, n in sorted(a.by_state.items())],
        duration=percentiles_pb(a.duration), queue_wait=percentiles_pb(a.queue_wait),
        by_agent=[group_usage_pb(g) for g in a.by_agent],
        by_owner=[group_usage_pb(g) for g in a.by_owner],
        series=[us.SeriesPoint(start_time=ts(p.start), state=state_pb(RunState(p.state)),
                               runs=p.runs) for p in a.series])


def time_from_pb(field: str, stamp: Timestamp) -> datetime:
    """A request's timestamp as an aware UTC datetime; INVALID_ARGUMENT naming ``field`` when
    it is outside what a timestamp may hold (years 1 to 9999, nanos below a second)."""
    try:
        return stamp.ToDatetime(UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "is not a valid timestamp (years 1 to 9999)") from None
