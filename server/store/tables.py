"""The schema (one for both dialects). Migrations in ``migrations/`` must match it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both dialects (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Autoincrement that works on both: SQLite only autoincrements INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

agents = Table(
    "agents",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
)

agent_versions = Table(
    "agent_versions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("agent_name", String(63), ForeignKey("agents.name"), nullable=False),
    Column("version", String(64), nullable=False),
    Column("image", String(512), nullable=False),
    Column("image_digest", String(200), nullable=False, default=""),
    Column("risk", Integer, nullable=False),
    Column("manifest", JSON, nullable=False),
    Column("deprecated", Boolean, nullable=False, default=False),
    Column("deprecation_reason", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    UniqueConstraint("agent_name", "version", name="uq_agent_versions_name_version"),
)

# Each version's capabilities (names and descriptions), copied from its manifest at
# registration, so ListAgents can filter by capability and search their text in SQL on both
# dialects (the manifest itself is a JSON document neither dialect indexes the same way).
agent_capabilities = Table(
    "agent_capabilities",
    metadata,
    Column("version_id", BigId, ForeignKey("agent_versions.id"), primary_key=True),
    Column("name", String(63), primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Index("ix_agent_capabilities_name", "name"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("agent_name", String(63), nullable=False),
    Column("version", String(64), nullable=False),
    Column("capability", String(63), nullable=False),
    Column("state", String(20), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("effective_risk", Integer, nullable=False),
    Column("risk_reasons", JSON, nullable=False),
    Column("submitter", String(200), nullable=False),
    Column("submitter_key_id", String(40), nullable=False),
    Column("idempotency_key", String(200), nullable=True),
    Column("request_hash", String(64), nullable=False),
    Column("input_json", Text, nullable=False),
    Column("network", Boolean, nullable=False),
    Column("secrets", JSON, nullable=False),
    Column("limits", JSON, nullable=False),
    Column("image", String(512), nullable=False),
    Column("entrypoint", JSON, nullable=True),
    Column("output_schema", JSON, nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=3),
    Column("last_seq", Integer, nullable=False, default=0),
    Column("traceparent", String(100), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    # Lease: which executor holds the run and until when (RUNNING only).
    Column("lease_owner", String(100), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    # Result.
    Column("output_json", Text, nullable=True),
    Column("error_code", String(200), nullable=False, default=""),
    Column("error_message", Text, nullable=False, default=""),
    Column("exit_code", Integer, nullable=True),
    Column("logs", LargeBinary, nullable=True),
    Column("logs_truncated", Boolean, nullable=False, default=False),
    Column("peak_memory_bytes", BigInteger, nullable=True),
    Column("duration_seconds", Float, nullable=True),
    Column("executor_id", String(100), nullable=True),
    # Usage measured by the sandbox (the last attempt's).
    Column("cpu_seconds", Float, nullable=True),
    Column("output_bytes", BigInteger, nullable=True),
    Column("log_bytes", BigInteger, nullable=True),
    # The workflow this run is a step of (none for a run submitted alone).
    Column("workflow_id", String(40), nullable=True),
    Column("workflow_step", String(63), nullable=True),
    # Digests (hex SHA-256, server/domain/digests.py): of the canonical input, of everything
    # that decides what the run does (what approvals are given for), of the output and logs.
    # (Server defaults: a row inserted behind the store, e.g. seeded, is valid, and unchained:
    # the verifier reports it.)
    Column("input_sha256", String(64), nullable=False, server_default=text("''")),
    Column("action_digest", String(64), nullable=False, server_default=text("''")),
    Column("output_sha256", String(64), nullable=False, server_default=text("''")),
    Column("logs_sha256", String(64), nullable=False, server_default=text("''")),
    # Head of the run's hash chain (its events and audit records, server/store/chain.py).
    Column("chain_seq", Integer, nullable=False, server_default="0"),
    Column("chain_head", String(64), nullable=False, server_default=text("''")),
    UniqueConstraint("submitter", "idempotency_key", name="uq_runs_submitter_idempotency_key"),
    Index("ix_runs_state_created", "state", "created_at"),
    Index("ix_runs_agent_created", "agent_name", "created_at"),
    Index("ix_runs_workflow_id", "workflow_id"),
    # Quotas: an owner's runs in flight, submitted today, ended today.
    Index("ix_runs_submitter_state", "submitter", "state"),
    Index("ix_runs_submitter_created", "submitter", "created_at"),
    Index("ix_runs_submitter_finished", "submitter", "finished_at"),
    # Analytics: the runs submitted in a range, with the columns they aggregate (PostgreSQL
    # reads the index alone).
    Index("ix_runs_created_usage", "created_at",
          postgresql_include=["state", "agent_name", "submitter", "cpu_seconds",
                              "duration_seconds", "peak_memory_bytes", "started_at"]),
)

run_events = Table(
    "run_events",
    metadata,
    # Global order for the outbox relay.
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(40), ForeignKey("runs.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("previous_state", String(20), nullable=False, default=""),
    Column("reason", Text, nullable=False, default=""),
    Column("attempt", Integer, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("agent_name", String(63), nullable=False),
    Column("version", String(64), nullable=False),
    Column("capability", String(63), nullable=False),
    Column("traceparent", String(100), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime, nullable=True),
    # Digests this change attests (input and action at submit, output and logs at an outcome).
    Column("attest", JSON, nullable=False, default=lambda: {}),
    # Position in the run's hash chain, the previous record's hash and this record's.
    Column("chain_seq", Integer, nullable=False, default=0),
    Column("prev_hash", String(64), nullable=False, default=""),
    Column("hash", String(64), nullable=False, default=""),
    UniqueConstraint("run_id", "seq", name="uq_run_events_run_id_seq"),
    Index(
        "ix_run_events_unpublished",
        "id",
        postgresql_where=Column("published_at").is_(None),
        sqlite_where=Column("published_at").is_(None),
    ),
)

approvals = Table(
    "approvals",
    metadata,
    Column("run_id", String(40), ForeignKey("runs.id"), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("required", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime, nullable=True),
    Column("version", Integer, nullable=False, default=0),  # bumped on every change (watch)
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_approvals_status_expires", "status", "expires_at"),
    Index("ix_approvals_updated", "updated_at"),
)

approval_decisions = Table(
    "approval_decisions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(40), ForeignKey("approvals.run_id"), nullable=False),
    Column("approver", String(200), nullable=False),
    Column("approver_key_id", String(40), nullable=False),
    Column("verdict", String(10), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("decided_at", UTCDateTime, nullable=False),
    # The action digest of the run this decision was given for.
    Column("action_digest", String(64), nullable=False, default=""),
    # The database itself refuses a second decision by the same approver.
    UniqueConstraint("run_id", "approver", name="uq_approval_decisions_run_id_approver"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("target", String(200), nullable=False),
    Column("details", JSON, nullable=False),
    # The hash chain this record is on ("run:<run id>" beside that run's events, else
    # "audit"), its position there, the previous record's hash and its own.
    Column("chain", String(60), nullable=False, default="audit"),
    Column("chain_seq", Integer, nullable=False, default=0),
    Column("prev_hash", String(64), nullable=False, default=""),
    Column("hash", String(64), nullable=False, default=""),
    Index("ix_audit_log_chain", "chain", "chain_seq"),
    Index("ix_audit_log_at", "at"),
)

# Heads of the chains that belong to no run (today only "audit"); a run's head is on its row.
chain_heads = Table(
    "chain_heads",
    metadata,
    Column("name", String(60), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

# One row per owner that submitted under a quota: the lock its submits take in turn (on
# PostgreSQL), so counting its runs and inserting the next one is never interleaved.
quota_owners = Table(
    "quota_owners",
    metadata,
    Column("owner", String(200), primary_key=True),
)

executors = Table(
    "executors",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("host", String(200), nullable=False),
    Column("runtime", String(40), nullable=False),
    Column("slots", Integer, nullable=False),
    Column("slots_in_use", Integer, nullable=False, default=0),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime, nullable=True),
)

workflows = Table(
    "workflows",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(63), nullable=False),
    Column("state", String(20), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("submitter", String(200), nullable=False),
    Column("submitter_key_id", String(40), nullable=False),
    Column("idempotency_key", String(200), nullable=True),
    Column("request_hash", String(64), nullable=False),
    Column("risk", Integer, nullable=False),
    Column("plan_digest", String(64), nullable=False),
    Column("traceparent", String(100), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("deadline_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False, default=0),  # bumped on every change (watch)
    Column("last_seq", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=3),  # of each step's run
    UniqueConstraint("submitter", "idempotency_key", name="uq_workflows_submitter_idempotency_key"),
    Index("ix_workflows_state_deadline", "state", "deadline_at"),
)

# The plan of each step (pinned at submit) and how it is going.
workflow_steps = Table(
    "workflow_steps",
    metadata,
    Column("workflow_id", String(40), ForeignKey("workflows.id"), primary_key=True),
    Column("name", String(63), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("gate", Boolean, nullable=False),
    Column("gate_approvals", Integer, nullable=False, default=0),
    Column("gate_expires_seconds", Float, nullable=False, default=3600.0),
    Column("description", Text, nullable=False, default=""),
    Column("depends_on", JSON, nullable=False),
    Column("on_failure", String(20), nullable=False),
    Column("agent_name", String(63), nullable=False, default=""),
    Column("version", String(64), nullable=False, default=""),
    Column("capability", String(63), nullable=False, default=""),
    Column("image", String(512), nullable=False, default=""),
    Column("entrypoint", JSON, nullable=True),
    Column("input_schema", JSON, nullable=True),
    Column("output_schema", JSON, nullable=True),
    Column("input_template", Text, nullable=False, default="null"),
    Column("limits", JSON, nullable=True),
    Column("network", Boolean, nullable=False, default=False),
    Column("secrets", JSON, nullable=False),
    Column("risk", Integer, nullable=False, default=0),
    Column("risk_reasons", JSON, nullable=False),
    Column("run_id", String(40), nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
)

# The plan's approval (step "") and each gate's, when it opens.
workflow_approvals = Table(
    "workflow_approvals",
    metadata,
    Column("workflow_id", String(40), ForeignKey("workflows.id"), primary_key=True),
    Column("step", String(63), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("required", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_workflow_approvals_status_expires", "status", "expires_at"),
)

workflow_decisions = Table(
    "workflow_decisions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("workflow_id", String(40), ForeignKey("workflows.id"), nullable=False),
    Column("step", String(63), nullable=False),
    Column("approver", String(200), nullable=False),
    Column("approver_key_id", String(40), nullable=False),
    Column("verdict", String(10), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("decided_at", UTCDateTime, nullable=False),
    # One decision per approver per approval, held by the database.
    UniqueConstraint("workflow_id", "step", "approver",
                     name="uq_workflow_decisions_workflow_id_step_approver"),
)

# Workflow state changes: their history and an outbox beside run_events.
workflow_events = Table(
    "workflow_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("workflow_id", String(40), ForeignKey("workflows.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("previous_state", String(20), nullable=False, default=""),
    Column("reason", Text, nullable=False, default=""),
    Column("actor", String(200), nullable=False),
    Column("name", String(63), nullable=False),
    Column("traceparent", String(100), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime, nullable=True),
    UniqueConstraint("workflow_id", "seq", name="uq_workflow_events_workflow_id_seq"),
    Index(
        "ix_workflow_events_unpublished",
        "id",
        postgresql_where=Column("published_at").is_(None),
        sqlite_where=Column("published_at").is_(None),
    ),
)
