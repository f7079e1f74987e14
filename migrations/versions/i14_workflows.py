"""workflows: DAGs of runs with their planned steps, approvals, decisions and events; runs link to them

Revision ID: i14_workflows
Revises: i16_usage
Create Date: 2026-12-03 20:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "i14_workflows"
down_revision: str | None = "i16_usage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("workflow_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("workflow_step", sa.String(length=63), nullable=True))
        batch_op.create_index("ix_runs_workflow_id", ["workflow_id"], unique=False)
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("submitter", sa.String(length=200), nullable=False),
        sa.Column("submitter_key_id", sa.String(length=40), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("risk", sa.Integer(), nullable=False),
        sa.Column("plan_digest", sa.String(length=64), nullable=False),
        sa.Column("traceparent", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
        sa.UniqueConstraint("submitter", "idempotency_key",
                            name="uq_workflows_submitter_idempotency_key"),
    )
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.create_index("ix_workflows_state_deadline", ["state", "deadline_at"], unique=False)
    op.create_table(
        "workflow_steps",
        sa.Column("workflow_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("gate", sa.Boolean(), nullable=False),
        sa.Column("gate_approvals", sa.Integer(), nullable=False),
        sa.Column("gate_expires_seconds", sa.Float(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("depends_on", sa.JSON(), nullable=False),
        sa.Column("on_failure", sa.String(length=20), nullable=False),
        sa.Column("agent_name", sa.String(length=63), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("capability", sa.String(length=63), nullable=False),
        sa.Column("image", sa.String(length=512), nullable=False),
        sa.Column("entrypoint", sa.JSON(), nullable=True),
        sa.Column("input_schema", sa.JSON(), nullable=True),
        sa.Column("output_schema", sa.JSON(), nullable=True),
        sa.Column("input_template", sa.Text(), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=True),
        sa.Column("network", sa.Boolean(), nullable=False),
        sa.Column("secrets", sa.JSON(), nullable=False),
        sa.Column("risk", sa.Integer(), nullable=False),
        sa.Column("risk_reasons", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["workflow_id"], ["workflows.id"],
                                name=op.f("fk_workflow_steps_workflow_id_workflows")),
        sa.PrimaryKeyConstraint("workflow_id", "name", name=op.f("pk_workflow_steps")),
    )
    op.create_table(
        "workflow_approvals",
        sa.Column("workflow_id", sa.String(length=40), nullable=False),
        sa.Column("step", sa.String(length=63), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workflow_id"], ["workflows.id"],
                                name=op.f("fk_workflow_approvals_workflow_id_workflows")),
        sa.PrimaryKeyConstraint("workflow_id", "step", name=op.f("pk_workflow_approvals")),
    )
    with op.batch_alter_table("workflow_approvals", schema=None) as batch_op:
        batch_op.create_index("ix_workflow_approvals_status_expires", ["status", "expires_at"],
                              unique=False)
    op.create_table(
        "workflow_decisions",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workflow_id", sa.String(length=40), nullable=False),
        sa.Column("step", sa.String(length=63), nullable=False),
        sa.Column("approver", sa.String(length=200), nullable=False),
        sa.Column("approver_key_id", sa.String(length=40), nullable=False),
        sa.Column("verdict", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workflow_id"], ["workflows.id"],
                                name=op.f("fk_workflow_decisions_workflow_id_workflows")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_decisions")),
        sa.UniqueConstraint("workflow_id", "step", "approver",
                            name="uq_workflow_decisions_workflow_id_step_approver"),
    )
    op.create_table(
        "workflow_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workflow_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("previous_state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("traceparent", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["workflow_id"], ["workflows.id"],
                                name=op.f("fk_workflow_events_workflow_id_workflows")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_events")),
        sa.UniqueConstraint("workflow_id", "seq", name="uq_workflow_events_workflow_id_seq"),
    )
    with op.batch_alter_table("workflow_events", schema=None) as batch_op:
        batch_op.create_index("ix_workflow_events_unpublished", ["id"], unique=False,
                              postgresql_where=sa.text("published_at IS NULL"),
                              sqlite_where=sa.text("published_at IS NULL"))


def downgrade() -> None:
    with op.batch_alter_table("workflow_events", schema=None) as batch_op:
        batch_op.drop_index("ix_workflow_events_unpublished",
                            postgresql_where=sa.text("published_at IS NULL"),
                            sqlite_where=sa.text("published_at IS NULL"))
    op.drop_table("workflow_events")
    op.drop_table("workflow_decisions")
    with op.batch_alter_table("workflow_approvals", schema=None) as batch_op:
        batch_op.drop_index("ix_workflow_approvals_status_expires")
    op.drop_table("workflow_approvals")
    op.drop_table("workflow_steps")
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_index("ix_workflows_state_deadline")
    op.drop_table("workflows")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_workflow_id")
        batch_op.drop_column("workflow_step")
        batch_op.drop_column("workflow_id")
