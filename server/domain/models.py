"""Plain, frozen records the services hand around (no ORM objects leave the store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from agents.limits import Limits
from agents.manifest import Manifest, Risk
from server.domain.principal import Role
from server.domain.states import RunState

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_token: str = ""


@dataclass(frozen=True, slots=True)
class AgentVersion:
    agent: str
    version: str
    image: str
    image_digest: str
    risk: Risk
    manifest: Manifest
    deprecated: bool
    deprecation_reason: str
    created_at: datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    description: str
    created_at: datetime
    versions: tuple[str, ...]  # oldest first
    latest_version: str  # newest non-deprecated, "" if none


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    agent: str
    version: str
    capability: str
    state: RunState
    reason: str
    effective_risk: Risk
    risk_reasons: tuple[str, ...]
    submitter: str
    submitter_key_id: str
    idempotency_key: str | None
    request_hash: str
    input_json: str
    network: bool
    secrets: tuple[str, ...]
    limits: Limits
    image: str
    entrypoint: tuple[str, ...] | None
    output_schema: dict[str, Any]
    attempt: int
    max_attempts: int
    last_seq: int
    traceparent: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    lease_owner: str | None
    lease_expires_at: datetime | None
    executor_id: str | None
    exit_code: int | None
    peak_memory_bytes: int | None
    duration_seconds: float | None
    # Usage the sandbox measured (None until an attempt recorded it).
    cpu_seconds: float | None = None
    output_bytes: int | None = None
    log_bytes: int | None = None
    workflow_id: str | None = None  # the workflow this run is a step of
    workflow_step: str | None = None
    # Digests (hex SHA-256, ``server.domain.digests``) and the head of the run's hash chain.
    input_sha256: str = ""
    action_digest: str = ""
    output_sha256: str = ""
    logs_sha256: str = ""
    chain_seq: int = 0
    chain_head: str = ""


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run as submitted, before it is stored (attempt 0, sequence 1, not cancelled)."""

    id: str
    agent: str
    version: str
    capability: str
    state: RunState  # QUEUED or PENDING_APPROVAL
    reason: str
    effective_risk: Risk
    risk_reasons: tuple[str, ...]
    submitter: str
    submitter_key_id: str
    idempotency_key: str | None
    request_hash: str
    input_json: str
    network: bool
    secrets: tuple[str, ...]
    limits: Limits
    image: str
    entrypoint: tuple[str, ...] | None
    output_schema: dict[str, Any]
    max_attempts: int
    traceparent: str
    created_at: datetime
    workflow_id: str | None = None
    workflow_step: str | None = None
    input_sha256: str = ""  # both filled by the store (RunRepository.insert)
    action_digest: str = ""


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt left on its run: the output or error, logs and measurements.

    The last recorded attempt's result is the run's (``RunResult``).
    """

    output_json: str | None = None
    error_code: str = ""
    error_message: str = ""
    exit_code: int | None = None
    logs: bytes = b""
    logs_truncated: bool = False
    peak_memory_bytes: int | None = None
    duration_seconds: float | None = None
    cpu_seconds: float | None = None
    output_bytes: int | None = None
    log_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    run: Run
    output_json: str | None
    error_code: str
    error_message: str
    logs: bytes
    logs_truncated: bool


@dataclass(frozen=True, slots=True)
class RunEvent:
    id: int  # global outbox order
    run_id: str
    seq: int
    state: RunState
    previous_state: RunState | None
    reason: str
    attempt: int
    actor: str
    agent: str
    version: str
    capability: str
    traceparent: str
    created_at: datetime
    published_at: datetime | None = None
    # Digests this change attests; the record's place in its run's hash chain.
    attest: dict[str, str] = field(default_factory=dict)
    chain_seq: int = 0
    prev_hash: str = ""
    hash: str = ""

    @property
    def event_id(self) -> str:
        """Stable id, also the NATS message id used for de-duplication."""
        return f"{self.run_id}.{self.seq}"


@dataclass(frozen=True, slots=True)
class Decision:
    approver: str
    verdict: str  # "approve" | "reject"
    reason: str
    decided_at: datetime
    action_digest: str = ""  # of the run it was given for
    id: int = 0


@dataclass(frozen=True, slots=True)
class Approval:
    run_id: str
    status: str  # pending | approved | rejected | expired | cancelled
    required: int
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None
    version: int
    updated_at: datetime
    decisions: tuple[Decision, ...]

    @property
    def approvals(self) -> int:
        return sum(1 for d in self.decisions if d.verdict == "approve")


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    owner: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log: who did what to which target, when, with details."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    chain: str = "audit"  # "run:<run id>" or "audit"
    chain_seq: int = 0
    prev_hash: str = ""
    hash: str = ""


@dataclass(frozen=True, slots=True)
class ExecutorInfo:
    id: str
    host: str
    runtime: str
    slots: int
    slots_in_use: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
